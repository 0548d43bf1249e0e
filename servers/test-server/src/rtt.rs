//! Round-trip times of pings, kept per client for the liveness check and /metrics.

use std::time::Duration;

/// Moving average of the last 100 round-trip samples (e.g. ping → pong).
///
/// Allocates on the first sample, so sessions that never measure RTT pay one pointer.
#[derive(Debug, Default, Clone)]
pub struct RttWindow {
    ring: Option<Box<Ring>>,
}

#[derive(Debug, Clone)]
struct Ring {
    samples: [u32; RttWindow::SIZE],
    next: u16,
    filled: u16,
    sum: u64,
}

impl RttWindow {
    /// Samples kept.
    pub const SIZE: usize = 100;

    /// Adds one sample (saturating at about 71 minutes).
    pub fn record(&mut self, rtt: Duration) {
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let r = self.ring.get_or_insert_with(|| {
            Box::new(Ring {
                samples: [0; Self::SIZE],
                next: 0,
                filled: 0,
                sum: 0,
            })
        });
        let slot = &mut r.samples[r.next as usize];
        if (r.filled as usize) == Self::SIZE {
            r.sum -= u64::from(*slot);
        } else {
            r.filled += 1;
        }
        *slot = us;
        r.sum += u64::from(us);
        r.next = ((r.next as usize + 1) % Self::SIZE) as u16;
    }

    /// Mean of the kept samples, or `None` before the first.
    pub fn average(&self) -> Option<Duration> {
        let r = self.ring.as_ref()?;
        Some(Duration::from_micros(r.sum / u64::from(r.filled.max(1))))
    }

    /// Number of samples kept (at most 100).
    pub fn samples(&self) -> usize {
        self.ring.as_ref().map_or(0, |r| r.filled as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_average_covers_only_the_last_hundred() {
        let mut w = RttWindow::default();
        assert_eq!(w.average(), None);
        for _ in 0..100 {
            w.record(Duration::from_micros(1000));
        }
        assert_eq!(w.average(), Some(Duration::from_micros(1000)));
        for _ in 0..100 {
            w.record(Duration::from_micros(10));
        }
        assert_eq!(w.average(), Some(Duration::from_micros(10)));
        assert_eq!(w.samples(), 100);
        assert_eq!(std::mem::size_of::<RttWindow>(), 8);
    }
}
