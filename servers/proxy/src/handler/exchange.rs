//! One HTTP exchange: a request read, a backend chosen, the request forwarded, the answer
//! streamed back; retries, errors and the access log.

use super::*;
use crate::headers;

impl Proxy {
    /// Takes what it can of a client's input and leaves the rest in the engine's buffer
    /// (returning how much it took): a request head once it is whole, the body of the request
    /// being sent as far as the backend's queue allows, nothing of a pipelined request while
    /// the one before it is answered. What is left is offered again when reading resumes
    /// ([`Context::resume_reading`] after the answer, a retry or a backend catching up), so
    /// forwarded bytes are copied once, into the backend's queue.
    pub(super) fn client_data(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let used = self.take_input(ctx, conn, data);
        if let Some(Conn::Client(c)) = self.conns.get_mut(conn) {
            c.held = data.len() - used;
        }
        self.arm_client(ctx, conn);
        used
    }

    fn take_input(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
                return data.len();
            };
            let rest = &data[used..];
            match &mut c.state {
                ClientState::Done => return data.len(),
                ClientState::Tunnel(up) => {
                    let up = *up;
                    let _ = ctx.send(up, rest);
                    if ctx.queued(up) > HIGH_WATER {
                        ctx.pause_reading(conn);
                    }
                    return data.len();
                }
                ClientState::Idle => {
                    if rest.is_empty() {
                        return used;
                    }
                    let mut ex = self.spare.pop().unwrap_or_else(Exchange::boxed);
                    match http1::parse_request_head_into(&mut ex.head, rest, self.cfg.max_head) {
                        Ok(None) => {
                            self.spare.push(ex);
                            return used;
                        }
                        Err(e) => {
                            self.spare.push(ex);
                            let msg = e.to_string();
                            self.refuse(ctx, conn, e.status(), &msg);
                            return data.len();
                        }
                        Ok(Some(n)) => {
                            used += n;
                            if !self.begin(ctx, conn, ex) {
                                // Answered already; a kept-alive client's next request is
                                // offered again by the resumed read.
                                return used;
                            }
                        }
                    }
                }
                ClientState::Busy(ex) => {
                    if ex.req.is_done() {
                        // Waiting for the answer: what follows is the next request.
                        if rest.len() > PIPELINE_MAX {
                            ctx.pause_reading(conn);
                        }
                        return used;
                    }
                    let Some(up) = ex.up else {
                        return used;
                    };
                    if rest.is_empty() {
                        return used;
                    }
                    match ex.req.advance(rest, None) {
                        Err(e) => {
                            let msg = e.to_string();
                            let status = e.status();
                            self.abandon(ctx, conn);
                            self.refuse(ctx, conn, status, &msg);
                            return data.len();
                        }
                        Ok(n) => {
                            let body = &rest[..n];
                            let _ = ctx.send(up, body);
                            if ex.replayable {
                                if ex.replay.len() + n <= REPLAY_MAX {
                                    ex.replay.extend_from_slice(body);
                                } else {
                                    ex.replayable = false;
                                }
                            }
                            used += n;
                            if ctx.queued(up) > HIGH_WATER {
                                ctx.pause_reading(conn);
                                return used;
                            }
                            if !ex.req.is_done() {
                                return used;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A request head arrived: check it, choose a backend and send it. False when the client
    /// was answered already (and nothing more is to be read now).
    pub(super) fn begin(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        mut ex: Box<Exchange>,
    ) -> bool {
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return false;
        };
        let peer = c.peer;
        let head = &ex.head;
        if matches!(head.body, BodyKind::Length(n) if n > self.cfg.max_body) {
            let msg = format!("request body over {} bytes", self.cfg.max_body);
            let head_only = head.method() == "HEAD";
            self.refuse_answering(ctx, conn, 413, &msg, head_only);
            return false;
        }
        let upgrade = head.has_token("connection", "upgrade") && head.header("upgrade").is_some();
        let proto = if ctx.is_tls(conn) { "https" } else { "http" };
        let ex_ = &mut *ex;
        self.ids.for_request_into(&ex_.head, &mut ex_.request_id);
        ex_.replay.clear();
        headers::request_into(
            &mut ex_.replay,
            &ex_.head,
            peer.ip(),
            proto,
            &ex_.request_id,
            upgrade,
        );
        self.pool.count_request();
        ex.req = BodyReader::new(ex.head.body, self.cfg.max_body);
        ex.keep_alive = ex.head.keep_alive() && !upgrade;
        ex.replayable = true;
        ex.up = None;
        ex.backend = None;
        ex.tried.clear();
        ex.upgrade = upgrade;
        ex.started = Instant::now();
        ex.resp = None;
        ex.log_body.clear();
        c.state = ClientState::Busy(ex);
        self.dispatch(ctx, conn)
    }

    /// Sends the exchange's request (the replay bytes) to a backend not tried yet.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId) -> bool {
        loop {
            let Some(Conn::Client(c)) = self.conns.get(conn) else {
                return false;
            };
            let ip = c.peer.ip();
            let ClientState::Busy(ex) = &c.state else {
                return false;
            };
            if !ex.replayable {
                return self.fail(
                    ctx,
                    conn,
                    502,
                    "backend failed and the request is too long to retry",
                );
            }
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
            info!(target: ACCESS, "Selected backend server {}", backend.addr);
            let reused = self.take_idle(ctx, backend.addr);
            let up = match reused {
                Some(up) => up,
                None => match ctx.connect(backend.addr) {
                    Ok(up) => {
                        ctx.set_kind(up, UPSTREAM);
                        up
                    }
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
            if let Some(ex) = self.exchange(conn) {
                let _ = ctx.send(up, &ex.replay);
            }
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
    pub(super) fn take_idle(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        addr: SocketAddr,
    ) -> Option<ConnId> {
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
    pub(super) fn fail(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        status: u16,
        msg: &str,
    ) -> bool {
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
            // The next request, if already here, is offered again; else the idle timeout runs.
            ctx.resume_reading(conn);
            self.arm_client(ctx, conn);
        } else {
            c.state = ClientState::Done;
            ctx.close(conn);
        }
        false
    }

    /// A request that cannot be framed: answer and close.
    pub(super) fn refuse(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        status: u16,
        msg: &str,
    ) {
        let head_only = match self.conns.get(conn) {
            Some(Conn::Client(c)) => c.answering_head(),
            _ => return,
        };
        self.refuse_answering(ctx, conn, status, msg, head_only);
    }

    /// [`Proxy::refuse`], for a request known to be a HEAD (`head_only`: no body) or not.
    pub(super) fn refuse_answering(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        status: u16,
        msg: &str,
        head_only: bool,
    ) {
        let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
            return;
        };
        c.state = ClientState::Done;
        c.held = 0;
        send_error(ctx, conn, c.peer, status, msg, false, head_only);
        ctx.close(conn);
    }

    /// Drops the exchange's backend connection (the request will not complete).
    pub(super) fn abandon(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId) {
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

    // ---- TCP mode --------------------------------------------------------------------------
}

/// Writes an error the proxy makes itself, `{"error": msg}`, and logs it.
pub(super) fn send_error(
    ctx: &mut Context<'_, (), Timer>,
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
pub(super) fn backend_trouble(status: u16) -> bool {
    matches!(status, 502..=504)
}

pub(super) fn idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The level of a response's access line: ERROR for 404 and 5xx, INFO otherwise.
pub(super) fn access_level(status: u16) -> log::Level {
    if status == 404 || status >= 500 {
        log::Level::Error
    } else {
        log::Level::Info
    }
}

pub(super) fn keep_prefix(log: &mut Vec<u8>, bytes: &[u8]) {
    let room = (LOG_BODY + 1).saturating_sub(log.len());
    log.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `Client IP: …, Status: …, Response: …`, as test-server writes it (404 and 5xx at ERROR).
pub(super) fn access_log(peer: SocketAddr, status: u16, body: &[u8]) {
    let level = access_level(status);
    if !log::log_enabled!(target: ACCESS, level) {
        return;
    }
    // Escaped: a backend's body may hold CR/LF or binary bytes that would forge log lines.
    log::log!(
        target: ACCESS,
        level,
        "Client IP: {}, Status: {status}, Response: {}",
        peer.ip(),
        shared::logging::Printable::new(body, LOG_BODY)
    );
}

/// Why a backend connection that never opened failed, for the log (`connect failed: …`).
pub(super) fn connect_failure(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ConnectFailed(_) => reason.to_string(),
        other => format!("connect failed ({other})"),
    }
}
