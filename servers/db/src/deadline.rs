//! When a client statement must stop, whatever it is doing.
//!
//! Every client statement (`DataRequest.sandboxed`) carries a deadline: the request's
//! `timeout_ms` from when db-server took it, capped by the server's maximum
//! (`--statement-timeout-ms`). The backends stop a statement past it in the database itself,
//! so that the worker (and, on PostgreSQL, the server backend) is free again at once: SQLite
//! through a progress handler that this module's [`Deadline`] answers, PostgreSQL through
//! `statement_timeout` set before each client statement. The statement is answered `TIMEOUT`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server's maximum for a client statement when none is configured.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A statement's deadline, shared with what checks it from inside the database library
/// (SQLite calls its progress handler every few thousand instructions).
#[derive(Debug, Default)]
pub struct Deadline {
    /// Nanoseconds since [`base`], plus one; 0: none.
    at: AtomicU64,
}

/// The instant deadlines are counted from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Deadline {
    /// Sets (or, with `None`, clears) the deadline.
    pub fn set(&self, at: Option<Instant>) {
        let v = at.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(base()).as_nanos())
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1)
        });
        self.at.store(v, Ordering::Release);
    }

    /// True once the deadline set has passed.
    pub fn passed(&self) -> bool {
        match self.at.load(Ordering::Acquire) {
            0 => false,
            at => {
                let now = u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX);
                now.saturating_add(1) >= at
            }
        }
    }

    /// Runs `f` under deadline `at`, cleared afterwards.
    pub fn during<T>(&self, at: Option<Instant>, f: impl FnOnce() -> T) -> T {
        struct Clear<'a>(&'a Deadline);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.set(None);
            }
        }
        self.set(at);
        let _clear = Clear(self);
        f()
    }
}

/// The time left until `at`, at least a millisecond (PostgreSQL reads 0 as "no timeout").
pub fn remaining_ms(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(Instant::now()).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_and_is_cleared_after_its_statement() {
        let d = Deadline::default();
        assert!(!d.passed(), "none set");
        d.during(Some(Instant::now()), || assert!(d.passed()));
        assert!(!d.passed(), "cleared");
        let later = Instant::now() + Duration::from_secs(60);
        d.during(Some(later), || assert!(!d.passed()));
        assert!(remaining_ms(Instant::now()) == 1);
        assert!(remaining_ms(later) > 59_000);
    }
}
