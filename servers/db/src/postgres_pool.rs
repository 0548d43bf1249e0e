//! The PostgreSQL backend's workers: writer threads on the primary and reader threads that send
//! reads to the read replicas (round-robin), or to the primary.
//!
//! # Routing
//!
//! ```text
//! batch, or a statement not starting SELECT/WITH/VALUES/EXPLAIN/SHOW/TABLE ─► writers (primary)
//! read, PRIMARY or no replicas ─► reader ─► primary, in a read-only session
//! read, ANY_REPLICA / AFTER_INDEX ─► reader ─► next healthy replica (round-robin)
//!      AFTER_INDEX: the replica must have replayed that WAL position within `replica_wait`,
//!      else the primary answers
//! a "read" that writes (the session is read-only, so it fails READ_ONLY) ─► writers
//! a replica that fails ─► skipped until a probe (at once, then every `replica_retry`) reaches it; the read goes to the primary
//! ```
//!
//! # Identities
//!
//! Every worker keeps server connections (db-server's own login, the servers' schema) and,
//! for the statements of clients (`sandboxed`), client connections that log in as the client
//! login ([`ClientLogin`]); a statement only ever runs on a connection of its caller's kind.
//!
//! # Commits and the commit index
//!
//! A write without an idempotency key runs in autocommit: PostgreSQL group-commits concurrent
//! transactions itself, so the writers need no group of their own. The commit index is the
//! primary's WAL position read after the commit; a replica that has replayed that position
//! sees the write. A write with a key runs in a transaction that claims the key (a concurrent
//! retry waits on it), runs, and stores the response before the commit
//! (the `idempotency` module), on the connection of its caller's kind, through
//! `_netmod_claim`/`_netmod_store` (see `ClientLogin::claim`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::batch;
use super::error::DbError;
use super::libpq::Param;
use super::monitor::Monitor;
use super::page::Limit;
use super::postgres::{self, ClientLogin, Endpoint, Pg};
use super::queue::JobQueue;
use super::reply::Replies;
use super::txn::Txns;
use super::workers::{starts_with_keyword, Job, Work};
use crate::idempotency::{self, Keyed, Ledger};
use crate::pool::{idempotency_cutoff, now_secs, AfterIndex, Counters, Pool, Worker, Workers};
use health::{lock, PrimaryGate, ReplicaHealth, Use};
use protocol::proto::{
    data_response, DataResponse, ErrorCode, ReadConsistency, Statement, StatementResult,
};

/// PostgreSQL pool configuration.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The primary's connection URL.
    pub url: String,
    /// Read replicas' URLs.
    pub replicas: Vec<String>,
    /// Reader threads (each with a connection to the primary and to each replica).
    pub readers: usize,
    /// Writer threads (each with a connection to the primary).
    pub writers: usize,
    /// Jobs waiting per queue before new ones are refused with OVERLOADED.
    pub queue: usize,
    /// Interactive transactions and cursors open at once.
    pub max_txns: usize,
    /// Of those, the most one client user may hold.
    pub max_txns_per_user: usize,
    /// How long an AFTER_INDEX read waits for a replica to catch up before the primary answers.
    pub replica_wait: Duration,
    /// How long a failed replica is left alone before it is tried again.
    pub replica_retry: Duration,
    /// How long a PostgreSQL server may leave a connection attempt or sent data unanswered
    /// before its connection counts as dead (see [`Endpoint`]); zero: the system's defaults.
    /// A primary that cannot be reached is tried again once a second, and requests that need
    /// it fail fast meanwhile rather than each waiting out this timeout.
    pub timeout: Duration,
    /// The login role client statements run as (see [`ClientLogin`]).
    pub client_role: String,
    /// Its password; `None`: the server trusts it, or libpq's password file has it.
    pub client_password: Option<String>,
    /// The longest a client statement may run (db-server's `--statement-timeout-ms`): the
    /// `statement_timeout` client connections keep between statements.
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// The defaults for the primary at `url`: no replicas, two readers and two writers, the
    /// client login `netmod_client`.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            replicas: Vec::new(),
            readers: 2,
            writers: 2,
            queue: 10_000,
            max_txns: 64,
            max_txns_per_user: crate::txn::DEFAULT_PER_USER,
            replica_wait: Duration::from_millis(100),
            replica_retry: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            client_role: crate::sandbox::PG_ROLE.to_string(),
            client_password: None,
            statement_timeout: crate::deadline::DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

/// How often a primary that could not be reached is tried again.
const PRIMARY_RETRY: Duration = Duration::from_secs(1);

/// A connection that fails after this long went silent (a timeout ran out) rather than being
/// closed by a server that restarted.
const SLOW_FAILURE: Duration = Duration::from_millis(500);

mod health;
mod reader;
#[allow(unused_imports)]
pub use reader::*;

/// Requests a worker takes from its queue at once (one round trip, one commit for writes).
const MAX_GROUP: usize = 64;

/// Connects to the primary (failing fast when it cannot), prepares the server's tables, and
/// starts the writers and readers on a [`Pool`]. Replicas are connected to lazily.
pub fn start(cfg: PgConfig, monitor: Arc<Monitor>) -> Result<Pool, DbError> {
    let primary = Endpoint::new(cfg.url.clone(), cfg.timeout).sharing_with(&cfg.client_role);
    let mut first = primary.connect()?;
    let mut login = first.create_meta(&cfg.client_role, cfg.client_password.clone())?;
    login.standing_timeout_ms = u64::try_from(cfg.statement_timeout.as_millis()).unwrap_or(0);
    let mut login = Arc::new(login);
    if login.refused().is_none() {
        if let Err(e) = primary.as_client(Arc::clone(&login)).connect() {
            log::error!(
                "{}; statements sent through test-server are refused until it can: see \
                 docs/operations.md, \"On PostgreSQL\"",
                e.message
            );
            login = login.refuse(format!("could not log in ({})", e.message));
        }
    }
    let client = primary.as_client(Arc::clone(&login));
    let counters = Counters::starting_at(first.current_lsn()?);
    let txns = Txns::new(
        postgres::txn_opener(primary.clone(), client.clone()),
        cfg.max_txns,
        cfg.max_txns_per_user,
        Arc::clone(&counters.committed),
        Arc::clone(&monitor),
    );
    let pool = Pool::start(
        cfg.queue,
        Arc::clone(&counters),
        Arc::clone(&monitor),
        txns,
        AfterIndex::Readers,
        |queues| {
            let gate = Arc::new(PrimaryGate::new(
                PRIMARY_RETRY,
                cfg.timeout.saturating_mul(2),
                primary.clone(),
            ));
            *health::lock(&gate.at()) = first.server();
            let mut spare = Some(first);
            // One writer and one reader more than configured, reserved for the servers' own
            // work (see `JobQueue`).
            let writers = (0..cfg.writers.max(1) + 1)
                .map(|_| Writer {
                    primary: primary.clone(),
                    gate: Arc::clone(&gate),
                    probe: false,
                    pg: spare.take(),
                    client_endpoint: client.clone(),
                    client: None,
                    login: Arc::clone(&login),
                    counters: Arc::clone(&counters),
                    monitor: Arc::clone(&monitor),
                })
                .collect();
            let rr = Arc::new(AtomicUsize::new(0));
            let health: Vec<Arc<Mutex<ReplicaHealth>>> =
                cfg.replicas.iter().map(|_| Arc::default()).collect();
            let readers = (0..cfg.readers.max(1) + 1)
                .map(|_| Reader {
                    endpoint: primary.clone(),
                    gate: Arc::clone(&gate),
                    primary: None,
                    client_endpoint: client.clone(),
                    client_primary: None,
                    login: Arc::clone(&login),
                    replicas: cfg
                        .replicas
                        .iter()
                        .zip(&health)
                        .map(|(u, h)| Replica {
                            endpoint: Endpoint::new(u.clone(), cfg.timeout),
                            pg: None,
                            client_endpoint: Endpoint::new(u.clone(), cfg.timeout)
                                .as_client(Arc::clone(&login)),
                            client_pg: None,
                            health: Arc::clone(h),
                            replayed: 0,
                        })
                        .collect(),
                    probe: None,
                    probe_primary: false,
                    rr: Arc::clone(&rr),
                    wait: cfg.replica_wait,
                    retry: cfg.replica_retry,
                    writers: queues.writers.clone(),
                    committed: Arc::clone(&counters.committed),
                    monitor: Arc::clone(&monitor),
                })
                .collect();
            Ok(Workers {
                readers,
                writers,
                reader_group: MAX_GROUP,
                writer_group: MAX_GROUP,
                reserved_readers: 1,
                reserved_writers: 1,
                primary: Some(gate.at()),
            })
        },
    )?;
    info!(
        "PostgreSQL primary {} connected, {} replica(s){}, {} writer(s) and {} reader(s), plus one of each for the servers' own work",
        primary.redacted(),
        cfg.replicas.len(),
        cfg.replicas
            .iter()
            .map(|u| format!(" {}", Endpoint::new(u.clone(), cfg.timeout).redacted()))
            .collect::<String>(),
        cfg.writers.max(1),
        cfg.readers.max(1)
    );
    Ok(pool)
}

/// A connection that is there and usable, connecting (again) if needed.
fn ensure<'a>(
    slot: &'a mut Option<Pg>,
    server: &Endpoint,
    setup: &str,
) -> Result<&'a mut Pg, DbError> {
    if slot.as_ref().is_some_and(Pg::is_ok) {
        if let Some(pg) = slot {
            return Ok(pg);
        }
    }
    *slot = None;
    let mut pg = server.connect()?;
    pg.set_session(setup)?;
    Ok(slot.insert(pg))
}

/// A writer thread: its connections to the primary, a server one and a client one.
struct Writer {
    primary: Endpoint,
    gate: Arc<PrimaryGate>,
    /// This writer is to try the primary again once its group is answered.
    probe: bool,
    pg: Option<Pg>,
    client_endpoint: Endpoint,
    client: Option<Pg>,
    login: Arc<ClientLogin>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl Worker for Writer {
    fn run_group(&mut self, jobs: &mut Vec<Job>, out: &mut Replies) {
        Writer::run_group(self, std::mem::take(jobs), out);
    }

    /// The primary's probe, when this worker claimed it (see [`PrimaryGate::pass`]).
    fn after_group(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.gate.probe(&mut self.pg, &self.primary, "");
        }
    }
}

impl Writer {
    /// Plain writes (no key, INSERT/UPDATE/DELETE) go together in one transaction and one
    /// round trip (with the WAL position read after the commit); the rest one by one, in the
    /// order they were queued.
    fn run_group(&mut self, jobs: Vec<Job>, out: &mut Replies) {
        let mut together: Vec<Job> = Vec::new();
        for job in jobs {
            let plain = matches!(&job.work, Work::Execute(st)
                if job.idempotency_key.is_empty()
                    && starts_with_keyword(&st.sql, &["INSERT", "UPDATE", "DELETE"]));
            // A group commits under one identity, and one user's: a client's statement may
            // change its transaction (read-only, say), which must not reach another user's.
            let same = together.first().is_none_or(|j| {
                j.caller.sandboxed == job.caller.sandboxed && j.caller.user == job.caller.user
            });
            if plain && same {
                together.push(job);
                continue;
            }
            if !together.is_empty() {
                self.run_together(std::mem::take(&mut together), out);
            }
            if plain {
                together.push(job);
                continue;
            }
            self.run(job, out);
        }
        if !together.is_empty() {
            self.run_together(together, out);
        }
    }

    fn run(&mut self, job: Job, out: &mut Replies) {
        let start = Instant::now();
        let client = job.caller.sandboxed;
        let login = Arc::clone(&self.login);
        let (sent, r) = self.on_connection(client, |pg| write(pg, &job, &login));
        if sent {
            self.settle(client, r.as_ref().err(), start.elapsed());
        }
        let mut job = job;
        if let Some(pg) = self.client.as_mut().filter(|_| client) {
            job.reply.wrote(&pg.take_written());
        }
        if let Work::Execute(st) = &job.work {
            self.monitor.record(&st.sql, start.elapsed(), r.is_ok());
        }
        if let Ok(resp) = &r {
            self.committed(resp.commit_index, 1);
        }
        job.reply.hold(r, out);
    }

    /// The connection for a caller's kind (`client`: the client login's), connecting if
    /// needed; a primary known to be down fails at once (see [`PrimaryGate`]).
    fn connection(&mut self, client: bool) -> Result<&mut Pg, DbError> {
        if client {
            self.login.usable()?;
            let pg = self.gate.connect_client(
                &mut self.client,
                &self.client_endpoint,
                "",
                &mut self.probe,
            )?;
            // A client's write may write more than its text says (a function, a trigger):
            // its notice names what PostgreSQL says it wrote.
            pg.track_written(true);
            pg.take_written(); // what an attempt that failed left
            Ok(pg)
        } else {
            self.gate
                .connect(&mut self.pg, &self.primary, "", &mut self.probe)
        }
    }

    /// Runs `f` on the connection for a caller's kind, and once more on a new one when the
    /// client connection's reset was cut short (then nothing of `f`'s work ran). The flag
    /// says whether `f` ran at all (false: the gate refused the connection).
    fn on_connection<T>(
        &mut self,
        client: bool,
        mut f: impl FnMut(&mut Pg) -> Result<T, DbError>,
    ) -> (bool, Result<T, DbError>) {
        let mut out = (false, Err(DbError::new(ErrorCode::Unavailable, "not run")));
        for _ in 0..2 {
            out = match self.connection(client) {
                Ok(pg) => (true, f(pg)),
                Err(e) => (false, Err(e)),
            };
            if !self.reset_failed(client, &out.1) {
                break;
            }
        }
        out
    }

    /// True when `r` failed because the client connection's reset was cut short (see
    /// [`Pg::reset_failed`]): nothing of the request ran, and the connection is dropped, so
    /// it may go again on a new one.
    fn reset_failed<T>(&mut self, client: bool, r: &Result<T, DbError>) -> bool {
        if !client || r.is_ok() || !self.client.as_ref().is_some_and(Pg::reset_failed) {
            return false;
        }
        self.client = None;
        true
    }

    /// After a request on the connection of a caller's kind (see [`PrimaryGate::settle`]).
    fn settle(&mut self, client: bool, failed: Option<&DbError>, took: Duration) {
        if client {
            PrimaryGate::settle_client(&mut self.client);
        } else {
            self.gate.settle(&mut self.pg, failed, took);
        }
    }

    fn committed(&mut self, index: u64, writes: u64) {
        if self.counters.commit(index, writes) {
            self.prune();
        }
    }

    /// Group commit: the writes run in one implicit transaction, pipelined, then the WAL
    /// position is read (see [`Pg::execute_group`]).
    fn run_together(&mut self, jobs: Vec<Job>, out: &mut Replies) {
        let start = Instant::now();
        let client = run_as_client(&jobs);
        let (_, ran) = self.on_connection(client, |pg| {
            let sts: Vec<(&Statement, Limit)> = jobs.iter().filter_map(statement).collect();
            let (outcomes, lsn) = pg.execute_group(&sts, Some("SELECT pg_current_wal_lsn()"))?;
            let index = match lsn.as_deref().and_then(postgres::parse_lsn) {
                Some(i) => i,
                None => pg.current_lsn()?,
            };
            Ok((outcomes, index))
        });
        let (outcomes, index) = match ran {
            Ok(r) => {
                self.gate.answered();
                r
            }
            Err(e) => {
                // The connection failed: whether the group committed is unknown.
                self.settle(client, Some(&e), start.elapsed());
                for job in jobs {
                    job.reply.hold(Err(e.clone()), out);
                }
                return;
            }
        };
        let wrote = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
        let written = match self.client.as_mut().filter(|_| client) {
            Some(pg) => pg.take_written(),
            None => Vec::new(),
        };
        for (mut job, outcome) in jobs.into_iter().zip(outcomes) {
            job.reply.wrote(&written);
            if let Work::Execute(st) = &job.work {
                self.monitor
                    .record(&st.sql, start.elapsed(), outcome.is_ok());
            }
            let r = outcome.map(|(res, _)| respond(data_response::Kind::Result(res), index));
            job.reply.hold(r, out);
        }
        if wrote > 0 {
            self.committed(index, wrote);
        }
    }

    fn prune(&mut self) {
        if let Some(pg) = self.pg.as_mut() {
            let cutoff = idempotency_cutoff();
            if let Err(e) = pg.scalar(
                "DELETE FROM _netmod_idempotency WHERE created < $1",
                &[Param::Int(cutoff)],
            ) {
                warn!("pruning idempotency keys failed: {e}");
            }
        }
    }
}

fn respond(kind: data_response::Kind, index: u64) -> DataResponse {
    DataResponse {
        kind: Some(kind),
        commit_index: index,
    }
}

/// A write's connection as its idempotency ledger ([`ClientLogin::claim`] on either kind).
struct Records<'a> {
    pg: &'a mut Pg,
    login: &'a ClientLogin,
}

impl Ledger for Records<'_> {
    fn claim(&mut self, key: &str, now: i64) -> Result<Option<Vec<u8>>, DbError> {
        self.login.claim(self.pg, key, now)
    }

    fn store(&mut self, key: &str, _now: i64, response: &[u8]) -> Result<(), DbError> {
        self.login.store(self.pg, key, response)
    }
}

/// Runs one write on the primary, on the connection of its caller's kind; see the module
/// docs: autocommit for a lone statement without a key, else a transaction around claim →
/// run → store ([`idempotency::run_keyed`]). The commit index is the WAL position after the
/// commit (after the rollback, for a write answered from its record).
fn write(pg: &mut Pg, job: &Job, login: &ClientLogin) -> Result<DataResponse, DbError> {
    let key = job.idempotency_key.as_str();
    if let (Work::Execute(st), true) = (&job.work, key.is_empty()) {
        let (res, _) = pg.execute(st, job.limit)?;
        let index = pg.current_lsn()?;
        return Ok(respond(data_response::Kind::Result(res), index));
    }
    pg.exec("BEGIN")?;
    let mut records = Records { pg, login };
    let done = idempotency::run_keyed(&mut records, key, now_secs(), |r| match &job.work {
        Work::Execute(st) => Ok(data_response::Kind::Result(r.pg.execute(st, job.limit)?.0)),
        Work::Batch(b) => {
            let pg = &mut *r.pg;
            Ok(data_response::Kind::Batch(batch::run(
                b,
                job.limit,
                |st, l, may_fail| {
                    if !may_fail {
                        return pg.execute(st, l).map(|r| r.0);
                    }
                    // A failed statement fails a PostgreSQL transaction: a savepoint keeps a
                    // step that may fail from taking the batch with it.
                    pg.exec("SAVEPOINT step")?;
                    match pg.execute(st, l) {
                        Ok((r, _)) => {
                            pg.exec("RELEASE step")?;
                            Ok(r)
                        }
                        Err(e) => {
                            pg.exec("ROLLBACK TO step; RELEASE step")?;
                            Err(e)
                        }
                    }
                },
            )?))
        }
    });
    let kind = match done {
        Ok(Keyed::Ran(kind)) => {
            pg.exec("COMMIT")?;
            kind
        }
        Ok(Keyed::Stored(kind)) => {
            pg.exec("ROLLBACK")?;
            kind
        }
        Err(e) => {
            let _ = pg.exec("ROLLBACK");
            return Err(e);
        }
    };
    Ok(respond(kind, pg.current_lsn()?))
}
