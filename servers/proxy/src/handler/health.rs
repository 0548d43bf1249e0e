//! Active health checks: `GET /health` on each backend every interval, rise and fall.

use super::*;

impl Proxy {
    pub(super) fn health_tick(&mut self, ctx: &mut Context<'_, (), Timer>) {
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
                    let t = ctx.set_timer(self.cfg.check.timeout, Timer::Check(conn));
                    self.conns.insert(
                        conn,
                        Conn::Check(Check {
                            backend: Arc::clone(b),
                            timer: Some(t),
                        }),
                    );
                }
                Err(e) => self
                    .pool
                    .check_result(b, false, false, &format!("connect: {e}")),
            }
        }
        ctx.set_timer(self.cfg.check.interval, Timer::HealthTick);
    }

    pub(super) fn check_done(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        ok: bool,
        answered: bool,
        why: &str,
    ) {
        if let Some(Conn::Check(c)) = self.conns.remove(conn) {
            if let Some(t) = c.timer {
                ctx.cancel_timer(t);
            }
            self.checking.remove(&c.backend.addr);
            self.pool.check_result(&c.backend, ok, answered, why);
            ctx.abort(conn);
        }
    }
}
