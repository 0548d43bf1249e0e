//! The reverse proxy and load balancer, on the engine: HTTP/1.1 (keep-alive, pipelining,
//! streamed bodies, upgrades) or raw TCP, over a shared [`pool::Pool`] of backends with active
//! and passive health checks, and an admin API on a second listener.
//!
//! # One HTTP exchange
//!
//! ```text
//! client bytes ─► head parsed ─► backend chosen (strategy, healthy, not draining)
//!      │                            └─► idle keep-alive connection, or a new one
//!      ├─ head rewritten (hop-by-hop out, X-Forwarded-*, X-Request-Id) and sent
//!      ├─ body streamed as it arrives (Content-Length or chunked), paused while the backend
//!      │  connection's output is above the high-water mark
//! backend bytes ─► response head rewritten ─► body streamed back, paused the same way
//!      └─ done: backend connection back to this loop's idle list, next pipelined request
//! ```
//!
//! A backend connection that fails before any response byte is retried on another backend if
//! the request is idempotent (or the connection never opened) and fits the retry budget
//! (≤ 20 % of requests); otherwise the client gets 502. No backend up: 503. No answer within the
//! response timeout: 504. Every error body is JSON.
//!
//! Each loop keeps its own connections and idle lists; the pool (membership, health,
//! counters, strategy) is shared. Health checks and the periodic `[METRIC]` lines run on loop 0.

pub mod admin;
pub mod headers;
pub mod pool;
pub mod strategy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{CloseReason, ConnId, ConnMap, Context, Handler, TimerId};
use log::{info, warn};

use pool::{Backend, Pool};
use shared::http1::{self, BodyKind, BodyReader, Head};

/// What the proxy balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 requests.
    Http,
    /// Whole TCP connections (e.g. frame-protocol clients), tunnelled byte for byte.
    Tcp,
}

/// Active health checks.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Between two checks of a backend.
    pub interval: Duration,
    /// A check not answered within this fails.
    pub timeout: Duration,
    /// `GET` this path (HTTP mode; TCP mode checks that a connection opens).
    pub path: String,
}

/// Proxy settings (the engine's are separate).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// HTTP or TCP.
    pub mode: Mode,
    /// Largest request or response head.
    pub max_head: usize,
    /// Largest request body (over it: 413).
    pub max_body: u64,
    /// A backend connection not open within this counts as failed.
    pub connect_timeout: Duration,
    /// A backend that sends nothing for this long after the request: 504.
    pub response_timeout: Duration,
    /// A request (head and body) must be whole this long after its first byte (else 408).
    pub client_timeout: Duration,
    /// Idle keep-alive connections (client and backend) close after this.
    pub idle_timeout: Duration,
    /// Idle connections kept per backend and loop; more are closed as they come back.
    pub idle_per_backend: usize,
    /// Health checks.
    pub check: CheckConfig,
    /// Period of the `[METRIC]` log lines (none: off).
    pub metrics_interval: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: Mode::Http,
            max_head: 8192,
            max_body: 1 << 30,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(30),
            client_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            idle_per_backend: 512,
            check: CheckConfig {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                path: "/health".into(),
            },
            metrics_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Output queued on a connection above which the connection feeding it stops being read.
const HIGH_WATER: usize = 256 * 1024;
/// Request bytes kept for a retry; a longer request cannot be retried.
const REPLAY_MAX: usize = 64 * 1024;
/// Pipelined request bytes buffered behind the one being served before reading pauses.
const PIPELINE_MAX: usize = 64 * 1024;
/// Response body bytes quoted in the access log.
const LOG_BODY: usize = 200;

/// One HTTP request on its way.
#[derive(Debug)]
struct Exchange {
    head: Head,
    /// The rewritten head and as much of the body as fits in [`REPLAY_MAX`], for a retry.
    replay: Option<Vec<u8>>,
    req: BodyReader,
    up: Option<ConnId>,
    backend: Option<Arc<Backend>>,
    tried: Vec<SocketAddr>,
    upgrade: bool,
    keep_alive: bool,
    request_id: String,
    started: Instant,
    resp: Option<Resp>,
    log_body: Vec<u8>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    body: BodyReader,
    dechunk: bool,
    /// The client connection closes after this response.
    close_client: bool,
    /// The backend connection cannot carry another request.
    close_backend: bool,
}

#[derive(Debug)]
enum ClientState {
    Idle,
    Busy(Box<Exchange>),
    Tunnel(ConnId),
    Done,
}

/// What a client's timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientTimer {
    /// Between requests: close quietly.
    Idle,
    /// A request under way must be whole by then: 408.
    Deadline,
}

#[derive(Debug)]
struct Client {
    peer: SocketAddr,
    buf: Vec<u8>,
    state: ClientState,
    timer: Option<(TimerId, ClientTimer)>,
    /// TCP mode: backends tried for this connection.
    tried: Vec<SocketAddr>,
}

#[derive(Debug)]
struct Upstream {
    backend: Arc<Backend>,
    client: Option<ConnId>,
    connected: bool,
    got_bytes: bool,
    tunnel: bool,
    timer: Option<TimerId>,
    /// Counted in the backend's active requests (a TCP tunnel, until it closes).
    counted: bool,
}

#[derive(Debug)]
struct Check {
    backend: Arc<Backend>,
    timer: Option<TimerId>,
}

#[derive(Debug)]
enum Conn {
    Client(Client),
    Upstream(Upstream),
    Admin,
    Check(Check),
}

/// Timer tokens: the kind in the top byte, the connection's [`ConnId::to_u64`] below. That
/// leaves 24 bits of slab key, far more connections than the open-file limit allows.
const KIND_SHIFT: u32 = 56;
const CONN_MASK: u64 = (1 << KIND_SHIFT) - 1;
const T_CLIENT: u64 = 1;
const T_UPSTREAM: u64 = 2;
const T_CHECK: u64 = 3;
const T_HEALTH_TICK: u64 = 4;
const T_METRICS_TICK: u64 = 5;

fn token(kind: u64, conn: ConnId) -> u64 {
    (kind << KIND_SHIFT) | (conn.to_u64() & CONN_MASK)
}

/// The handler of one proxy loop.
#[derive(Debug)]
pub struct Proxy {
    cfg: Arc<ProxyConfig>,
    pool: Arc<Pool>,
    conns: ConnMap<Conn>,
    idle: HashMap<SocketAddr, Vec<ConnId>>,
    checking: HashMap<SocketAddr, ConnId>,
    is_first_loop: bool,
    ids: headers::RequestIds,
}

impl Proxy {
    /// A loop's handler over the shared `pool`.
    pub fn new(cfg: Arc<ProxyConfig>, pool: Arc<Pool>) -> Self {
        Proxy {
            cfg,
            pool,
            conns: ConnMap::default(),
            idle: HashMap::new(),
            checking: HashMap::new(),
            is_first_loop: false,
            ids: headers::RequestIds::new(),
        }
    }

    fn arm(
        &mut self,
        ctx: &mut Context<'_, ()>,
        kind: u64,
        conn: ConnId,
        after: Duration,
    ) -> TimerId {
        ctx.set_timer(after, token(kind, conn))
    }

    /// Sets the client's timer for its state: the idle timeout between requests; a deadline
    /// `client_timeout` after the first byte of a request that is not whole yet — not moved by
    /// later bytes, so a client that trickles bytes (slowloris, slow POST) still runs out of
    /// time; none while the backend has the whole request.
    fn arm_client(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        let Some(Conn::Client(c)) = self.conns.get(conn) else {
            return;
        };
        let want = match &c.state {
            ClientState::Idle if c.buf.is_empty() => Some(ClientTimer::Idle),
            ClientState::Idle => Some(ClientTimer::Deadline),
            ClientState::Busy(ex) if !ex.req.is_done() => Some(ClientTimer::Deadline),
            _ => None,
        };
        let current = c.timer;
        if want == Some(ClientTimer::Deadline)
            && matches!(current, Some((_, ClientTimer::Deadline)))
        {
            return;
        }
        if let Some((t, _)) = current {
            ctx.cancel_timer(t);
        }
        let timer = want.map(|kind| {
            let after = match kind {
                ClientTimer::Idle => self.cfg.idle_timeout,
                ClientTimer::Deadline => self.cfg.client_timeout,
            };
            (self.arm(ctx, T_CLIENT, conn, after), kind)
        });
        if let Some(Conn::Client(c)) = self.conns.get_mut(conn) {
            c.timer = timer;
        }
    }

    fn arm_upstream(&mut self, ctx: &mut Context<'_, ()>, up: ConnId) {
        let Some(Conn::Upstream(u)) = self.conns.get(up) else {
            return;
        };
        let after = if u.connected {
            self.cfg.response_timeout
        } else {
            self.cfg.connect_timeout
        };
        if let Some(t) = u.timer {
            ctx.cancel_timer(t);
        }
        let t = self.arm(ctx, T_UPSTREAM, up, after);
        if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
            u.timer = Some(t);
        }
    }

    fn exchange(&mut self, client: ConnId) -> Option<&mut Exchange> {
        match self.conns.get_mut(client) {
            Some(Conn::Client(Client {
                state: ClientState::Busy(ex),
                ..
            })) => Some(ex),
            _ => None,
        }
    }

    // ---- clients -------------------------------------------------------------------------

    fn client_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) {
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return;
        };
        match c.state {
            ClientState::Tunnel(up) => {
                let _ = ctx.send(up, data);
                if ctx.queued(up) > HIGH_WATER {
                    ctx.pause_reading(conn);
                }
                return;
            }
            ClientState::Done => return,
            _ => c.buf.extend_from_slice(data),
        }
        self.pump(ctx, conn);
        self.arm_client(ctx, conn);
    }

    /// Moves the client's buffered bytes along: a new request's head, or the body of the one
    /// being sent.
    fn pump(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
                return;
            };
            match &mut c.state {
                ClientState::Done | ClientState::Tunnel(_) => return,
                ClientState::Idle => {
                    if c.buf.is_empty() {
                        return;
                    }
                    match http1::parse_request_head(&c.buf, self.cfg.max_head) {
                        Ok(None) => return,
                        Err(e) => {
                            let msg = e.to_string();
                            return self.refuse(ctx, conn, e.status(), &msg);
                        }
                        Ok(Some((head, n))) => {
                            c.buf.drain(..n);
                            if !self.begin(ctx, conn, head) {
                                return;
                            }
                        }
                    }
                }
                ClientState::Busy(ex) => {
                    if ex.req.is_done() {
                        // Waiting for the answer: what follows is the next request.
                        if c.buf.len() > PIPELINE_MAX {
                            ctx.pause_reading(conn);
                        }
                        return;
                    }
                    let Some(up) = ex.up else {
                        return;
                    };
                    if c.buf.is_empty() {
                        return;
                    }
                    match ex.req.advance(&c.buf, None) {
                        Err(e) => {
                            let msg = e.to_string();
                            let status = e.status();
                            self.abandon(ctx, conn);
                            return self.refuse(ctx, conn, status, &msg);
                        }
                        Ok(n) => {
                            let _ = ctx.send(up, &c.buf[..n]);
                            if let Some(r) = ex.replay.as_mut() {
                                if r.len() + n <= REPLAY_MAX {
                                    r.extend_from_slice(&c.buf[..n]);
                                } else {
                                    ex.replay = None;
                                }
                            }
                            c.buf.drain(..n);
                            if ctx.queued(up) > HIGH_WATER {
                                ctx.pause_reading(conn);
                                return;
                            }
                            if !ex.req.is_done() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A request head arrived: check it, choose a backend and send it. False when the client
    /// was answered already (and nothing more is to be read now).
    fn begin(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, head: Head) -> bool {
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return false;
        };
        let peer = c.peer;
        if matches!(head.body, BodyKind::Length(n) if n > self.cfg.max_body) {
            let msg = format!("request body over {} bytes", self.cfg.max_body);
            self.refuse_answering(ctx, conn, 413, &msg, head.method == "HEAD");
            return false;
        }
        let upgrade = head.has_token("connection", "upgrade") && head.header("upgrade").is_some();
        let request_id = self.ids.for_request(&head);
        let proto = if ctx.is_tls(conn) { "https" } else { "http" };
        let bytes = headers::request(&head, peer.ip(), proto, &request_id, upgrade);
        self.pool.count_request();
        let ex = Exchange {
            req: BodyReader::new(head.body, self.cfg.max_body),
            keep_alive: head.keep_alive() && !upgrade,
            head,
            replay: Some(bytes),
            up: None,
            backend: None,
            tried: Vec::new(),
            upgrade,
            request_id,
            started: Instant::now(),
            resp: None,
            log_body: Vec::new(),
        };
        c.state = ClientState::Busy(Box::new(ex));
        self.dispatch(ctx, conn)
    }

    /// Sends the exchange's request (the replay bytes) to a backend not tried yet.
    fn dispatch(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) -> bool {
        loop {
            let Some(Conn::Client(c)) = self.conns.get(conn) else {
                return false;
            };
            let ip = c.peer.ip();
            let ClientState::Busy(ex) = &c.state else {
                return false;
            };
            let Some(bytes) = ex.replay.clone() else {
                return self.fail(
                    ctx,
                    conn,
                    502,
                    "backend failed and the request is too long to retry",
                );
            };
            let chosen = self
                .pool
                .select(ip, |h| ex.head.header(h).map(str::to_string), &ex.tried);
            let Some(backend) = chosen else {
                return if ex.tried.is_empty() {
                    self.fail(ctx, conn, 503, "no healthy backend")
                } else {
                    self.fail(ctx, conn, 502, "no backend could answer")
                };
            };
            info!("Selected backend server {}", backend.addr);
            let reused = self.take_idle(ctx, backend.addr);
            let up = match reused {
                Some(up) => up,
                None => match ctx.connect(backend.addr) {
                    Ok(up) => up,
                    Err(e) => {
                        self.pool
                            .traffic_result(&backend, false, &format!("connect: {e}"));
                        if let Some(ex) = self.exchange(conn) {
                            ex.tried.push(backend.addr);
                        }
                        continue;
                    }
                },
            };
            let _ = ctx.send(up, &bytes);
            backend.begin();
            self.conns.insert(
                up,
                Conn::Upstream(Upstream {
                    backend: Arc::clone(&backend),
                    client: Some(conn),
                    connected: reused.is_some(),
                    got_bytes: false,
                    tunnel: false,
                    timer: None,
                    counted: false,
                }),
            );
            self.arm_upstream(ctx, up);
            if let Some(ex) = self.exchange(conn) {
                ex.tried.push(backend.addr);
                ex.up = Some(up);
                ex.backend = Some(backend);
            }
            return true;
        }
    }

    /// An open idle connection to `addr`, if this loop has one.
    fn take_idle(&mut self, ctx: &mut Context<'_, ()>, addr: SocketAddr) -> Option<ConnId> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(up) = list.pop() {
            if ctx.is_open(up) && matches!(self.conns.get(up), Some(Conn::Upstream(_))) {
                ctx.set_idle_timeout(up, None);
                return Some(up);
            }
        }
        None
    }

    /// Answers the client with an error made by the proxy, closing afterwards if the request
    /// could not be read to its end.
    fn fail(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, status: u16, msg: &str) -> bool {
        self.pool.count_failure();
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return false;
        };
        let (keep, peer) = match &c.state {
            ClientState::Busy(ex) => (ex.keep_alive && ex.req.is_done(), c.peer),
            _ => (false, c.peer),
        };
        let head_only = c.answering_head();
        send_error(ctx, conn, peer, status, msg, keep, head_only);
        if keep {
            c.state = ClientState::Idle;
            ctx.resume_reading(conn);
            self.pump(ctx, conn);
        } else {
            c.state = ClientState::Done;
            ctx.close(conn);
        }
        false
    }

    /// A request that cannot be framed: answer and close.
    fn refuse(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, status: u16, msg: &str) {
        let head_only = match self.conns.get(conn) {
            Some(Conn::Client(c)) => c.answering_head(),
            _ => return,
        };
        self.refuse_answering(ctx, conn, status, msg, head_only);
    }

    /// [`Proxy::refuse`], for a request known to be a HEAD (`head_only`: no body) or not.
    fn refuse_answering(
        &mut self,
        ctx: &mut Context<'_, ()>,
        conn: ConnId,
        status: u16,
        msg: &str,
        head_only: bool,
    ) {
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return;
        };
        c.state = ClientState::Done;
        c.buf.clear();
        send_error(ctx, conn, c.peer, status, msg, false, head_only);
        ctx.close(conn);
    }

    /// Drops the exchange's backend connection (the request will not complete).
    fn abandon(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        let Some(ex) = self.exchange(conn) else {
            return;
        };
        let up = ex.up.take();
        let backend = ex.backend.take();
        if let Some(up) = up {
            if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                u.client = None;
            }
            ctx.abort(up);
            if let Some(b) = backend {
                b.end(None);
            }
        }
    }

    // ---- backends ------------------------------------------------------------------------

    fn upstream_data(&mut self, ctx: &mut Context<'_, ()>, up: ConnId, data: &[u8]) -> usize {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return data.len();
        };
        let Some(client) = u.client else {
            // Bytes on an idle connection: the backend broke the protocol.
            ctx.close(up);
            return data.len();
        };
        if u.tunnel {
            let _ = ctx.send(client, data);
            if ctx.queued(client) > HIGH_WATER {
                ctx.pause_reading(up);
            }
            return data.len();
        }
        u.got_bytes = true;
        let backend = Arc::clone(&u.backend);
        self.arm_upstream(ctx, up);
        let mut at = 0;
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(client) else {
                ctx.abort(up);
                return data.len();
            };
            let minor = c.state_minor();
            let ClientState::Busy(ex) = &mut c.state else {
                ctx.abort(up);
                return data.len();
            };
            if ex.resp.is_none() {
                let parsed = http1::parse_response_head(&data[at..], 64 * 1024, &ex.head.method);
                let (head, n) = match parsed {
                    Ok(None) => return at,
                    Ok(Some(h)) => h,
                    Err(e) => {
                        warn!("bad response from {}: {e}", backend.addr);
                        self.pool.traffic_result(&backend, false, "bad response");
                        self.abandon(ctx, client);
                        self.fail(ctx, client, 502, "the backend sent a malformed response");
                        return data.len();
                    }
                };
                at += n;
                if head.status == 101 && ex.upgrade {
                    let _ = ctx.send(client, &headers::switching(&head));
                    let _ = ctx.send(client, &data[at..]);
                    access_log(c.peer, 101, b"");
                    backend.end(Some((101, ex.started.elapsed())));
                    c.state = ClientState::Tunnel(up);
                    if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                        u.tunnel = true;
                        if let Some(t) = u.timer.take() {
                            ctx.cancel_timer(t);
                        }
                    }
                    if let Some(Conn::Client(c)) = self.conns.get_mut(client) {
                        // Bytes the client sent after its handshake go through too.
                        let early = std::mem::take(&mut c.buf);
                        if let Some((t, _)) = c.timer.take() {
                            ctx.cancel_timer(t);
                        }
                        let _ = ctx.send(up, &early);
                    }
                    return data.len();
                }
                if (100..200).contains(&head.status) {
                    // 100 Continue and friends: pass on to an HTTP/1.1 client, then the real one.
                    if minor > 0 {
                        let _ = ctx.send(
                            client,
                            &headers::response(
                                &head,
                                headers::ResponseShape {
                                    client_minor: 1,
                                    close: false,
                                    dechunk: false,
                                },
                                &ex.request_id,
                            ),
                        );
                    }
                    continue;
                }
                let dechunk = minor == 0 && head.body == BodyKind::Chunked;
                let until_close = head.body == BodyKind::UntilClose;
                let close_client = !ex.keep_alive || until_close || dechunk;
                let shape = headers::ResponseShape {
                    client_minor: minor,
                    close: close_client,
                    dechunk,
                };
                let _ = ctx.send(client, &headers::response(&head, shape, &ex.request_id));
                self.pool.traffic_result(
                    &backend,
                    !backend_trouble(head.status),
                    "502/503/504 answer",
                );
                ex.resp = Some(Resp {
                    status: head.status,
                    body: BodyReader::new(head.body, u64::MAX),
                    dechunk,
                    close_client,
                    close_backend: !head.keep_alive() || until_close,
                });
            }
            let Some(resp) = ex.resp.as_mut() else {
                return data.len();
            };
            let rest = &data[at..];
            let taken = if resp.dechunk {
                let mut plain = Vec::new();
                let r = resp.body.advance(rest, Some(&mut plain));
                if let Ok(n) = r {
                    let _ = ctx.send(client, &plain);
                    keep_prefix(&mut ex.log_body, &plain);
                    Ok(n)
                } else {
                    r
                }
            } else {
                let r = resp.body.advance(rest, None);
                if let Ok(n) = r {
                    let _ = ctx.send(client, &rest[..n]);
                    keep_prefix(&mut ex.log_body, &rest[..n]);
                }
                r
            };
            let n = match taken {
                Ok(n) => n,
                Err(e) => {
                    warn!("bad response body from {}: {e}", backend.addr);
                    self.abandon(ctx, client);
                    ctx.abort(client);
                    return data.len();
                }
            };
            at += n;
            if resp.body.is_done() {
                if at < data.len() {
                    // More than the response: the connection cannot be trusted again.
                    resp.close_backend = true;
                }
                self.finish(ctx, client);
                return data.len();
            }
            if ctx.queued(client) > HIGH_WATER {
                ctx.pause_reading(up);
            }
            return at;
        }
    }

    /// The response is complete: count it, log it, recycle the backend connection, and go on
    /// with the client's next request.
    fn finish(&mut self, ctx: &mut Context<'_, ()>, client: ConnId) {
        let Some(Conn::Client(c)) = self.conns.get_mut(client) else {
            return;
        };
        let ClientState::Busy(ex) = std::mem::replace(&mut c.state, ClientState::Idle) else {
            return;
        };
        let peer = c.peer;
        let Some(resp) = ex.resp else {
            return;
        };
        if let Some(b) = &ex.backend {
            b.end(Some((resp.status, ex.started.elapsed())));
        }
        access_log(peer, resp.status, &ex.log_body);
        let request_done = ex.req.is_done();
        if let Some(up) = ex.up {
            let reusable = !resp.close_backend
                && request_done
                && ex.backend.as_ref().is_some_and(|b| !b.is_draining());
            if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                u.client = None;
                u.got_bytes = false;
                if let Some(t) = u.timer.take() {
                    ctx.cancel_timer(t);
                }
                let idle = self.idle.entry(u.backend.addr).or_default();
                if reusable && idle.len() < self.cfg.idle_per_backend {
                    idle.push(up);
                    ctx.set_idle_timeout(up, Some(self.cfg.idle_timeout));
                    ctx.resume_reading(up);
                } else {
                    ctx.close(up);
                }
            }
        }
        if resp.close_client || !request_done {
            if let Some(Conn::Client(c)) = self.conns.get_mut(client) {
                c.state = ClientState::Done;
            }
            ctx.close(client);
            return;
        }
        ctx.resume_reading(client);
        self.pump(ctx, client);
        self.arm_client(ctx, client);
    }

    fn upstream_closed(&mut self, ctx: &mut Context<'_, ()>, up: ConnId, reason: &CloseReason) {
        let Some(Conn::Upstream(u)) = self.conns.remove(up) else {
            return;
        };
        if let Some(t) = u.timer {
            ctx.cancel_timer(t);
        }
        if let Some(list) = self.idle.get_mut(&u.backend.addr) {
            list.retain(|c| *c != up);
        }
        let Some(client) = u.client else {
            return;
        };
        if u.tunnel {
            if u.counted {
                u.backend.end(None);
            }
            if self.cfg.mode == Mode::Tcp && !u.connected {
                // The backend never answered the connect: try another.
                self.pool.traffic_result(
                    &u.backend,
                    false,
                    &format!("connect failed ({reason:?})"),
                );
                return self.tcp_connect(ctx, client);
            }
            ctx.close(client);
            return;
        }
        let Some(ex) = self.exchange(client) else {
            return;
        };
        if ex.up != Some(up) {
            return;
        }
        ex.up = None;
        match &ex.resp {
            None => {
                // Nothing answered: retry where that is safe, else 502.
                let backend = ex.backend.take();
                let safe = ex.replay.is_some()
                    && (idempotent(&ex.head.method) || !u.connected)
                    && !ex.upgrade;
                if let Some(b) = &backend {
                    b.end(None);
                    let why = if u.connected {
                        format!("closed before answering ({reason:?})")
                    } else {
                        format!("connect failed ({reason:?})")
                    };
                    self.pool.traffic_result(b, false, &why);
                }
                if safe && self.pool.take_retry() {
                    self.dispatch(ctx, client);
                    // The rest of the body, if any, follows from the client's buffer.
                    self.pump(ctx, client);
                } else {
                    self.fail(
                        ctx,
                        client,
                        502,
                        "the backend closed the connection before answering",
                    );
                }
            }
            Some(r) if r.body.is_done() || r.body.is_until_close() => {
                self.finish(ctx, client);
            }
            Some(_) => {
                // Cut off mid-body: the client cannot be told otherwise.
                if let Some(b) = ex.backend.take() {
                    b.end(None);
                }
                if let Some(Conn::Client(c)) = self.conns.get_mut(client) {
                    c.state = ClientState::Done;
                }
                ctx.abort(client);
            }
        }
    }

    fn upstream_timeout(&mut self, ctx: &mut Context<'_, ()>, up: ConnId) {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return;
        };
        u.timer = None;
        let Some(client) = u.client else {
            return;
        };
        if u.tunnel {
            return;
        }
        if !u.connected {
            // Counted as a failed connect: the close below retries elsewhere.
            ctx.abort(up);
            return;
        }
        let backend = Arc::clone(&u.backend);
        let got = u.got_bytes;
        u.client = None;
        ctx.abort(up);
        let Some(ex) = self.exchange(client) else {
            return;
        };
        ex.up = None;
        if let Some(b) = ex.backend.take() {
            b.end(None);
        }
        let answering = got || ex.resp.is_some();
        self.pool
            .traffic_result(&backend, false, "response timeout");
        if answering {
            ctx.abort(client);
        } else {
            self.fail(ctx, client, 504, "the backend did not answer in time");
        }
    }

    // ---- TCP mode --------------------------------------------------------------------------

    fn tcp_accept(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, peer: SocketAddr) {
        self.conns.insert(
            conn,
            Conn::Client(Client {
                peer,
                buf: Vec::new(),
                state: ClientState::Done,
                timer: None,
                tried: Vec::new(),
            }),
        );
        self.pool.count_request();
        // Client bytes wait in the kernel until the backend is connected.
        ctx.pause_reading(conn);
        self.tcp_connect(ctx, conn);
    }

    /// Connects a TCP-mode client to a backend it has not tried yet.
    fn tcp_connect(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
                return;
            };
            let ip = c.peer.ip();
            let chosen = if c.tried.is_empty() || self.pool.take_retry() {
                self.pool.select(ip, |_| None, &c.tried)
            } else {
                None
            };
            let Some(backend) = chosen else {
                self.pool.count_failure();
                warn!("no backend for the TCP connection from {ip}");
                ctx.close(conn);
                return;
            };
            info!("Selected backend server {}", backend.addr);
            c.tried.push(backend.addr);
            match ctx.connect(backend.addr) {
                Ok(up) => {
                    backend.begin();
                    c.state = ClientState::Tunnel(up);
                    self.conns.insert(
                        up,
                        Conn::Upstream(Upstream {
                            backend,
                            client: Some(conn),
                            connected: false,
                            got_bytes: false,
                            tunnel: true,
                            timer: None,
                            counted: true,
                        }),
                    );
                    let t = self.arm(ctx, T_UPSTREAM, up, self.cfg.connect_timeout);
                    if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                        u.timer = Some(t);
                    }
                    return;
                }
                Err(e) => self
                    .pool
                    .traffic_result(&backend, false, &format!("connect: {e}")),
            }
        }
    }

    // ---- health checks and periodic work (loop 0) -----------------------------------------

    fn health_tick(&mut self, ctx: &mut Context<'_, ()>) {
        for addr in self.pool.reap() {
            if let Some(list) = self.idle.remove(&addr) {
                for up in list {
                    ctx.close(up);
                }
            }
        }
        for b in self.pool.members().backends.iter() {
            if self.checking.contains_key(&b.addr) {
                continue;
            }
            match ctx.connect(b.addr) {
                Ok(conn) => {
                    self.checking.insert(b.addr, conn);
                    let t = self.arm(ctx, T_CHECK, conn, self.cfg.check.timeout);
                    self.conns.insert(
                        conn,
                        Conn::Check(Check {
                            backend: Arc::clone(b),
                            timer: Some(t),
                        }),
                    );
                }
                Err(e) => self.pool.check_result(b, false, &format!("connect: {e}")),
            }
        }
        ctx.set_timer(self.cfg.check.interval, T_HEALTH_TICK << KIND_SHIFT);
    }

    fn check_done(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, ok: bool, why: &str) {
        if let Some(Conn::Check(c)) = self.conns.remove(conn) {
            if let Some(t) = c.timer {
                ctx.cancel_timer(t);
            }
            self.checking.remove(&c.backend.addr);
            self.pool.check_result(&c.backend, ok, why);
            ctx.abort(conn);
        }
    }

    fn metrics_tick(&mut self, ctx: &mut Context<'_, ()>) {
        let mut sum_ms = 0.0;
        let mut answered = 0u64;
        for b in self.pool.members().backends.iter() {
            let s = b.status();
            let (_, n, _) = b.histogram();
            sum_ms += s.avg_response_ms * n as f64;
            answered += n;
            info!(
                "[METRIC][SERVER {}] Active: {}, Total: {}, Failures: {}, Avg Response: {:.1}ms",
                s.address, s.active, s.total, s.failures, s.avg_response_ms
            );
        }
        let t = self.pool.totals();
        info!(
            "[METRIC][SYSTEM] Total Requests: {}, Total Failures: {}, Avg Response: {:.1}ms",
            t.requests,
            t.failures,
            if answered == 0 {
                0.0
            } else {
                sum_ms / answered as f64
            }
        );
        if let Some(every) = self.cfg.metrics_interval {
            ctx.set_timer(every, T_METRICS_TICK << KIND_SHIFT);
        }
    }
}

impl Client {
    /// The HTTP minor version of the request being served (1 when unknown).
    fn state_minor(&self) -> u8 {
        match &self.state {
            ClientState::Busy(ex) => ex.head.minor,
            _ => 1,
        }
    }

    /// True while the request being served is a HEAD: no answer to it carries a body.
    fn answering_head(&self) -> bool {
        matches!(&self.state, ClientState::Busy(ex) if ex.head.method == "HEAD")
    }
}

/// Writes an error the proxy makes itself, `{"error": msg}`, and logs it.
fn send_error(
    ctx: &mut Context<'_, ()>,
    conn: ConnId,
    peer: SocketAddr,
    status: u16,
    msg: &str,
    keep_alive: bool,
    head_only: bool,
) {
    let body = http1::error_body(msg);
    let mut out = Vec::new();
    http1::write_response(
        &mut out,
        status,
        &[("Content-Type", "application/json")],
        &body,
        keep_alive,
        head_only,
    );
    let _ = ctx.send(conn, &out);
    access_log(peer, status, &body);
}

/// Answers that say the backend itself cannot serve (502, 503, 504), counted by passive health
/// detection. A 500 is an answer about one request (e.g. its database refused the write): a
/// streak of them must not take out every backend while reads still work.
fn backend_trouble(status: u16) -> bool {
    matches!(status, 502..=504)
}

fn idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

fn keep_prefix(log: &mut Vec<u8>, bytes: &[u8]) {
    let room = (LOG_BODY + 1).saturating_sub(log.len());
    log.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `Client IP: …, Status: …, Response: …`, as test-server writes it (404 and 5xx at ERROR).
fn access_log(peer: SocketAddr, status: u16, body: &[u8]) {
    let level = if status == 404 || status >= 500 {
        log::Level::Error
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(level) {
        return;
    }
    // Escaped: a backend's body may hold CR/LF or binary bytes that would forge log lines.
    log::log!(
        level,
        "Client IP: {}, Status: {status}, Response: {}",
        peer.ip(),
        shared::logging::Printable::new(body, LOG_BODY)
    );
}

impl Handler for Proxy {
    type Message = ();

    fn on_start(&mut self, ctx: &mut Context<'_, ()>) {
        self.is_first_loop = ctx.loop_id() == 0;
        if self.is_first_loop {
            ctx.set_timer(Duration::from_millis(10), T_HEALTH_TICK << KIND_SHIFT);
            if let Some(every) = self.cfg.metrics_interval {
                ctx.set_timer(every, T_METRICS_TICK << KIND_SHIFT);
            }
        }
    }

    fn on_accept(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, peer: SocketAddr) {
        if ctx.listener(conn) == Some(1) {
            self.conns.insert(conn, Conn::Admin);
            return;
        }
        info!("New connection from {}", peer.ip());
        if self.cfg.mode == Mode::Tcp {
            return self.tcp_accept(ctx, conn, peer);
        }
        self.conns.insert(
            conn,
            Conn::Client(Client {
                peer,
                buf: Vec::new(),
                state: ClientState::Idle,
                timer: None,
                tried: Vec::new(),
            }),
        );
        self.arm_client(ctx, conn);
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        match self.conns.get_mut(conn) {
            Some(Conn::Upstream(u)) => {
                u.connected = true;
                if u.tunnel {
                    if let Some(t) = u.timer.take() {
                        ctx.cancel_timer(t);
                    }
                    if let Some(client) = u.client {
                        ctx.resume_reading(client);
                    }
                } else {
                    self.arm_upstream(ctx, conn);
                }
            }
            Some(Conn::Check(c)) => {
                if self.cfg.mode == Mode::Tcp {
                    return self.check_done(ctx, conn, true, "connected");
                }
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmod-proxy\r\nConnection: close\r\n\r\n",
                    self.cfg.check.path, c.backend.addr
                );
                let _ = ctx.send(conn, req.as_bytes());
            }
            _ => {}
        }
    }

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        match self.conns.get(conn) {
            Some(Conn::Client(_)) => {
                self.client_data(ctx, conn, data);
                data.len()
            }
            Some(Conn::Upstream(_)) => self.upstream_data(ctx, conn, data),
            Some(Conn::Admin) => admin::on_data(self, ctx, conn, data),
            Some(Conn::Check(_)) => match http1::parse_response_head(data, 16 * 1024, "GET") {
                Ok(None) => 0,
                Ok(Some((head, _))) => {
                    let ok = (200..400).contains(&head.status);
                    self.check_done(
                        ctx,
                        conn,
                        ok,
                        &format!("health check answered {}", head.status),
                    );
                    data.len()
                }
                Err(e) => {
                    self.check_done(ctx, conn, false, &format!("health check: {e}"));
                    data.len()
                }
            },
            None => data.len(),
        }
    }

    fn on_drain(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        match self.conns.get(conn) {
            // A client caught up: read its backend again.
            Some(Conn::Client(c)) => match &c.state {
                ClientState::Tunnel(up) => ctx.resume_reading(*up),
                ClientState::Busy(ex) => {
                    if let Some(up) = ex.up {
                        ctx.resume_reading(up);
                    }
                }
                _ => {}
            },
            // A backend caught up: read its client again and send what is buffered.
            Some(Conn::Upstream(u)) => {
                if let Some(client) = u.client {
                    ctx.resume_reading(client);
                    self.pump(ctx, client);
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, ()>, token: u64) {
        let kind = token >> KIND_SHIFT;
        match kind {
            T_HEALTH_TICK => return self.health_tick(ctx),
            T_METRICS_TICK => return self.metrics_tick(ctx),
            _ => {}
        }
        let conn = ConnId::from_u64(token & CONN_MASK);
        match (kind, self.conns.get(conn)) {
            (T_CLIENT, Some(Conn::Client(c))) => {
                let partial = match &c.state {
                    ClientState::Idle => !c.buf.is_empty(),
                    ClientState::Busy(ex) => !ex.req.is_done(),
                    ClientState::Tunnel(_) | ClientState::Done => false,
                };
                let idle = matches!(c.state, ClientState::Idle) && c.buf.is_empty();
                let kind = c.timer.map(|(_, k)| k);
                if let Some(Conn::Client(c)) = self.conns.get_mut(conn) {
                    c.timer = None;
                }
                match kind {
                    Some(ClientTimer::Deadline) if partial => {
                        self.abandon(ctx, conn);
                        self.refuse(ctx, conn, 408, "the request did not arrive in time");
                    }
                    Some(ClientTimer::Idle) if idle => ctx.close(conn),
                    // The state moved on since the timer was set: set the right one.
                    _ => self.arm_client(ctx, conn),
                }
            }
            (T_UPSTREAM, Some(Conn::Upstream(_))) => self.upstream_timeout(ctx, conn),
            (T_CHECK, Some(Conn::Check(_))) => {
                self.check_done(ctx, conn, false, "health check timed out")
            }
            _ => {}
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, reason: CloseReason) {
        match self.conns.get(conn) {
            Some(Conn::Upstream(_)) => self.upstream_closed(ctx, conn, &reason),
            Some(Conn::Check(_)) => {
                let why = format!("health check connection closed ({reason:?})");
                self.check_done(ctx, conn, false, &why);
            }
            Some(Conn::Client(_)) => {
                if let Some(Conn::Client(c)) = self.conns.remove(conn) {
                    if let Some((t, _)) = c.timer {
                        ctx.cancel_timer(t);
                    }
                    match c.state {
                        ClientState::Tunnel(up) => {
                            if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                                u.client = None;
                                if std::mem::take(&mut u.counted) {
                                    u.backend.end(None);
                                }
                            }
                            ctx.close(up);
                        }
                        ClientState::Busy(ex) => {
                            if let Some(up) = ex.up {
                                if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                                    u.client = None;
                                }
                                ctx.abort(up);
                                if let Some(b) = ex.backend {
                                    b.end(None);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some(Conn::Admin) => {
                self.conns.remove(conn);
            }
            None => {}
        }
    }
}
