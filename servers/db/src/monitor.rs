//! Query monitoring: per statement text, count, errors, mean and p99 latency; a slow-query log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use log::warn;

use protocol::proto::StatementStats;

/// Statement texts tracked separately; the rest are counted under `<other>`.
const MAX_SHAPES: usize = 1000;

#[derive(Debug)]
struct Entry {
    count: u64,
    errors: u64,
    sum_us: u64,
    hist: Option<Histogram<u64>>,
}

/// Shared by every worker.
#[derive(Debug)]
pub struct Monitor {
    slow: Option<Duration>,
    map: Mutex<HashMap<String, Entry>>,
}

impl Monitor {
    /// Logs statements slower than `slow` (none when `None`).
    pub fn new(slow: Option<Duration>) -> Self {
        Monitor {
            slow,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records one execution of `sql`.
    pub fn record(&self, sql: &str, took: Duration, ok: bool) {
        let sql = super::sandbox::unmarked(sql);
        if let Some(slow) = self.slow {
            if took >= slow {
                warn!(
                    "Slow query ({:.1} ms): {}",
                    took.as_secs_f64() * 1e3,
                    sql.trim()
                );
            }
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key = if map.len() >= MAX_SHAPES && !map.contains_key(sql) {
            "<other>"
        } else {
            sql
        };
        if !map.contains_key(key) {
            map.insert(
                key.to_string(),
                Entry {
                    count: 0,
                    errors: 0,
                    sum_us: 0,
                    hist: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
                },
            );
        }
        if let Some(e) = map.get_mut(key) {
            e.count += 1;
            e.errors += u64::from(!ok);
            e.sum_us = e.sum_us.saturating_add(us);
            if let Some(h) = e.hist.as_mut() {
                let _ = h.record(us);
            }
        }
    }

    /// Every statement's figures, most executed first.
    pub fn snapshot(&self) -> Vec<StatementStats> {
        let map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<StatementStats> = map
            .iter()
            .map(|(sql, e)| StatementStats {
                sql: sql.clone(),
                count: e.count,
                errors: e.errors,
                mean_us: e.sum_us as f64 / e.count.max(1) as f64,
                p99_us: e
                    .hist
                    .as_ref()
                    .map_or(0.0, |h| h.value_at_quantile(0.99) as f64),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.sql.cmp(&b.sql)));
        out
    }
}
