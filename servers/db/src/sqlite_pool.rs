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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info};
use prost::Message as _;
use rusqlite::Connection;

use crate::monitor::Monitor;
use crate::pool::{idempotency_cutoff, now_secs, AfterIndex, Counters, Pool, Worker, Workers};
use crate::queue::JobQueue;
use crate::sqlite::{self, DbError};
use crate::turn::WriteTurn;
use crate::txn::Txns;
use crate::workers::{Job, Work};
use protocol::proto::{data_response, DataResponse, ErrorCode};

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
    /// Page cache and memory map of each connection.
    pub memory: sqlite::SqliteMemory,
}

impl SqliteConfig {
    /// db-server's defaults for the database at `path`: 2 readers, 10,000 queued jobs, groups
    /// of up to 256 writes, a 5 s busy timeout, 64 open transactions, the default memory.
    pub fn new(path: PathBuf) -> Self {
        SqliteConfig {
            path,
            readers: 2,
            queue: 10_000,
            max_group: 256,
            busy_timeout: Duration::from_secs(5),
            max_txns: 64,
            memory: sqlite::SqliteMemory::default(),
        }
    }
}

/// Opens the database (creating it) and starts the writer and the readers on a [`Pool`].
///
/// Single statements that look like reads go to the readers, which hand anything SQLite does
/// not call read-only to the writer. With one database every read is a primary read, so
/// `AFTER_INDEX` is met at once, or never: an index above the last commit was never
/// acknowledged (STALE).
pub fn start(cfg: SqliteConfig, monitor: Arc<Monitor>) -> Result<Pool, DbError> {
    let writer_conn = sqlite::open_writer(&cfg.path, cfg.busy_timeout, cfg.memory)?;
    let counters = Counters::starting_at(sqlite::commit_index(&writer_conn)?);
    let readers = (0..cfg.readers.max(1))
        .map(|_| sqlite::open_reader(&cfg.path, cfg.busy_timeout, cfg.memory))
        .collect::<Result<Vec<_>, _>>()?;
    let turn = Arc::new(WriteTurn::default());
    let txns = Txns::new(
        sqlite::txn_opener(
            cfg.path.clone(),
            cfg.busy_timeout,
            cfg.memory,
            Arc::clone(&turn),
        ),
        cfg.max_txns,
        Arc::clone(&counters.committed),
        Arc::clone(&monitor),
    );
    let n = readers.len();
    let pool = Pool::start(
        cfg.queue,
        Arc::clone(&counters),
        Arc::clone(&monitor),
        txns,
        AfterIndex::Stale,
        |queues| {
            Ok(Workers {
                readers: readers
                    .into_iter()
                    .map(|conn| Reader {
                        conn,
                        writer: queues.writers.clone(),
                        counters: Arc::clone(&counters),
                        monitor: Arc::clone(&monitor),
                    })
                    .collect(),
                // One writer: SQLite has one, and its group commit is the batching.
                writers: vec![Writer {
                    conn: writer_conn,
                    turn: Arc::clone(&turn),
                    busy: cfg.busy_timeout,
                    counters: Arc::clone(&counters),
                    monitor: Arc::clone(&monitor),
                }],
                reader_group: READ_GROUP,
                writer_group: cfg.max_group.max(1),
            })
        },
    )?;
    info!(
        "SQLite database {} open (WAL, synchronous=FULL), {n} reader(s)",
        cfg.path.display(),
    );
    Ok(pool)
}

/// Reads a reader takes from its queue at once (one read transaction for them all).
const READ_GROUP: usize = 32;

/// A reader thread's connection (read-only).
struct Reader {
    conn: Connection,
    writer: Arc<JobQueue>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl Worker for Reader {
    fn run_group(&mut self, jobs: &mut Vec<Job>) {
        // The snapshot the group's reads see starts after this load (at their first step), so
        // it includes at least this index.
        let index = self.counters.committed_index();
        // Several jobs share one read transaction: one WAL read lock (fcntl calls on the -shm
        // file) instead of one per statement. Every job was queued before the snapshot starts,
        // so each still sees every write acknowledged before it was sent.
        let shared = jobs.len() > 1 && self.conn.execute_batch("BEGIN").is_ok();
        for job in jobs.drain(..) {
            self.read(job, index);
        }
        // An I/O error may have ended the transaction already.
        if shared && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("COMMIT");
        }
    }
}

impl Reader {
    fn read(&mut self, job: Job, index: u64) {
        let Work::Execute(st) = &job.work else {
            return self.writer.push(job);
        };
        let start = Instant::now();
        let r = match sqlite::execute_read(&self.conn, st, job.limit) {
            Ok(None) => return self.writer.push(job),
            Ok(Some(res)) => Ok(res),
            Err(e) => Err(e),
        };
        self.monitor.record(&st.sql, start.elapsed(), r.is_ok());
        job.reply.send(r.map(|res| DataResponse {
            kind: Some(data_response::Kind::Result(res)),
            commit_index: index,
        }));
    }
}

/// The writer thread's connection: group commits.
struct Writer {
    conn: Connection,
    /// Taken for each group, so transactions get the write lock in their turn.
    turn: Arc<WriteTurn>,
    busy: Duration,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl Worker for Writer {
    fn run_group(&mut self, jobs: &mut Vec<Job>) {
        self.commit_group(jobs);
    }
}

impl Writer {
    fn commit_group(&mut self, group: &mut Vec<Job>) {
        // Held to the end of the group (None: the wait ran out; SQLite decides, BUSY or not).
        let _turn = self.turn.take(self.busy);
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
                    job.reply.send(Err(e.clone()));
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
                if self.counters.commit(index, wrote as u64) {
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
            job.reply.send(r);
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
        let cutoff = idempotency_cutoff();
        if let Err(e) = self.conn.execute(
            "DELETE FROM _netmod_idempotency WHERE created < ?1",
            [cutoff],
        ) {
            error!("pruning idempotency keys failed: {e}");
        }
    }
}
