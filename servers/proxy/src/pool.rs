//! The backend pool, shared by every loop of the proxy: membership, health, counters, and the
//! choice of a backend for each request.
//!
//! Membership changes (admin API) swap an immutable [`Members`] snapshot behind a lock that
//! requests only read; counters are atomics each backend owns, so loops on several threads
//! never wait on each other to count.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::strategy::{self, HashKey, Ring, Strategy};

/// A backend taken out again within this long of coming back is flapping: each such fall
/// doubles the passing checks it needs to return (`rise` × 2, × 4, up to × [`MAX_RISE_FACTOR`]),
/// so that a link going down and up every few seconds keeps it out instead of moving it in
/// and out of rotation on every flap (with the requests in flight on it lost each time).
/// A fall after a longer healthy spell needs `rise` again.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// The most `rise` is multiplied by for a flapping backend.
pub const MAX_RISE_FACTOR: u32 = 8;

/// Upper bounds (seconds) of the response-time histogram buckets.
pub const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// One backend and what is known of it.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its share under the weighted strategies (≥ 1).
    pub weight: u32,
    active: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    healthy: AtomicBool,
    /// An active check has answered at least once (until then its health is unknown).
    checked: AtomicBool,
    /// Its last check got an HTTP answer (any status): alive, if perhaps degraded.
    answering: AtomicBool,
    draining: AtomicBool,
    check_ok: AtomicU32,
    check_fail: AtomicU32,
    /// How many times `rise` passing checks bring it back (see [`FLAP_WINDOW`]).
    rise_factor: AtomicU32,
    flaps: Mutex<Flaps>,
    passive_fail: AtomicU32,
}

/// A backend's counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// `host:port`.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Passes its health checks (a new backend takes traffic before its first check).
    pub healthy: bool,
    /// `unknown` until its first check answers, then `healthy` or `unhealthy`; `draining`
    /// while it is being removed.
    pub state: &'static str,
    /// Being removed: finishes what it has, gets nothing new.
    pub draining: bool,
    /// Requests in flight.
    pub active: u64,
    /// Requests sent to it.
    pub total: u64,
    /// Failed connections, timeouts and 502/503/504 answers.
    pub failures: u64,
    /// Mean response time of its answered requests, ms.
    pub avg_response_ms: f64,
    /// Answered requests by response time since start, not cumulative: one count per bound of
    /// [`BUCKETS`] (≤ bound) and a last one for slower answers.
    pub response_buckets: Vec<u64>,
}

impl Backend {
    fn new(addr: SocketAddr, weight: u32) -> Self {
        Backend {
            addr,
            weight: weight.max(1),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            buckets: Default::default(),
            healthy: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            answering: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            check_ok: AtomicU32::new(0),
            check_fail: AtomicU32::new(0),
            rise_factor: AtomicU32::new(1),
            flaps: Mutex::new(Flaps::default()),
            passive_fail: AtomicU32::new(0),
        }
    }

    /// Up and not draining: may be given new work.
    pub fn eligible(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// Passes its health checks.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Its last health check got an answer, whatever its status.
    pub fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }

    /// Being removed.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Requests in flight.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// A request starts on this backend.
    pub fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended: answered in `took` (with its status), or failed (`None`).
    pub fn end(&self, outcome: Option<(u16, Duration)>) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        if let Some((_, took)) = outcome {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            let secs = took.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters now.
    pub fn status(&self) -> BackendStatus {
        let (buckets, n, _) = self.histogram();
        let mut response_buckets = buckets.to_vec();
        response_buckets.push(n.saturating_sub(buckets.iter().sum()));
        let checked = self.checked.load(Ordering::Relaxed);
        let state = match (self.is_draining(), self.is_healthy(), checked) {
            (true, _, _) => "draining",
            (false, false, _) => "unhealthy", // failed checks, or failed requests before any
            (false, true, false) => "unknown",
            (false, true, true) => "healthy",
        };
        BackendStatus {
            address: self.addr.to_string(),
            weight: self.weight,
            healthy: self.is_healthy(),
            state,
            draining: self.is_draining(),
            active: self.active(),
            total: self.total.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            avg_response_ms: if n == 0 {
                0.0
            } else {
                self.latency_sum_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            },
            response_buckets,
        }
    }

    /// Answered requests per histogram bucket (not cumulative), their count and their sum (s).
    pub fn histogram(&self) -> ([u64; BUCKETS.len()], u64, f64) {
        let mut b = [0; BUCKETS.len()];
        for (out, c) in b.iter_mut().zip(&self.buckets) {
            *out = c.load(Ordering::Relaxed);
        }
        (
            b,
            self.latency_count.load(Ordering::Relaxed),
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    fn mark(&self, healthy: bool, why: &str, now: Instant) {
        if self.healthy.swap(healthy, Ordering::Relaxed) == healthy {
            return;
        }
        let mut flaps = self.flaps.lock().unwrap_or_else(|p| p.into_inner());
        if healthy {
            flaps.up_since = Some(now);
            info!("[STATUS] Server {} marked as healthy", self.addr);
            return;
        }
        let again = flaps
            .up_since
            .is_some_and(|t| now.saturating_duration_since(t) < FLAP_WINDOW);
        flaps.falls = if again { flaps.falls + 1 } else { 1 };
        let factor = 1u32
            .checked_shl(flaps.falls - 1)
            .unwrap_or(u32::MAX)
            .min(MAX_RISE_FACTOR);
        self.rise_factor.store(factor, Ordering::Relaxed);
        if factor > 1 {
            error!(
                "[STATUS] Server {} marked as unhealthy ({why}; fall {} within {} s of coming \
                 back: it returns after {factor} × rise passing checks)",
                self.addr,
                flaps.falls,
                FLAP_WINDOW.as_secs()
            );
        } else {
            error!("[STATUS] Server {} marked as unhealthy ({why})", self.addr);
        }
    }
}

/// A backend's recent falls (see [`FLAP_WINDOW`]).
#[derive(Debug, Default)]
struct Flaps {
    /// Falls in a row, each within the window of the return before it.
    falls: u32,
    /// When it last came back.
    up_since: Option<Instant>,
}

/// Health-check thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Consecutive successful checks that bring a backend back.
    pub rise: u32,
    /// Consecutive failed checks (or failed requests) that take it out.
    pub fall: u32,
}

impl Default for Thresholds {
    /// 2 passed checks bring a backend back, 3 failures take it out.
    fn default() -> Self {
        Thresholds { rise: 2, fall: 3 }
    }
}

/// The members at one moment: who they are, and the ring over them.
#[derive(Debug, Default)]
pub struct Members {
    /// The backends, in the order they were added.
    pub backends: Vec<Arc<Backend>>,
    ring: Ring,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Adding an address already in the pool.
    #[error("backend {0} is already in the pool")]
    Exists(SocketAddr),
    /// Removing an address not in the pool.
    #[error("no backend {0} in the pool")]
    Unknown(SocketAddr),
}

/// The backends of a proxy and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    members: RwLock<Arc<Members>>,
    strategy: RwLock<Strategy>,
    thresholds: Thresholds,
    rr: AtomicUsize,
    /// Smooth weighted round-robin's running weights, by address.
    swrr: Mutex<Vec<(SocketAddr, i64)>>,
    rng: AtomicU64,
    /// No backend is healthy and requests go to those still answering (see [`Pool::select`]).
    panicking: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
}

/// Totals over the pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Requests (or TCP connections) balanced.
    pub requests: u64,
    /// Those that failed (no answer, a 5xx answer made by the proxy).
    pub failures: u64,
    /// Retries on another backend.
    pub retries: u64,
}

impl Pool {
    /// A pool of `backends` (address, weight), balanced by `strategy`.
    pub fn new(backends: &[(SocketAddr, u32)], strategy: Strategy, thresholds: Thresholds) -> Self {
        let list = backends
            .iter()
            .map(|(a, w)| Arc::new(Backend::new(*a, *w)))
            .collect();
        info!(
            "Backend server pool initialized with {} servers",
            backends.len()
        );
        Pool {
            members: RwLock::new(Arc::new(members(list))),
            strategy: RwLock::new(strategy),
            thresholds,
            rr: AtomicUsize::new(0),
            swrr: Mutex::new(Vec::new()),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            panicking: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// The members now.
    pub fn members(&self) -> Arc<Members> {
        Arc::clone(&read(&self.members))
    }

    /// The strategy now.
    pub fn strategy(&self) -> Strategy {
        read(&self.strategy).clone()
    }

    /// Switches strategy; requests already sent are not affected.
    pub fn set_strategy(&self, s: Strategy) {
        info!("Load-balancing strategy set to {s}");
        *write(&self.strategy) = s;
    }

    /// Adds a backend (healthy until its checks say otherwise).
    pub fn add(&self, addr: SocketAddr, weight: u32) -> Result<(), PoolError> {
        let mut m = write(&self.members);
        if m.backends.iter().any(|b| b.addr == addr) {
            return Err(PoolError::Exists(addr));
        }
        let mut list = m.backends.clone();
        list.push(Arc::new(Backend::new(addr, weight)));
        *m = Arc::new(members(list));
        info!("Backend server {addr} added (weight {weight})");
        Ok(())
    }

    /// Starts removing a backend: it gets no new requests, and leaves the pool once the ones
    /// it has are done ([`Pool::reap`]). Returns the requests still in flight.
    pub fn drain(&self, addr: SocketAddr) -> Result<u64, PoolError> {
        let m = read(&self.members);
        let b = m
            .backends
            .iter()
            .find(|b| b.addr == addr && !b.is_draining())
            .ok_or(PoolError::Unknown(addr))?;
        b.draining.store(true, Ordering::Relaxed);
        let active = b.active();
        info!("Backend server {addr} draining ({active} request(s) in flight)");
        Ok(active)
    }

    /// Drops drained backends with nothing in flight; the addresses removed.
    pub fn reap(&self) -> Vec<SocketAddr> {
        if !read(&self.members)
            .backends
            .iter()
            .any(|b| b.is_draining() && b.active() == 0)
        {
            return Vec::new();
        }
        let mut m = write(&self.members);
        let (gone, kept): (Vec<_>, Vec<_>) = m
            .backends
            .iter()
            .cloned()
            .partition(|b| b.is_draining() && b.active() == 0);
        *m = Arc::new(members(kept));
        let gone: Vec<SocketAddr> = gone.iter().map(|b| b.addr).collect();
        for a in &gone {
            info!("Backend server {a} removed from the pool");
        }
        gone
    }

    /// Totals over the pool.
    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// One more request (or TCP connection) to balance.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request failed for its client (it got a 502/503/504 from the proxy).
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry from the budget: true when retries stay within 20 % of requests (plus a
    /// small allowance), so that retries cannot multiply the load of an outage.
    pub fn take_retry(&self) -> bool {
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed = 10 + requests / 5;
        let prev = self.retries.fetch_add(1, Ordering::Relaxed);
        if prev >= allowed {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// An active health check of `b` passed or failed; `answered`: it got an HTTP answer
    /// (whatever the status) rather than no connection, a timeout or garbage.
    pub fn check_result(&self, b: &Backend, ok: bool, answered: bool, why: &str) {
        b.answering.store(answered, Ordering::Relaxed);
        self.check_result_at(b, ok, why, Instant::now());
    }

    fn check_result_at(&self, b: &Backend, ok: bool, why: &str, now: Instant) {
        let t = self.thresholds;
        b.checked.store(true, Ordering::Relaxed);
        if ok {
            b.check_fail.store(0, Ordering::Relaxed);
            let n = b.check_ok.fetch_add(1, Ordering::Relaxed) + 1;
            let rise = t.rise.saturating_mul(b.rise_factor.load(Ordering::Relaxed));
            if n >= rise && !b.is_healthy() {
                b.passive_fail.store(0, Ordering::Relaxed);
                b.mark(true, why, now);
            }
        } else {
            b.check_ok.store(0, Ordering::Relaxed);
            let n = b.check_fail.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= t.fall {
                b.mark(false, why, now);
            }
        }
    }

    /// Real traffic to `b` succeeded (`true`) or failed: a connection that failed, timed out or
    /// answered 502/503/504. `fall` failures in a row take the backend out until checks bring it back.
    pub fn traffic_result(&self, b: &Backend, ok: bool, why: &str) {
        if ok {
            b.passive_fail.store(0, Ordering::Relaxed);
            return;
        }
        b.failures.fetch_add(1, Ordering::Relaxed);
        let n = b.passive_fail.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.thresholds.fall {
            b.check_ok.store(0, Ordering::Relaxed);
            b.mark(false, why, Instant::now());
        }
    }

    fn random(&self) -> u64 {
        // A shared xorshift: two loops may draw the same number, which is harmless here.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Picks a backend for a request from `client` (`header` looks a request header up, for
    /// hashing on it), never one in `exclude` (already tried). `None` when no backend is up.
    ///
    /// When no backend is healthy, the request goes to those whose last health check still got
    /// an answer (alive but reporting themselves degraded, e.g. a test-server cut off from
    /// db-server, which still serves its cached documents): their answer, even a 503, is
    /// better than the proxy's own 503. This is Envoy's panic routing with the threshold at
    /// 0 %: one healthy backend ends it. Backends that time out or refuse connections, and
    /// draining ones, are never chosen.
    pub fn select(
        &self,
        client: IpAddr,
        header: impl Fn(&str) -> Option<String>,
        exclude: &[SocketAddr],
    ) -> Option<Arc<Backend>> {
        let m = self.members();
        let healthy = |b: &Backend| b.eligible() && !exclude.contains(&b.addr);
        // On the stack for up to 64 backends: no allocation per request.
        let mut few = [0usize; 64];
        let mut many = Vec::new();
        let mut n = gather(&m.backends, healthy, &mut few, &mut many);
        let panic = n == 0;
        let answering =
            |b: &Backend| !b.is_draining() && b.is_answering() && !exclude.contains(&b.addr);
        if panic {
            n = gather(&m.backends, answering, &mut few, &mut many);
        }
        if !panic || n > 0 {
            self.note_panic(panic, n);
        }
        if n == 0 {
            return None;
        }
        let live: &[usize] = if m.backends.len() <= few.len() {
            &few[..n]
        } else {
            &many
        };
        let ok = |b: &Backend| if panic { answering(b) } else { healthy(b) };
        let pick = match self.strategy() {
            Strategy::RoundRobin => live[self.rr.fetch_add(1, Ordering::Relaxed) % live.len()],
            Strategy::WeightedRoundRobin => {
                let mut cur = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
                // Running weights follow the members by address.
                cur.retain(|(a, _)| m.backends.iter().any(|b| b.addr == *a));
                for b in &m.backends {
                    if !cur.iter().any(|(a, _)| *a == b.addr) {
                        cur.push((b.addr, 0));
                    }
                }
                let mut weights: Vec<i64> = m
                    .backends
                    .iter()
                    .map(|b| cur.iter().find(|(a, _)| *a == b.addr).map_or(0, |c| c.1))
                    .collect();
                let cands: Vec<(usize, u32)> =
                    live.iter().map(|&i| (i, m.backends[i].weight)).collect();
                let pick = strategy::smooth_weighted(&mut weights, &cands)?;
                for (b, w) in m.backends.iter().zip(weights) {
                    if let Some(c) = cur.iter_mut().find(|(a, _)| *a == b.addr) {
                        c.1 = w;
                    }
                }
                pick
            }
            Strategy::LeastConnections => {
                let cands: Vec<(usize, u64, u32)> = live
                    .iter()
                    .map(|&i| (i, m.backends[i].active(), m.backends[i].weight))
                    .collect();
                let start = self.rr.fetch_add(1, Ordering::Relaxed) % cands.len();
                strategy::least_loaded(&cands, start)?
            }
            Strategy::PowerOfTwo => {
                let r = self.random();
                let a = live[(r % live.len() as u64) as usize];
                let b = live[((r >> 32) % live.len() as u64) as usize];
                if m.backends[b].active() < m.backends[a].active() {
                    b
                } else {
                    a
                }
            }
            Strategy::ConsistentHash(key) => {
                let key = match key {
                    HashKey::ClientIp => client.to_string(),
                    HashKey::Header(h) => header(&h).unwrap_or_else(|| client.to_string()),
                };
                m.ring.lookup(key.as_bytes(), |i| ok(&m.backends[i]))?
            }
        };
        Some(Arc::clone(&m.backends[pick]))
    }

    /// Logs the start and the end of panic routing (one relaxed load per request otherwise).
    fn note_panic(&self, panic: bool, answering: usize) {
        if self.panicking.load(Ordering::Relaxed) == panic
            || self.panicking.swap(panic, Ordering::Relaxed) == panic
        {
            return;
        }
        if panic {
            warn!(
                "[STATUS] no healthy backend: sending requests to the {answering} that still \
                 answer their health checks"
            );
        } else {
            info!("[STATUS] requests go to healthy backends again");
        }
    }
}

mod members;
#[cfg(test)]
mod tests;
#[allow(unused_imports)]
pub use members::*;
