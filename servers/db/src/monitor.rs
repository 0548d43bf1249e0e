//! Query monitoring: per statement text, count, errors, mean and p99 latency; a slow-query log.
//!
//! Statements are told apart by a 64-bit hash of their whole text, computed once per execution
//! outside any lock; each keeps only the first `SHOWN` (256) bytes of its text for the report. The
//! table is split in `SHARDS` (8) locks (workers rarely wait on each other) and holds at most
//! `MAX_SHAPES` (1,000) statements (the rest are counted under `<other>`), so its memory is bounded
//! whatever clients send: about 1,000 × (256 B + a 2-significant-digit histogram, ~1.4 KB).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use log::warn;

use protocol::proto::StatementStats;

/// Statements tracked separately; the rest are counted under `<other>`.
const MAX_SHAPES: usize = 1000;
/// Bytes of a statement's text kept for the report (cut on a character boundary, then `…`).
const SHOWN: usize = 256;
/// Locks the table is split into.
const SHARDS: usize = 8;
/// The key of `<other>`.
const OTHER: u64 = 0;

#[derive(Debug)]
struct Entry {
    shown: Box<str>,
    count: u64,
    errors: u64,
    sum_us: u64,
    hist: Option<Histogram<u64>>,
}

impl Entry {
    fn new(shown: Box<str>) -> Self {
        Entry {
            shown,
            count: 0,
            errors: 0,
            sum_us: 0,
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
        }
    }

    fn add(&mut self, us: u64, ok: bool) {
        self.count += 1;
        self.errors += u64::from(!ok);
        self.sum_us = self.sum_us.saturating_add(us);
        if let Some(h) = self.hist.as_mut() {
            let _ = h.record(us);
        }
    }
}

/// Shared by every worker.
#[derive(Debug)]
pub struct Monitor {
    slow: Option<Duration>,
    shards: [Mutex<HashMap<u64, Entry>>; SHARDS],
    hasher: std::hash::RandomState,
}

/// The first `SHOWN` bytes of `sql`, marked when cut.
fn shown(sql: &str) -> Box<str> {
    if sql.len() <= SHOWN {
        return sql.into();
    }
    let mut end = SHOWN;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &sql[..end], sql.len()).into()
}

impl Monitor {
    /// Logs statements slower than `slow` (none when `None`).
    pub fn new(slow: Option<Duration>) -> Self {
        Monitor {
            slow,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Records one execution of `sql`.
    pub fn record(&self, sql: &str, took: Duration, ok: bool) {
        if let Some(slow) = self.slow {
            if took >= slow {
                warn!(
                    "Slow query ({:.1} ms): {}",
                    took.as_secs_f64() * 1e3,
                    shared::logging::Printable::new(sql.trim().as_bytes(), 1024)
                );
            }
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut h = self.hasher.build_hasher();
        h.write(sql.as_bytes());
        let key = h.finish().max(OTHER + 1);
        {
            let mut map = self.shard(key);
            if map.contains_key(&key) || map.len() < MAX_SHAPES / SHARDS {
                return map
                    .entry(key)
                    .or_insert_with(|| Entry::new(shown(sql)))
                    .add(us, ok);
            }
        }
        // A full shard: counted under `<other>`, which lives in the shard of its own key.
        self.shard(OTHER)
            .entry(OTHER)
            .or_insert_with(|| Entry::new("<other>".into()))
            .add(us, ok);
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.shards[key as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every statement's figures, most executed first.
    pub fn snapshot(&self) -> Vec<StatementStats> {
        let mut out: Vec<StatementStats> = Vec::new();
        for shard in 0..SHARDS {
            let map = self.shard(shard as u64);
            out.extend(map.values().map(|e| {
                StatementStats {
                    sql: e.shown.to_string(),
                    count: e.count,
                    errors: e.errors,
                    mean_us: e.sum_us as f64 / e.count.max(1) as f64,
                    p99_us: e
                        .hist
                        .as_ref()
                        .map_or(0.0, |h| h.value_at_quantile(0.99) as f64),
                }
            }));
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.sql.cmp(&b.sql)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_many_statements_stay_bounded() {
        let m = Monitor::new(None);
        let long = format!("SELECT '{}'", "x".repeat(1 << 20));
        for _ in 0..3 {
            m.record(&long, Duration::from_micros(10), true);
        }
        for i in 0..2 * MAX_SHAPES {
            m.record(&format!("SELECT {i}"), Duration::from_micros(5), i % 2 == 0);
        }
        let s = m.snapshot();
        assert!(s.len() <= MAX_SHAPES + 1, "{} shapes", s.len());
        assert!(
            s.iter().all(|st| st.sql.len() <= SHOWN + 32),
            "a text kept whole"
        );
        let cut = s
            .iter()
            .find(|st| st.sql.starts_with("SELECT 'xxx"))
            .unwrap();
        assert_eq!(cut.count, 3);
        assert!(
            cut.sql.ends_with(&format!("… ({} bytes)", long.len())),
            "{}",
            cut.sql
        );
        let other: Vec<_> = s.iter().filter(|st| st.sql == "<other>").collect();
        assert_eq!(other.len(), 1);
        let total: u64 = s.iter().map(|st| st.count).sum();
        assert_eq!(
            total,
            3 + 2 * MAX_SHAPES as u64,
            "every execution counted once"
        );
        assert_eq!(s.iter().map(|st| st.errors).sum::<u64>(), MAX_SHAPES as u64);
    }
}
