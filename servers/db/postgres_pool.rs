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
//! a replica that fails ─► skipped for `replica_retry`, the read goes to the primary
//! ```
//!
//! # Commits and the commit index
//!
//! A write without an idempotency key runs in autocommit: PostgreSQL group-commits concurrent
//! transactions itself, so the writers need no group of their own. The commit index is the
//! primary's WAL position read after the commit; a replica that has replayed that position
//! sees the write. A write with a key runs in a transaction that first claims the key (a
//! concurrent retry waits on it), stores the response with the write, and records the commit
//! index beside it after the commit, so a retry gets the same reply.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use prost::Message as _;

use super::batch;
use super::error::DbError;
use super::libpq::Param;
use super::monitor::Monitor;
use super::postgres::{self, Pg};
use super::txn::Txns;
use super::workers::{check_allowed, enqueue, starts_with_keyword, Job, Work, READ_KEYWORDS};
use crate::proto::{data_response, DataResponse, ErrorCode, ReadConsistency, StatsResult};

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
    /// How long an AFTER_INDEX read waits for a replica to catch up before the primary answers.
    pub replica_wait: Duration,
    /// How long a failed replica is left alone before it is tried again.
    pub replica_retry: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    committed: Arc<AtomicU64>,
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The PostgreSQL workers; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PgPool {
    /// Interactive transactions and cursors (on the primary).
    pub txns: Txns,
    readers: SyncSender<Job>,
    writers: SyncSender<Job>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<(), DbError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map(|_| ())
        .map_err(|e| DbError::new(ErrorCode::Internal, format!("cannot start a thread: {e}")))
}

fn next_job(jobs: &Mutex<Receiver<Job>>) -> Option<Job> {
    let rx = match jobs.lock() {
        Ok(rx) => rx,
        Err(p) => p.into_inner(),
    };
    rx.recv().ok()
}

impl PgPool {
    /// Connects to the primary (failing fast when it cannot), prepares the server's tables,
    /// and starts the writers and readers. Replicas are connected to lazily.
    pub fn start(cfg: PgConfig, monitor: Arc<Monitor>) -> Result<PgPool, DbError> {
        let mut first = Pg::connect(&cfg.url)?;
        first.create_meta()?;
        let counters = Arc::new(Counters::default());
        counters
            .committed
            .store(first.current_lsn()?, Ordering::Release);
        let (wtx, wrx) = mpsc::sync_channel::<Job>(cfg.queue);
        let (rtx, rrx) = mpsc::sync_channel::<Job>(cfg.queue);
        let (wrx, rrx) = (Arc::new(Mutex::new(wrx)), Arc::new(Mutex::new(rrx)));
        let mut spare = Some(first);
        for i in 0..cfg.writers.max(1) {
            let mut w = Writer {
                url: cfg.url.clone(),
                pg: spare.take(),
                counters: Arc::clone(&counters),
                monitor: Arc::clone(&monitor),
            };
            let jobs = Arc::clone(&wrx);
            spawn(format!("db-writer-{i}"), move || {
                while let Some(job) = next_job(&jobs) {
                    w.run(job);
                }
            })?;
        }
        let rr = Arc::new(AtomicUsize::new(0));
        for i in 0..cfg.readers.max(1) {
            let mut r = Reader {
                url: cfg.url.clone(),
                primary: None,
                replicas: cfg
                    .replicas
                    .iter()
                    .map(|u| Replica {
                        url: u.clone(),
                        pg: None,
                        down_until: None,
                    })
                    .collect(),
                rr: Arc::clone(&rr),
                wait: cfg.replica_wait,
                retry: cfg.replica_retry,
                writers: wtx.clone(),
                committed: Arc::clone(&counters.committed),
                monitor: Arc::clone(&monitor),
            };
            let jobs = Arc::clone(&rrx);
            spawn(format!("db-reader-{i}"), move || {
                while let Some(job) = next_job(&jobs) {
                    r.run(job);
                }
            })?;
        }
        info!(
            "PostgreSQL primary {} connected, {} replica(s){}, {} writer(s), {} reader(s)",
            redact(&cfg.url),
            cfg.replicas.len(),
            cfg.replicas
                .iter()
                .map(|u| format!(" {}", redact(u)))
                .collect::<String>(),
            cfg.writers.max(1),
            cfg.readers.max(1)
        );
        let txns = Txns::new(
            postgres::txn_opener(cfg.url.clone()),
            cfg.max_txns,
            Arc::clone(&counters.committed),
            Arc::clone(&monitor),
        );
        Ok(PgPool {
            txns,
            readers: rtx,
            writers: wtx,
            counters,
            monitor,
        })
    }

    /// Queues `job`: statements that look like reads to the readers, the rest to the writers.
    pub fn submit(&self, job: Job) {
        if let Err(e) = check_allowed(&job.work) {
            return (job.reply)(Err(e));
        }
        match &job.work {
            Work::Execute(st) if starts_with_keyword(&st.sql, READ_KEYWORDS) => {
                enqueue(&self.readers, job)
            }
            _ => enqueue(&self.writers, job),
        }
    }

    /// The highest commit index this server has acknowledged.
    pub fn committed_index(&self) -> u64 {
        self.counters.committed.load(Ordering::Acquire)
    }

    /// Query statistics and commit counters (every write is its own commit here; PostgreSQL
    /// shares the WAL flushes of concurrent commits).
    pub fn stats(&self) -> StatsResult {
        StatsResult {
            statements: self.monitor.snapshot(),
            commits: self.counters.commits.load(Ordering::Relaxed),
            grouped_writes: self.counters.writes.load(Ordering::Relaxed),
            commit_index: self.committed_index(),
        }
    }
}

/// A connection that is there and usable, connecting (again) if needed.
fn ensure<'a>(slot: &'a mut Option<Pg>, url: &str, setup: &str) -> Result<&'a mut Pg, DbError> {
    if slot.as_ref().is_some_and(Pg::is_ok) {
        if let Some(pg) = slot {
            return Ok(pg);
        }
    }
    *slot = None;
    let mut pg = Pg::connect(url)?;
    if !setup.is_empty() {
        pg.exec(setup)?;
    }
    Ok(slot.insert(pg))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Idempotency records are kept this long.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

struct Writer {
    url: String,
    pg: Option<Pg>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

enum Outcome {
    Fresh(data_response::Kind),
    Stored,
}

impl Writer {
    fn run(&mut self, job: Job) {
        let start = Instant::now();
        let r = match ensure(&mut self.pg, &self.url, "") {
            Ok(pg) => write(pg, &job),
            Err(e) => Err(e),
        };
        if let Work::Execute(st) = &job.work {
            self.monitor.record(&st.sql, start.elapsed(), r.is_ok());
        }
        if let Ok(resp) = &r {
            self.counters
                .committed
                .fetch_max(resp.commit_index, Ordering::AcqRel);
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
            if resp.commit_index % 1000 == 0 {
                self.prune();
            }
        }
        (job.reply)(r);
    }

    fn prune(&mut self) {
        if let Some(pg) = self.pg.as_mut() {
            let cutoff = now_secs() - IDEMPOTENCY_TTL_SECS;
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

/// Runs one write on the primary; see the module docs.
fn write(pg: &mut Pg, job: &Job) -> Result<DataResponse, DbError> {
    let key = job.idempotency_key.as_str();
    if let (Work::Execute(st), true) = (&job.work, key.is_empty()) {
        let (res, _) = pg.execute(st, job.limit)?;
        let index = pg.current_lsn()?;
        return Ok(respond(data_response::Kind::Result(res), index));
    }
    pg.exec("BEGIN")?;
    let outcome = (|| -> Result<Outcome, DbError> {
        if !key.is_empty() {
            let claimed = pg.scalar(
                "INSERT INTO _netmod_idempotency (key, created) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING RETURNING 1",
                &[Param::Text(key), Param::Int(now_secs())],
            )?;
            if claimed.is_none() {
                return Ok(Outcome::Stored);
            }
        }
        let kind = match &job.work {
            Work::Execute(st) => data_response::Kind::Result(pg.execute(st, job.limit)?.0),
            Work::Batch(b) => {
                data_response::Kind::Batch(batch::run(b, job.limit, |st, l, may_fail| {
                    if !may_fail {
                        return pg.execute(st, l).map(|r| r.0);
                    }
                    // A failed statement fails a PostgreSQL transaction: a savepoint keeps a step
                    // that may fail from taking the batch with it.
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
                })?)
            }
        };
        if !key.is_empty() {
            let stored = respond(kind.clone(), 0).encode_to_vec();
            pg.scalar(
                "UPDATE _netmod_idempotency SET response = $2 WHERE key = $1",
                &[Param::Text(key), Param::Blob(&stored)],
            )?;
        }
        Ok(Outcome::Fresh(kind))
    })();
    match outcome {
        Ok(Outcome::Fresh(kind)) => {
            pg.exec("COMMIT")?;
            let index = if key.is_empty() {
                pg.current_lsn()?
            } else {
                let stored = pg.scalar(
                    "UPDATE _netmod_idempotency
                     SET commit_index = (pg_current_wal_lsn() - '0/0')::bigint
                     WHERE key = $1 RETURNING commit_index",
                    &[Param::Text(key)],
                )?;
                match stored.as_deref().and_then(|t| std::str::from_utf8(t).ok()) {
                    Some(t) => t.parse().unwrap_or(0),
                    None => pg.current_lsn()?,
                }
            };
            Ok(respond(kind, index))
        }
        Ok(Outcome::Stored) => {
            pg.exec("ROLLBACK")?;
            stored_response(pg, key)
        }
        Err(e) => {
            let _ = pg.exec("ROLLBACK");
            Err(e)
        }
    }
}

/// The response stored with an idempotency key, with the commit index recorded after its
/// commit (or, if the server stopped before recording it, the current WAL position, which is
/// past that commit).
fn stored_response(pg: &mut Pg, key: &str) -> Result<DataResponse, DbError> {
    let bytes = pg
        .scalar(
            "SELECT response FROM _netmod_idempotency WHERE key = $1",
            &[Param::Text(key)],
        )?
        .and_then(|text| postgres::unhex(&text))
        .ok_or_else(|| DbError::new(ErrorCode::Internal, "stored response missing"))?;
    let mut resp = DataResponse::decode(bytes.as_slice()).map_err(|e| {
        DbError::new(
            ErrorCode::Internal,
            format!("stored response unreadable: {e}"),
        )
    })?;
    let index = pg.scalar(
        "SELECT commit_index FROM _netmod_idempotency WHERE key = $1",
        &[Param::Text(key)],
    )?;
    resp.commit_index = match index
        .as_deref()
        .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
    {
        Some(i) => i,
        None => pg.current_lsn()?,
    };
    Ok(resp)
}

struct Replica {
    url: String,
    pg: Option<Pg>,
    down_until: Option<Instant>,
}

struct Reader {
    url: String,
    primary: Option<Pg>,
    replicas: Vec<Replica>,
    rr: Arc<AtomicUsize>,
    wait: Duration,
    retry: Duration,
    writers: SyncSender<Job>,
    committed: Arc<AtomicU64>,
    monitor: Arc<Monitor>,
}

/// A read-only session: a statement that writes fails READ_ONLY and goes to the writers.
const READ_ONLY_SESSION: &str = "SET default_transaction_read_only = on";

enum Read {
    Done(Result<DataResponse, DbError>),
    /// Not answered here: try the primary.
    Fallback,
}

impl Reader {
    fn run(&mut self, job: Job) {
        let Work::Execute(_) = &job.work else {
            return enqueue(&self.writers, job);
        };
        let start = Instant::now();
        let mut r = Read::Fallback;
        if job.consistency != ReadConsistency::Primary && !self.replicas.is_empty() {
            r = self.on_replica(&job);
        }
        let r = match r {
            Read::Done(r) => r,
            Read::Fallback => self.on_primary(&job),
        };
        if matches!(&r, Err(e) if e.code == ErrorCode::ReadOnly) {
            // It writes after all.
            return enqueue(&self.writers, job);
        }
        if let Work::Execute(st) = &job.work {
            self.monitor.record(&st.sql, start.elapsed(), r.is_ok());
        }
        (job.reply)(r);
    }

    fn on_replica(&mut self, job: &Job) -> Read {
        let Work::Execute(st) = &job.work else {
            return Read::Fallback;
        };
        let n = self.replicas.len();
        let first = self.rr.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        for k in 0..n {
            let rep = &mut self.replicas[(first + k) % n];
            if rep.down_until.is_some_and(|t| now < t) {
                continue;
            }
            let outcome = (|| -> Result<Option<DataResponse>, DbError> {
                let pg = ensure(&mut rep.pg, &rep.url, READ_ONLY_SESSION)?;
                let mut index = pg.replay_lsn()?;
                if job.consistency == ReadConsistency::AfterIndex {
                    let deadline = Instant::now() + self.wait;
                    while index < job.after_index {
                        if Instant::now() >= deadline {
                            return Ok(None);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        index = pg.replay_lsn()?;
                    }
                }
                let (res, _) = pg.execute(st, job.limit)?;
                Ok(Some(respond(data_response::Kind::Result(res), index)))
            })();
            match outcome {
                Ok(Some(resp)) => {
                    rep.down_until = None;
                    return Read::Done(Ok(resp));
                }
                Ok(None) => return Read::Fallback,
                Err(e) if rep.pg.as_ref().is_some_and(Pg::is_ok) => return Read::Done(Err(e)),
                Err(e) => {
                    warn!(
                        "Replica {} failed ({}); skipped for {:?}",
                        redact(&rep.url),
                        e.message,
                        self.retry
                    );
                    rep.pg = None;
                    rep.down_until = Some(now + self.retry);
                }
            }
        }
        Read::Fallback
    }

    fn on_primary(&mut self, job: &Job) -> Result<DataResponse, DbError> {
        let Work::Execute(st) = &job.work else {
            return Err(DbError::new(ErrorCode::Internal, "not a statement"));
        };
        let index = self.committed.load(Ordering::Acquire);
        let pg = ensure(&mut self.primary, &self.url, READ_ONLY_SESSION)?;
        if job.consistency == ReadConsistency::AfterIndex && job.after_index > index {
            // Another db-server may have acknowledged it: ask the primary itself.
            let at = pg.current_lsn()?;
            if job.after_index > at {
                return Err(DbError::new(
                    ErrorCode::Stale,
                    format!("commit index {} not reached (at {at})", job.after_index),
                ));
            }
        }
        let (res, _) = pg.execute(st, job.limit)?;
        Ok(respond(data_response::Kind::Result(res), index))
    }
}
