//! Whether the PostgreSQL servers answer, as db-server's workers share it: the primary's
//! gate (requests fail at once while it is unreachable; one worker at a time tries it again)
//! and each replica's health (skipped by every reader while down; one probe at a time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{ensure, SLOW_FAILURE};
use crate::error::DbError;
use crate::postgres::{Endpoint, Pg};
use protocol::proto::ErrorCode;

/// Fails requests for the primary fast while it is unreachable.
///
/// Once a connection to the primary cannot be made (refused, or timed out), or one went
/// silent (it failed only after [`SLOW_FAILURE`]), requests that need it are answered
/// `UNAVAILABLE` at once, instead of each worker waiting out its own timeout; every `retry`
/// one worker tries again — after answering its own requests, so that no request waits on
/// that try (the others keep answering at once until it ends, bounded by `probe`). A
/// success opens the gate.
///
/// Every connection made before the gate last closed is dropped at its next use: after a
/// failover (a multi-host URL, docs/operations.md) it may lead to the old primary's host,
/// gone without a word, where a request would wait out the whole timeout and close the gate
/// again just as the new primary answers.
pub(super) struct PrimaryGate {
    closed: AtomicBool,
    /// How many times the gate has closed.
    outages: AtomicU64,
    /// The server the latest connection reached, `host:port`; empty while the gate is closed
    /// (reported in db-server's statistics: after a failover, the new primary).
    at: Arc<Mutex<String>>,
    /// The primary's URL: when the gate closes, the host that went silent is tried last.
    endpoint: Endpoint,
    retry: Duration,
    probe: Duration,
    state: Mutex<Option<Closed>>,
}

struct Closed {
    next_try: Instant,
    why: String,
}

impl PrimaryGate {
    pub(super) fn new(retry: Duration, probe: Duration, endpoint: Endpoint) -> PrimaryGate {
        PrimaryGate {
            closed: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            at: Arc::default(),
            endpoint,
            retry,
            probe,
            state: Mutex::new(None),
        }
    }

    /// `Ok` when the caller may use the primary: it is not known to be down. When it is down
    /// and a try is due, `probe` is set: the caller answers its requests, then tries
    /// ([`PrimaryGate::probe`]).
    pub(super) fn pass(&self, probe: &mut bool) -> Result<(), DbError> {
        if !self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(closed) = state.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let wait = closed.next_try.saturating_duration_since(now);
        let refused = DbError::new(
            ErrorCode::Unavailable,
            format!(
                "the PostgreSQL primary is unreachable ({}); next try within {:.1} s",
                closed.why,
                wait.as_secs_f64()
            ),
        );
        if wait.is_zero() {
            closed.next_try = now + self.probe + self.retry;
            *probe = true;
        }
        Err(refused)
    }

    /// A usable connection in `slot` made since the gate last closed, connecting if needed.
    fn ensure<'a>(
        &self,
        slot: &'a mut Option<Pg>,
        server: &Endpoint,
        setup: &str,
    ) -> Result<&'a mut Pg, DbError> {
        let outages = self.outages.load(Ordering::Acquire);
        if slot.as_ref().is_some_and(|pg| pg.outages_before < outages) {
            *slot = None;
        }
        let fresh = !slot.as_ref().is_some_and(Pg::is_ok);
        let pg = ensure(slot, server, setup)?;
        pg.outages_before = pg.outages_before.max(outages);
        if fresh {
            let at = pg.server();
            let mut now = lock(&self.at);
            if *now != at {
                *now = at;
            }
        }
        Ok(pg)
    }

    /// Where the latest connection to the primary went, `host:port` (empty while the gate is
    /// closed), shared with the pool's statistics.
    pub(super) fn at(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.at)
    }

    /// Tries the primary again (see [`PrimaryGate::pass`]): a new connection in `slot`.
    pub(super) fn probe(&self, slot: &mut Option<Pg>, server: &Endpoint, setup: &str) {
        *slot = None;
        match self.ensure(slot, server, setup) {
            Ok(pg) => {
                let at = pg.server();
                if self.opened() {
                    info!("the PostgreSQL primary answers again, at {at}");
                }
            }
            Err(e) => self.failed(&e),
        }
    }

    /// The primary failed a connection: closed for `retry`.
    pub(super) fn failed(&self, e: &DbError) {
        self.close(e, false);
    }

    /// Closes the gate for `retry`. `silent`: an open connection went silent (the timeout ran
    /// out), so its host is tried last from now on; a refused connection (a standby still
    /// read-only while it is promoted, say) moves nothing.
    fn close(&self, e: &DbError, silent: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.is_none() {
            self.outages.fetch_add(1, Ordering::AcqRel);
            let mut at = lock(&self.at);
            if silent && !at.is_empty() {
                self.endpoint.try_last(&at);
            }
            at.clear();
            drop(at);
            warn!(
                "the PostgreSQL primary is unreachable ({}): requests that need it fail at once, retrying every {:?}",
                e.message, self.retry
            );
        }
        *state = Some(Closed {
            next_try: Instant::now() + self.retry,
            why: e.message.clone(),
        });
        self.closed.store(true, Ordering::Release);
    }

    /// The primary answered.
    pub(super) fn answered(&self) {
        if self.opened() {
            info!("the PostgreSQL primary answers again");
        }
    }

    /// Opens the gate; true if it was closed.
    fn opened(&self) -> bool {
        if !self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let was = state.take().is_some();
        self.closed.store(false, Ordering::Release);
        was
    }

    /// The connection in `slot` after a request, which failed with `failed` after `took` if
    /// it did. A success means the primary answered. A connection that broke at once was
    /// closed by the server (a restart): it is dropped and the next request connects again.
    /// One that broke slowly went silent (the timeout ran out): the primary is unreachable.
    /// Only a success opens the gate: a request the gate refused leaves an idle connection
    /// that merely looks usable, which says nothing of the primary.
    pub(super) fn settle(&self, slot: &mut Option<Pg>, failed: Option<&DbError>, took: Duration) {
        if slot.as_ref().is_some_and(Pg::is_ok) {
            if failed.is_none() {
                self.answered();
            }
            return;
        }
        *slot = None;
        if let Some(e) = failed.filter(|_| took >= SLOW_FAILURE) {
            self.close(e, true);
        }
    }

    /// After a request on a client connection: a broken one is dropped (the next request
    /// connects again). A client connection never closes the gate: a client statement may
    /// break its own connection (`pg_terminate_backend(pg_backend_pid())`, after as long as
    /// it likes), which says nothing of the primary.
    pub(super) fn settle_client(slot: &mut Option<Pg>) {
        if !slot.as_ref().is_some_and(Pg::is_ok) {
            *slot = None;
        }
    }

    /// A usable client connection to the primary in `slot`, unless the gate is closed. A
    /// failure to connect does not close the gate either (the client login may be refused
    /// while the primary serves db-server's own work).
    pub(super) fn connect_client<'a>(
        &self,
        slot: &'a mut Option<Pg>,
        client: &Endpoint,
        setup: &str,
        probe: &mut bool,
    ) -> Result<&'a mut Pg, DbError> {
        self.pass(probe)?;
        self.ensure(slot, client, setup)
    }

    /// A usable connection to the primary in `slot`, unless the gate is closed (`probe`: see
    /// [`PrimaryGate::pass`]).
    pub(super) fn connect<'a>(
        &self,
        slot: &'a mut Option<Pg>,
        server: &Endpoint,
        setup: &str,
        probe: &mut bool,
    ) -> Result<&'a mut Pg, DbError> {
        self.pass(probe)?;
        match self.ensure(slot, server, setup) {
            Ok(pg) => Ok(pg),
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }
}

/// What the readers know of one replica, shared among them. A replica that failed is left
/// alone for `retry`; then one reader tries it again, after answering its reads elsewhere, so
/// that no read waits on a connection attempt to a host that may be gone.
#[derive(Debug, Default)]
pub(super) struct ReplicaHealth {
    pub(super) down_until: Option<Instant>,
    pub(super) probing: bool,
    /// How many times it went down: each reader drops its connections made before the
    /// latest (a multi-host URL may lead elsewhere now; see [`PrimaryGate`]).
    pub(super) outages: u64,
}

/// Where a replica stands for a reader about to use it.
pub(super) enum Use {
    /// Up: read there, on a connection made since its latest outage (the count).
    Read(u64),
    /// Down: skip it.
    Skip,
    /// Down and due a try, which this reader makes after its reads.
    Probe,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
