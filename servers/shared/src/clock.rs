//! Wall-clock time as the programs store and compare it: whole seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now (0 if the clock is set before 1970).
pub fn now_secs() -> u64 {
    secs_since_epoch(SystemTime::now())
}

/// Seconds since the Unix epoch at `t` (0 before 1970).
pub fn secs_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
