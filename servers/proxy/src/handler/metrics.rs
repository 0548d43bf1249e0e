//! The periodic `[METRIC]` lines.

use super::*;

impl Proxy {
    pub(super) fn metrics_tick(&mut self, ctx: &mut Context<'_, (), Timer>) {
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
            ctx.set_timer(every, Timer::MetricsTick);
        }
    }
}
