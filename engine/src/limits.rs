//! Accept-time limits shared by every loop: the connection count and per-IP token buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{PerIpLimit, RateLimit};

/// Counts open connections across loops against a maximum, and per source address against
/// a per-IP maximum when one is set.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    open: AtomicUsize,
    max: usize,
    per_ip: Option<PerIpLimit>,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why [`ConnectionGate::try_acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every place is taken.
    Server,
    /// This address holds its most.
    Address(usize),
}

impl ConnectionGate {
    pub(crate) fn new(max: usize, per_ip: Option<PerIpLimit>) -> Self {
        ConnectionGate {
            open: AtomicUsize::new(0),
            max,
            per_ip,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn by_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.by_ip.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// The per-IP limit that applies to `ip`, if any.
    fn limit_for(&self, ip: IpAddr) -> Option<usize> {
        self.per_ip
            .as_ref()
            .filter(|l| !l.allow.contains(&ip))
            .map(|l| l.max)
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<(), Full> {
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Full::Server);
        }
        if let Some(max) = self.limit_for(ip) {
            let mut map = self.by_ip();
            let n = map.entry(ip).or_insert(0);
            if *n >= max {
                drop(map);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Full::Address(max));
            }
            *n += 1;
        }
        Ok(())
    }

    /// Gives back the place of a connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if self.limit_for(ip).is_some() {
            let mut map = self.by_ip();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token bucket per source IP (or per source IP and a key of the handler's choosing): the
/// engine's limit on new connections, and any per-address limit a handler needs (test-server's
/// failed logins, per address and user). Touched once per event it limits, so one mutex for
/// all loops is cheap.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateLimit,
    buckets: Mutex<HashMap<(IpAddr, u64), Bucket>>,
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
        self.allow_keyed(ip, 0, now)
    }

    /// Takes a token from the bucket of `ip` and `key` (each pair has its own: e.g. a user
    /// name's hash, so that one user's failures from an address do not lock out another's).
    pub fn allow_keyed(&self, ip: IpAddr, key: u64, now: Instant) -> bool {
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
        let b = map.entry((ip, key)).or_insert(Bucket {
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
        self.refund_keyed(ip, 0);
    }

    /// [`RateLimiter::refund`] for the bucket of `ip` and `key`.
    pub fn refund_keyed(&self, ip: IpAddr, key: u64) {
        let burst = f64::from(self.cfg.burst);
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(b) = map.get_mut(&(ip, key)) {
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
        let ip = IpAddr::from([10, 0, 0, 1]);
        let g = ConnectionGate::new(2, None);
        assert!(g.try_acquire(ip).is_ok() && g.try_acquire(ip).is_ok());
        assert_eq!(g.try_acquire(ip), Err(Full::Server));
        g.release(ip);
        assert!(g.try_acquire(ip).is_ok());
    }

    #[test]
    fn gate_counts_places_per_address_but_the_allowed_ones() {
        let (a, b, trusted) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let g = ConnectionGate::new(
            100,
            Some(PerIpLimit {
                max: 2,
                allow: vec![trusted],
            }),
        );
        assert!(g.try_acquire(a).is_ok() && g.try_acquire(a).is_ok());
        assert_eq!(g.try_acquire(a), Err(Full::Address(2)));
        assert!(g.try_acquire(b).is_ok(), "another address has its own");
        assert!((0..10).all(|_| g.try_acquire(trusted).is_ok()));
        g.release(a);
        assert!(g.try_acquire(a).is_ok());
        // A refused address took no place of the server's.
        assert_eq!(g.open.load(Ordering::Acquire), 2 + 1 + 10);
    }
}
