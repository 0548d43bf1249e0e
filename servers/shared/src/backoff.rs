//! Reconnection delays: exponential backoff with jitter (the original design: base 2 s, doubling, at most
//! 60 s, ±10 %, back to the base after a success). Shared by every program that reconnects.
//!
//! ```
//! use std::time::Duration;
//! use shared::backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60), 0.1);
//! let first = b.next_delay();
//! assert!(first >= Duration::from_millis(1800) && first <= Duration::from_millis(2200));
//! b.reset(); // connected again
//! ```

use std::time::Duration;

/// Delays between attempts to reach a peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Delays from `base`, doubling up to `max`, each varied by ±`jitter` (a fraction, 0.1 =
    /// 10 %) so that many clients cut off together do not come back together.
    pub fn new(base: Duration, max: Duration, jitter: f64) -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the jitter is merely the same for everyone; still correct.
        let _ = getrandom::fill(&mut seed);
        Backoff {
            base,
            max: max.max(base),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
            rng: u64::from_le_bytes(seed) | 1,
        }
    }

    /// The original design's defaults: 2 s, 60 s, 10 %.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_secs(2), Duration::from_secs(60), 0.1)
    }

    /// The delay before the next attempt; each call counts one more failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: cheap, and good enough to spread reconnections.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        exp.mul_f64(factor)
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a success: the next delay starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn doubles_within_jitter_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::standard();
        for want in [2, 4, 8, 16, 32, 60, 60, 60] {
            let d = b.next_delay();
            assert!(
                d >= s(want).mul_f64(0.9) && d <= s(want).mul_f64(1.1),
                "{d:?} for {want} s"
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= s(66));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(2200));
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::standard().next_delay()).collect();
        assert!(delays.len() > 1);
    }
}
