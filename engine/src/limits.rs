//! Accept-time limits shared by every loop: the connection count and per-IP token buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Counts open connections across loops against a maximum.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionGate {
    pub(crate) fn new(max: usize) -> Self {
        ConnectionGate {
            open: AtomicUsize::new(0),
            max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Takes a place, or returns false when all are taken.
    pub(crate) fn try_acquire(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token bucket per source IP: the engine's limit on new connections, and any per-address limit
/// a handler needs (test-server's failed logins). Touched once per event it limits, so one mutex
/// for all loops is cheap.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Above this many tracked addresses, full buckets (which carry no information) are pruned.
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    /// A limiter with `cfg`'s burst, refill period and allow-list.
    pub fn new(cfg: RateLimit) -> Self {
        RateLimiter {
            cfg,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`: true when there was one (the event may go ahead).
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.cfg.allow.contains(&ip) {
            return true;
        }
        let burst = f64::from(self.cfg.burst);
        let rate = burst / self.cfg.per.as_secs_f64().max(1e-9);
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= PRUNE_AT {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back the token an event took (it turned out not to count, e.g. a login that
    /// succeeded).
    pub fn refund(&self, ip: IpAddr) {
        let burst = f64::from(self.cfg.burst);
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(b) = map.get_mut(&ip) {
            b.tokens = (b.tokens + 1.0).min(burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refuses_past_burst_and_refills_over_time() {
        let rl = RateLimiter::new(RateLimit {
            burst: 3,
            per: Duration::from_secs(60),
            allow: vec![IpAddr::from([127, 0, 0, 1])],
        });
        let t0 = Instant::now();
        let ip = IpAddr::from([127, 0, 0, 2]);
        assert!((0..3).all(|_| rl.allow(ip, t0)));
        assert!(!rl.allow(ip, t0));
        // The allow-listed address is never limited.
        assert!((0..100).all(|_| rl.allow(IpAddr::from([127, 0, 0, 1]), t0)));
        // One token comes back after a third of the period.
        assert!(rl.allow(ip, t0 + Duration::from_secs(20)));
        assert!(!rl.allow(ip, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn gate_counts_places() {
        let g = ConnectionGate::new(2);
        assert!(g.try_acquire() && g.try_acquire());
        assert!(!g.try_acquire());
        g.release();
        assert!(g.try_acquire());
    }
}
