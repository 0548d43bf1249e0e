//! One HTTP exchange: a request read, a backend chosen, the request forwarded, the answer
//! streamed back; retries, errors and the access log.

use super::*;
use crate::headers;

impl Proxy {
    pub(super) fn client_data(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        data: &[u8],
    ) {
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
    pub(super) fn pump(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId) {
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
                    let mut ex = self.spare.pop().unwrap_or_else(Exchange::boxed);
                    match http1::parse_request_head_into(&mut ex.head, &c.buf, self.cfg.max_head) {
                        Ok(None) => {
                            self.spare.push(ex);
                            return;
                        }
                        Err(e) => {
                            self.spare.push(ex);
                            let msg = e.to_string();
                            return self.refuse(ctx, conn, e.status(), &msg);
                        }
                        Ok(Some(n)) => {
                            c.buf.drain(..n);
                            if !self.begin(ctx, conn, ex) {
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
                            if ex.replayable {
                                if ex.replay.len() + n <= REPLAY_MAX {
                                    ex.replay.extend_from_slice(&c.buf[..n]);
                                } else {
                                    ex.replayable = false;
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
            ctx.resume_reading(conn);
            self.pump(ctx, conn);
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
        c.buf.clear();
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

    // ---- backends ------------------------------------------------------------------------

    pub(super) fn upstream_data(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        up: ConnId,
        data: &[u8],
    ) -> usize {
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
                let head = &mut self.resp_head;
                let parsed =
                    http1::parse_response_head_into(head, &data[at..], 64 * 1024, ex.head.method());
                let n = match parsed {
                    Ok(None) => return at,
                    Ok(Some(n)) => n,
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
                    let _ = ctx.send(client, &headers::switching(head));
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
                        self.out.clear();
                        headers::response_into(
                            &mut self.out,
                            head,
                            headers::ResponseShape {
                                client_minor: 1,
                                close: false,
                                dechunk: false,
                            },
                            &ex.request_id,
                        );
                        let _ = ctx.send(client, &self.out);
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
                self.out.clear();
                headers::response_into(&mut self.out, head, shape, &ex.request_id);
                let _ = ctx.send(client, &self.out);
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
                    logged: log::log_enabled!(target: ACCESS, access_level(head.status)),
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
                    if resp.logged {
                        keep_prefix(&mut ex.log_body, &plain);
                    }
                    Ok(n)
                } else {
                    r
                }
            } else {
                let r = resp.body.advance(rest, None);
                if let Ok(n) = r {
                    let _ = ctx.send(client, &rest[..n]);
                    if resp.logged {
                        keep_prefix(&mut ex.log_body, &rest[..n]);
                    }
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
    pub(super) fn finish(&mut self, ctx: &mut Context<'_, (), Timer>, client: ConnId) {
        let Some(Conn::Client(c)) = self.conns.get_mut(client) else {
            return;
        };
        let ClientState::Busy(mut ex) = std::mem::replace(&mut c.state, ClientState::Idle) else {
            return;
        };
        let peer = c.peer;
        let Some(resp) = ex.resp.take() else {
            return;
        };
        let backend = ex.backend.take();
        if let Some(b) = &backend {
            b.end(Some((resp.status, ex.started.elapsed())));
        }
        access_log(peer, resp.status, &ex.log_body);
        let request_done = ex.req.is_done();
        let up = ex.up.take();
        if self.spare.len() < SPARE_EXCHANGES {
            self.spare.push(ex);
        }
        if let Some(up) = up {
            let reusable = !resp.close_backend
                && request_done
                && backend.as_ref().is_some_and(|b| !b.is_draining());
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

    pub(super) fn upstream_closed(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        up: ConnId,
        reason: &CloseReason,
    ) {
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
                self.pool
                    .traffic_result(&u.backend, false, &connect_failure(reason));
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
                let safe =
                    ex.replayable && (idempotent(ex.head.method()) || !u.connected) && !ex.upgrade;
                if let Some(b) = &backend {
                    b.end(None);
                    let why = if u.connected {
                        format!("closed before answering ({reason})")
                    } else {
                        connect_failure(reason)
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

    pub(super) fn upstream_timeout(&mut self, ctx: &mut Context<'_, (), Timer>, up: ConnId) {
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
fn access_level(status: u16) -> log::Level {
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
fn connect_failure(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ConnectFailed(_) => reason.to_string(),
        other => format!("connect failed ({other})"),
    }
}
