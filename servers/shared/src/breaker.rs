//! A circuit breaker: after `threshold` consecutive failures to reach a backend it opens and
//! callers fail at once instead of waiting; after `open_for` it lets one trial through
//! (half-open): success closes it, failure opens it again (by default 5 failures, 60 s).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shared::breaker::Breaker;
//!
//! let mut b = Breaker::new(2, Duration::from_secs(60));
//! let t = Instant::now();
//! b.failure(t);
//! assert!(b.allow(t));
//! b.failure(t);
//! assert!(!b.allow(t), "open: fail fast");
//! assert!(b.allow(t + Duration::from_secs(60)), "half-open: one trial");
//! b.success();
//! assert!(b.allow(t + Duration::from_secs(60)));
//! ```

use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests fail at once until the instant.
    Open(Instant),
    /// One trial request is out; the rest fail at once until it ends.
    HalfOpen,
}

/// Consecutive-failure circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    state: State,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            state: State::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// May a request go out at `now`? Past the open period this lets exactly one trial through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open(until) if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open(_) | State::HalfOpen => false,
        }
    }

    /// The backend answered.
    pub fn success(&mut self) {
        self.failures = 0;
        self.state = State::Closed;
    }

    /// The backend could not be reached or did not answer. Returns true when this opened the
    /// breaker (for a log line).
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        let opens = match self.state {
            State::HalfOpen => true,
            State::Closed => self.failures >= self.threshold,
            State::Open(_) => false,
        };
        if opens {
            self.state = State::Open(now + self.open_for);
        }
        opens
    }
}

#[cfg(test)]
mod tests {
    use super::{Breaker, State};
    use std::time::{Duration, Instant};

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = Breaker::new(5, Duration::from_secs(60));
        for _ in 0..4 {
            assert!(!b.failure(t));
        }
        b.success();
        for _ in 0..4 {
            b.failure(t);
        }
        assert!(b.allow(t), "a success in between reset the count");
        assert!(b.failure(t), "the fifth in a row opens it");
        assert!(!b.allow(t + Duration::from_secs(59)));
    }

    #[test]
    fn half_open_lets_one_trial_and_a_failed_trial_reopens() {
        let t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(10));
        b.failure(t);
        let later = t + Duration::from_secs(10);
        assert!(b.allow(later));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.allow(later), "one trial at a time");
        assert!(b.failure(later));
        assert!(!b.allow(later + Duration::from_secs(9)));
        assert!(b.allow(later + Duration::from_secs(10)));
        b.success();
        assert_eq!(b.state(), State::Closed);
    }
}
