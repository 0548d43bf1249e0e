//! The SQLite backend's workers: reader threads (one read-only connection each) and one writer
//! thread that group-commits.
//!
//! # Group commit
//!
//! The writer takes every write waiting in its queue (up to 256), opens one transaction, runs
//! each write inside its own SAVEPOINT (a failing write is rolled back to its savepoint alone, so
//! its neighbours are unaffected), advances the commit index once, and COMMITs: one fsync for the
//! whole group under `synchronous=FULL`. Nobody gets an answer before that COMMIT returns, so an
//! acknowledged write is on disk. While one group commits, the next one queues up, so the group
//! size follows the load by itself.
//!
//! # Idempotency
//!
//! A write with an idempotency key stores the key and its response in the same savepoint. A
//! retry finds the key and gets the stored response (byte for byte the same), not a second write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info};
use prost::Message as _;
use rusqlite::Connection;

use super::monitor::Monitor;
use super::sqlite::{self, DbError};
use super::txn::Txns;
use super::workers::{check_allowed, enqueue, starts_with_keyword, Job, Work, READ_KEYWORDS};
use protocol::proto::{data_response, DataResponse, ErrorCode, ReadConsistency, StatsResult};

/// SQLite pool configuration.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// Reader threads (each with its own connection).
    pub readers: usize,
    /// Jobs waiting per queue before new ones are refused with OVERLOADED.
    pub queue: usize,
    /// Writes per group commit at most.
    pub max_group: usize,
    /// How long a connection waits for a lock.
    pub busy_timeout: Duration,
    /// Interactive transactions open at once (each holds a connection and a thread).
    pub max_txns: usize,
}

#[derive(Debug)]
struct Counters {
    committed: Arc<AtomicU64>,
    commits: AtomicU64,
    grouped_writes: AtomicU64,
}

/// The SQLite workers; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqlitePool {
    /// Interactive transactions.
    pub txns: Txns,
    readers: SyncSender<Job>,
    writer: SyncSender<Job>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl SqlitePool {
    /// Opens the database (creating it), starts the writer and the readers.
    pub fn start(cfg: SqliteConfig, monitor: Arc<Monitor>) -> Result<SqlitePool, DbError> {
        let writer_conn = sqlite::open_writer(&cfg.path, cfg.busy_timeout)?;
        let counters = Arc::new(Counters {
            committed: Arc::new(AtomicU64::new(sqlite::commit_index(&writer_conn)?)),
            commits: AtomicU64::new(0),
            grouped_writes: AtomicU64::new(0),
        });
        let (wtx, wrx) = mpsc::sync_channel::<Job>(cfg.queue);
        let (rtx, rrx) = mpsc::sync_channel::<Job>(cfg.queue);
        let rrx = Arc::new(Mutex::new(rrx));
        for i in 0..cfg.readers.max(1) {
            let conn = sqlite::open_reader(&cfg.path, cfg.busy_timeout)?;
            let (rrx, wtx, counters, monitor) = (
                Arc::clone(&rrx),
                wtx.clone(),
                Arc::clone(&counters),
                Arc::clone(&monitor),
            );
            std::thread::Builder::new()
                .name(format!("db-reader-{i}"))
                .spawn(move || reader_loop(conn, &rrx, &wtx, &counters, &monitor))
                .map_err(|e| DbError::new(ErrorCode::Internal, e.to_string()))?;
        }
        let (c, m, max_group) = (
            Arc::clone(&counters),
            Arc::clone(&monitor),
            cfg.max_group.max(1),
        );
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                Writer {
                    conn: writer_conn,
                    counters: c,
                    monitor: m,
                    max_group,
                }
                .run(&wrx)
            })
            .map_err(|e| DbError::new(ErrorCode::Internal, e.to_string()))?;
        info!(
            "SQLite database {} open (WAL, synchronous=FULL), {} reader(s)",
            display(&cfg.path),
            cfg.readers.max(1)
        );
        let txns = Txns::new(
            sqlite::txn_opener(cfg.path.clone(), cfg.busy_timeout),
            cfg.max_txns,
            Arc::clone(&counters.committed),
            Arc::clone(&monitor),
        );
        Ok(SqlitePool {
            txns,
            readers: rtx,
            writer: wtx,
            counters,
            monitor,
        })
    }

    /// Queues `job`: single statements that look like reads go to the readers (which hand
    /// anything SQLite does not call read-only to the writer); everything else to the writer.
    /// With one database every read is a primary read, so `AFTER_INDEX` is met at once, or
    /// never: an index above the last commit was never acknowledged (STALE).
    pub fn submit(&self, job: Job) {
        if let Err(e) = check_allowed(&job.work) {
            return (job.reply)(Err(e));
        }
        let now = self.committed_index();
        if job.consistency == ReadConsistency::AfterIndex && job.after_index > now {
            let e = DbError::new(
                ErrorCode::Stale,
                format!("commit index {} not reached (at {now})", job.after_index),
            );
            return (job.reply)(Err(e));
        }
        match &job.work {
            Work::Execute(st) if starts_with_keyword(&st.sql, READ_KEYWORDS) => {
                enqueue(&self.readers, job)
            }
            _ => enqueue(&self.writer, job),
        }
    }

    /// The last commit index made durable.
    pub fn committed_index(&self) -> u64 {
        self.counters.committed.load(Ordering::Acquire)
    }

    /// Query statistics and commit counters.
    pub fn stats(&self) -> StatsResult {
        StatsResult {
            statements: self.monitor.snapshot(),
            commits: self.counters.commits.load(Ordering::Relaxed),
            grouped_writes: self.counters.grouped_writes.load(Ordering::Relaxed),
            commit_index: self.committed_index(),
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn reader_loop(
    conn: Connection,
    jobs: &Mutex<Receiver<Job>>,
    writer: &SyncSender<Job>,
    counters: &Counters,
    monitor: &Monitor,
) {
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(rx) => rx,
                Err(p) => p.into_inner(),
            };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // the pool is gone
            }
        };
        let Work::Execute(st) = &job.work else {
            enqueue(writer, job);
            continue;
        };
        match sqlite::is_readonly(&conn, &st.sql) {
            Ok(true) => {}
            Ok(false) => {
                enqueue(writer, job);
                continue;
            }
            Err(e) => {
                monitor.record(&st.sql, Duration::ZERO, false);
                (job.reply)(Err(e));
                continue;
            }
        }
        // The snapshot this read sees starts after this load, so it includes at least this index.
        let index = counters.committed.load(Ordering::Acquire);
        let start = Instant::now();
        let r = sqlite::execute(&conn, st, job.limit);
        monitor.record(&st.sql, start.elapsed(), r.is_ok());
        (job.reply)(r.map(|res| DataResponse {
            kind: Some(data_response::Kind::Result(res)),
            commit_index: index,
        }));
    }
}

struct Writer {
    conn: Connection,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
    max_group: usize,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Idempotency records are kept this long.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

impl Writer {
    fn run(mut self, jobs: &Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(self.max_group);
        while let Ok(first) = jobs.recv() {
            group.push(first);
            while group.len() < self.max_group {
                match jobs.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Job>) {
        let mut results: Vec<Result<DataResponse, DbError>> = Vec::with_capacity(group.len());
        let begun = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(DbError::from)
            .and_then(|()| sqlite::next_commit_index(&self.conn));
        let index = match begun {
            Ok(i) => i,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                for job in group.drain(..) {
                    (job.reply)(Err(e.clone()));
                }
                return;
            }
        };
        for job in group.iter() {
            results.push(self.one(job, index));
        }
        let wrote = results.iter().filter(|r| r.is_ok()).count();
        let committed = if wrote == 0 {
            self.conn.execute_batch("ROLLBACK").map_err(DbError::from)
        } else {
            self.conn.execute_batch("COMMIT").map_err(DbError::from)
        };
        match committed {
            Ok(()) if wrote > 0 => {
                self.counters.committed.fetch_max(index, Ordering::AcqRel);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .grouped_writes
                    .fetch_add(wrote as u64, Ordering::Relaxed);
                if index % 1000 == 0 {
                    self.prune_idempotency();
                }
            }
            Ok(()) => {}
            Err(e) => {
                error!("group commit of {} writes failed: {e}", group.len());
                let _ = self.conn.execute_batch("ROLLBACK");
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(DbError::new(
                        ErrorCode::Internal,
                        format!("commit failed: {}", e.message),
                    ));
                }
            }
        }
        for (job, r) in group.drain(..).zip(results) {
            (job.reply)(r);
        }
    }

    /// Runs one write inside its own savepoint.
    fn one(&self, job: &Job, index: u64) -> Result<DataResponse, DbError> {
        let conn = &self.conn;
        conn.execute_batch("SAVEPOINT w")?;
        let start = Instant::now();
        let r = self.apply(job, index);
        if let Work::Execute(st) = &job.work {
            self.monitor.record(&st.sql, start.elapsed(), r.is_ok());
        }
        if r.is_err() {
            conn.execute_batch("ROLLBACK TO w")?;
        }
        conn.execute_batch("RELEASE w")?;
        if conn.is_autocommit() {
            // Only a statement that ended our transaction gets here; nothing after it is safe.
            return Err(DbError::new(
                ErrorCode::BadRequest,
                "statement ended the server's transaction",
            ));
        }
        r
    }

    fn apply(&self, job: &Job, index: u64) -> Result<DataResponse, DbError> {
        let conn = &self.conn;
        let key = job.idempotency_key.as_str();
        if !key.is_empty() {
            let mut q =
                conn.prepare_cached("SELECT response FROM _netmod_idempotency WHERE key = ?1")?;
            let mut rows = q.query([key])?;
            if let Some(row) = rows.next()? {
                let bytes: Vec<u8> = row.get(0)?;
                return DataResponse::decode(bytes.as_slice()).map_err(|e| {
                    DbError::new(
                        ErrorCode::Internal,
                        format!("stored response unreadable: {e}"),
                    )
                });
            }
        }
        let kind = match &job.work {
            // `Pool::submit` has refused transaction control already.
            Work::Execute(st) => data_response::Kind::Result(sqlite::execute(conn, st, job.limit)?),
            Work::Batch(b) => data_response::Kind::Batch(sqlite::run_batch(conn, b, job.limit)?),
        };
        let resp = DataResponse {
            kind: Some(kind),
            commit_index: index,
        };
        if !key.is_empty() {
            conn.prepare_cached(
                "INSERT INTO _netmod_idempotency (key, response, created) VALUES (?1, ?2, ?3)",
            )?
            .execute(rusqlite::params![key, resp.encode_to_vec(), now_secs()])?;
        }
        Ok(resp)
    }

    fn prune_idempotency(&self) {
        let cutoff = now_secs() - IDEMPOTENCY_TTL_SECS;
        if let Err(e) = self.conn.execute(
            "DELETE FROM _netmod_idempotency WHERE created < ?1",
            [cutoff],
        ) {
            error!("pruning idempotency keys failed: {e}");
        }
    }
}
