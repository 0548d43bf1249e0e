//! Active health checks: `GET /health` (HTTP mode) or a connect (TCP mode) on each backend
//! every interval, rise and fall counted by the pool. A service of its own: its connections
//! (kind [`CHECK`]) and their state are nobody else's.

use super::*;

/// One check under way.
#[derive(Debug)]
struct Check {
    backend: Arc<Backend>,
    timer: Option<TimerId>,
}

/// The health-check connections of a loop (loop 0 runs the checks).
#[derive(Debug, Default)]
pub struct Checks {
    checks: ConnMap<Check>,
    /// The check connection of each backend being checked.
    checking: HashMap<SocketAddr, ConnId>,
}

impl Checks {
    /// Starts a check of every backend not being checked already.
    pub(super) fn tick(&mut self, hub: &mut Proxy, ctx: &mut Ctx<'_>) {
        for b in hub.pool.members().backends.iter() {
            if self.checking.contains_key(&b.addr) {
                continue;
            }
            match ctx.connect(b.addr) {
                Ok(conn) => {
                    ctx.set_kind(conn, CHECK);
                    self.checking.insert(b.addr, conn);
                    let t = ctx.set_timer(hub.cfg.check.timeout, Timer::Check(conn));
                    self.checks.insert(
                        conn,
                        Check {
                            backend: Arc::clone(b),
                            timer: Some(t),
                        },
                    );
                }
                Err(e) => hub
                    .pool
                    .check_result(b, false, false, &format!("connect: {e}")),
            }
        }
    }

    /// A check's timer ran out.
    pub(super) fn timed_out(&mut self, hub: &mut Proxy, ctx: &mut Ctx<'_>, conn: ConnId) {
        if let Some(c) = self.checks.get_mut(conn) {
            c.timer = None; // it fired
            self.done(hub, ctx, conn, false, false, "health check timed out");
        }
    }

    fn done(
        &mut self,
        hub: &Proxy,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        ok: bool,
        answered: bool,
        why: &str,
    ) {
        if let Some(c) = self.checks.remove(conn) {
            if let Some(t) = c.timer {
                ctx.cancel_timer(t);
            }
            self.checking.remove(&c.backend.addr);
            hub.pool.check_result(&c.backend, ok, answered, why);
            ctx.abort(conn);
        }
    }
}

impl Service<Proxy> for Checks {
    fn on_connect(&mut self, parts: &mut Parts<'_, Proxy>, ctx: &mut Ctx<'_>, conn: ConnId) {
        let Some(c) = self.checks.get(conn) else {
            return;
        };
        let cfg = &parts.hub.cfg;
        if cfg.mode == Mode::Tcp {
            return self.done(parts.hub, ctx, conn, true, true, "connected");
        }
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmod-proxy\r\nConnection: close\r\n\r\n",
            cfg.check.path, c.backend.addr
        );
        let _ = ctx.send(conn, req.as_bytes());
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        match http1::parse_response_head(data, 16 * 1024, "GET") {
            Ok(None) => 0,
            Ok(Some((head, _))) => {
                let ok = (200..400).contains(&head.status);
                let why = format!("health check answered {}", head.status);
                self.done(parts.hub, ctx, conn, ok, true, &why);
                data.len()
            }
            Err(e) => {
                let why = format!("health check: {e}");
                self.done(parts.hub, ctx, conn, false, false, &why);
                data.len()
            }
        }
    }

    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Proxy>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        reason: CloseReason,
    ) {
        let why = format!("health check connection closed ({reason})");
        self.done(parts.hub, ctx, conn, false, false, &why);
    }
}
