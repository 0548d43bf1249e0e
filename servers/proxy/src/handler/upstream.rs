//! The backend side of an HTTP exchange: the response read, rewritten and streamed back, the
//! backend connection returned to the idle list or closed, retries when it fails first.

use super::exchange::{
    access_level, access_log, backend_trouble, connect_failure, idempotent, keep_prefix,
};
use super::*;
use crate::headers;

impl Proxy {
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
                        if let Some((t, _)) = c.timer.take() {
                            ctx.cancel_timer(t);
                        }
                    }
                    // Bytes the client sent after its handshake go through too.
                    ctx.resume_reading(client);
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
                    ctx.set_idle_timeout(up, Some(self.cfg.keepalive_timeout));
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
        // A pipelined request already here is offered again.
        ctx.resume_reading(client);
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
                    if self.dispatch(ctx, client) {
                        // The rest of the body, if any, follows from the client's buffer.
                        ctx.resume_reading(client);
                    }
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
}
