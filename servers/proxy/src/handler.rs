//! The engine handler of one loop: its clients, backend connections and health checks, and
//! the events that move them. The HTTP exchange, the TCP tunnel, health checks and the periodic
//! metrics lines are in the submodules.

mod checks;
mod exchange;
mod metrics;
mod tunnel;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::compose::{Composed, Hub, Parts, Service, Services};
use engine::{CloseReason, ConnId, ConnMap, Context, Kind, TimerId};

pub use checks::Checks;
use log::{info, warn};

use crate::config::{Mode, ProxyConfig};
use crate::pool::{Backend, Pool};
use crate::{admin, headers};
use shared::http1::{self, BodyKind, BodyReader, Head};
use shared::logging::ACCESS;

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
    /// The rewritten head and as much of the body as fits in [`REPLAY_MAX`], for a retry
    /// (while `replayable`; the buffer is kept for the next request either way).
    replay: Vec<u8>,
    replayable: bool,
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

impl Exchange {
    /// An empty exchange; `Proxy::begin` fills every field.
    fn boxed() -> Box<Exchange> {
        Box::new(Exchange {
            head: Head::default(),
            replay: Vec::with_capacity(512),
            replayable: false,
            req: BodyReader::new(BodyKind::None, 0),
            up: None,
            backend: None,
            tried: Vec::new(),
            upgrade: false,
            keep_alive: false,
            request_id: String::with_capacity(16),
            started: Instant::now(),
            resp: None,
            log_body: Vec::new(),
        })
    }
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
    /// The access log will show this response: keep the start of its body for it.
    logged: bool,
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
    /// Input bytes left in the engine's buffer at the last delivery (a partial head, or
    /// requests behind the one being served).
    held: usize,
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
enum Conn {
    Client(Client),
    Upstream(Upstream),
}

/// What a timer of the proxy is for; given back to `on_timer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A client connection's idle timeout or request deadline (its `ClientTimer` says which).
    Client(ConnId),
    /// A backend connection's connect or response timeout.
    Upstream(ConnId),
    /// A health check's timeout.
    Check(ConnId),
    /// Time for the next round of health checks (loop 0).
    HealthTick,
    /// Time for the next `[METRIC]` lines (loop 0).
    MetricsTick,
}

/// The kind of the connections to backends that carry clients' requests and tunnels.
pub const UPSTREAM: Kind = Kind(1);
/// The kind of health-check connections.
pub const CHECK: Kind = Kind(2);

type Ctx<'a> = Context<'a, (), Timer>;

/// What one proxy loop's services share: the clients' and backend connections' state (an
/// exchange spans both), idle backend connections, the pool. The hub of the loop's
/// composition ([`assemble`]).
#[derive(Debug)]
pub struct Proxy {
    cfg: Arc<ProxyConfig>,
    pool: Arc<Pool>,
    conns: ConnMap<Conn>,
    idle: HashMap<SocketAddr, Vec<ConnId>>,
    is_first_loop: bool,
    ids: headers::RequestIds,
    /// Finished exchanges, kept with their buffers for the next requests (no allocation per
    /// request once the loop has as many as it has requests in flight).
    #[allow(clippy::vec_box)] // the boxes move in and out of `ClientState::Busy`
    spare: Vec<Box<Exchange>>,
    /// Each response head is parsed into this one.
    resp_head: Head,
    /// Each rewritten response head is written here, then queued.
    out: Vec<u8>,
}

/// Spare exchanges kept per loop.
const SPARE_EXCHANGES: usize = 256;

impl Proxy {
    /// A loop's handler over the shared `pool`.
    pub fn new(cfg: Arc<ProxyConfig>, pool: Arc<Pool>) -> Self {
        Proxy {
            cfg,
            pool,
            conns: ConnMap::default(),
            idle: HashMap::new(),
            is_first_loop: false,
            ids: headers::RequestIds::new(),
            spare: Vec::new(),
            resp_head: Head::default(),
            out: Vec::with_capacity(512),
        }
    }

    /// Sets the client's timer for its state: the idle timeout between requests; a deadline
    /// `client_timeout` after the first byte of a request that is not whole yet — not moved by
    /// later bytes, so a client that trickles bytes (slowloris, slow POST) still runs out of
    /// time; none while the backend has the whole request.
    fn arm_client(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId) {
        let Some(Conn::Client(c)) = self.conns.get(conn) else {
            return;
        };
        let want = match &c.state {
            ClientState::Idle if c.held == 0 => Some(ClientTimer::Idle),
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
                ClientTimer::Idle => self.cfg.keepalive_timeout,
                ClientTimer::Deadline => self.cfg.client_timeout,
            };
            (ctx.set_timer(after, Timer::Client(conn)), kind)
        });
        if let Some(Conn::Client(c)) = self.conns.get_mut(conn) {
            c.timer = timer;
        }
    }

    fn arm_upstream(&mut self, ctx: &mut Context<'_, (), Timer>, up: ConnId) {
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
        let t = ctx.set_timer(after, Timer::Upstream(up));
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
        matches!(&self.state, ClientState::Busy(ex) if ex.head.method() == "HEAD")
    }
}

impl Hub for Proxy {
    type Message = ();
    type Timer = Timer;

    fn on_start(&mut self, _services: &mut Services<Self>, ctx: &mut Ctx<'_>) {
        self.is_first_loop = ctx.loop_id() == 0;
        if self.is_first_loop {
            ctx.set_timer(Duration::from_millis(10), Timer::HealthTick);
            if let Some(every) = self.cfg.metrics_interval {
                ctx.set_timer(every, Timer::MetricsTick);
            }
        }
    }

    fn on_timer(&mut self, services: &mut Services<Self>, ctx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::HealthTick => {
                self.reap(ctx);
                if let Some(checks) = services.get::<Checks>() {
                    checks.tick(self, ctx);
                }
                ctx.set_timer(self.cfg.check.interval, Timer::HealthTick);
            }
            Timer::MetricsTick => self.metrics_tick(ctx),
            Timer::Check(conn) => {
                if let Some(checks) = services.get::<Checks>() {
                    checks.timed_out(self, ctx, conn);
                }
            }
            Timer::Client(conn) => self.client_timer(ctx, conn),
            Timer::Upstream(conn) => {
                if let Some(Conn::Upstream(_)) = self.conns.get(conn) {
                    self.upstream_timeout(ctx, conn);
                }
            }
        }
    }
}

/// The clients: connections of the proxied listener.
#[derive(Debug)]
pub struct Clients;

impl Service<Proxy> for Clients {
    fn on_accept(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        parts.hub.accept(ctx, conn, peer);
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        parts.hub.client_data(ctx, conn, data)
    }

    /// A client caught up: read its backend again.
    fn on_drain(&mut self, parts: &mut Parts<'_, Proxy>, ctx: &mut Ctx<'_>, conn: ConnId) {
        let Some(Conn::Client(c)) = parts.hub.conns.get(conn) else {
            return;
        };
        match &c.state {
            ClientState::Tunnel(up) => ctx.resume_reading(*up),
            ClientState::Busy(ex) => {
                if let Some(up) = ex.up {
                    ctx.resume_reading(up);
                }
            }
            _ => {}
        }
    }

    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        _reason: CloseReason,
    ) {
        parts.hub.client_closed(ctx, conn);
    }
}

/// The backend connections: requests forwarded and tunnels (kind [`UPSTREAM`]).
#[derive(Debug)]
pub struct Upstreams;

impl Service<Proxy> for Upstreams {
    fn on_connect(&mut self, parts: &mut Parts<'_, Proxy>, ctx: &mut Ctx<'_>, conn: ConnId) {
        parts.hub.upstream_connected(ctx, conn);
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        parts.hub.upstream_data(ctx, conn, data)
    }

    /// A backend caught up: read its client again and send what is buffered.
    fn on_drain(&mut self, parts: &mut Parts<'_, Proxy>, ctx: &mut Ctx<'_>, conn: ConnId) {
        if let Some(Conn::Upstream(Upstream {
            client: Some(client),
            ..
        })) = parts.hub.conns.get(conn)
        {
            let client = *client;
            // The rest of a request body waits in the client's buffer: offered again.
            ctx.resume_reading(client);
        }
    }

    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        reason: CloseReason,
    ) {
        if let Some(Conn::Upstream(_)) = parts.hub.conns.get(conn) {
            parts.hub.upstream_closed(ctx, conn, &reason);
        }
    }
}

/// The admin API, on its own listener.
#[derive(Debug)]
pub struct Admin;

impl Service<Proxy> for Admin {
    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let hub = &*parts.hub;
        let token = hub.cfg.admin_token.as_deref();
        admin::on_data(&hub.pool, hub.cfg.mode, token, ctx, conn, data)
    }
}

/// One proxy loop: clients on the proxied listener, the admin API on its own, backend
/// connections and health checks as outbound kinds, around the loop's [`Proxy`] hub.
pub fn assemble(cfg: Arc<ProxyConfig>, pool: Arc<Pool>) -> Composed<Proxy> {
    let admin = cfg.admin_listener;
    let assembled = Composed::new(Proxy::new(cfg, pool))
        .other_listeners(Clients)
        .outbound(UPSTREAM, Upstreams)
        .outbound(CHECK, Checks::default());
    match admin {
        Some(listener) => assembled.listener(listener, Admin),
        None => assembled,
    }
}

impl Proxy {
    /// A client connected.
    fn accept(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, peer: SocketAddr) {
        info!(target: ACCESS, "New connection from {}", peer.ip());
        if self.cfg.mode == Mode::Tcp {
            return self.tcp_accept(ctx, conn, peer);
        }
        self.conns.insert(
            conn,
            Conn::Client(Client {
                peer,
                held: 0,
                state: ClientState::Idle,
                timer: None,
                tried: Vec::new(),
            }),
        );
        self.arm_client(ctx, conn);
    }

    /// A backend connection is established.
    fn upstream_connected(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(conn) else {
            return;
        };
        u.connected = true;
        if u.tunnel {
            if let Some(t) = u.timer.take() {
                ctx.cancel_timer(t);
            }
            if let Some(client) = u.client {
                if self.cfg.send_proxy_v2 {
                    // Before any of the client's bytes: who the connection is for.
                    if let (Some(src), Some(dst)) = (ctx.peer_addr(client), ctx.local_addr(client))
                    {
                        let header = shared::proxy_protocol::encode_v2(src, dst);
                        let _ = ctx.send(conn, &header);
                    }
                }
                ctx.resume_reading(client);
            }
        } else {
            self.arm_upstream(ctx, conn);
        }
    }

    /// A client's timer fired.
    fn client_timer(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        let Some(Conn::Client(c)) = self.conns.get(conn) else {
            return;
        };
        let partial = match &c.state {
            ClientState::Idle => c.held > 0,
            ClientState::Busy(ex) => !ex.req.is_done(),
            ClientState::Tunnel(_) | ClientState::Done => false,
        };
        let idle = matches!(c.state, ClientState::Idle) && c.held == 0;
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

    /// A client's connection closed: its backend connection goes with it.
    fn client_closed(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
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

    /// Backends removed from the pool: their idle connections close.
    fn reap(&mut self, ctx: &mut Ctx<'_>) {
        for addr in self.pool.reap() {
            if let Some(list) = self.idle.remove(&addr) {
                for up in list {
                    ctx.close(up);
                }
            }
        }
    }
}
