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
//! # Identities
//!
//! Every worker has a server connection and a client connection (see [`crate::sandbox`]): a
//! group's client jobs run on the client connection, the servers' jobs on the server one, so no
//! client statement ever runs where a server statement does. The writer commits a group's
//! server writes and its client writes as two transactions (two fsyncs when a group holds both).
//!
//! # Idempotency
//!
//! A write with an idempotency key (scoped to its user) stores the key and its response in the
//! same savepoint, on the write's own connection (on a client connection, in a server turn:
//! the client can neither read nor forge the record). A retry finds the key and gets the
//! stored response (the same rows; the commit index of its own time), not a second write: see
//! the `idempotency` module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info};

use crate::idempotency::{self, Keyed, Ledger};
use crate::monitor::Monitor;
use crate::pool::{
    for_each_identity, idempotency_cutoff, now_secs, AfterIndex, Counters, Pool, Worker, Workers,
};
use crate::queue::JobQueue;
use crate::reply::Replies;
use crate::sqlite::{self, Conn, DbError};
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
    /// Of those, the most one client user may hold.
    pub max_txns_per_user: usize,
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
            max_txns_per_user: crate::txn::DEFAULT_PER_USER,
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
    let client_writer = sqlite::open_client_writer(&cfg.path, cfg.busy_timeout, cfg.memory)?;
    // One reader more than configured, reserved for the servers' own reads (see `JobQueue`).
    let readers = (0..cfg.readers.max(1) + 1)
        .map(|_| {
            let open =
                |client| sqlite::open_reader(&cfg.path, cfg.busy_timeout, cfg.memory, client);
            Ok([open(false)?, open(true)?])
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let turn = Arc::new(WriteTurn::default());
    let txns = Txns::new(
        sqlite::txn_opener(
            cfg.path.clone(),
            cfg.busy_timeout,
            cfg.memory,
            Arc::clone(&turn),
        ),
        cfg.max_txns,
        cfg.max_txns_per_user,
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
                    .map(|conns| Reader {
                        conns,
                        writer: queues.writers.clone(),
                        counters: Arc::clone(&counters),
                        monitor: Arc::clone(&monitor),
                    })
                    .collect(),
                // One writer: SQLite has one, and its group commit is the batching.
                writers: vec![Writer {
                    conns: [
                        Conn {
                            conn: writer_conn,
                            sandbox: None,
                        },
                        client_writer,
                    ],
                    turn: Arc::clone(&turn),
                    busy: cfg.busy_timeout,
                    counters: Arc::clone(&counters),
                    monitor: Arc::clone(&monitor),
                }],
                reader_group: READ_GROUP,
                writer_group: cfg.max_group.max(1),
                primary: None,
                reserved_readers: 1,
                // The one writer takes the servers' writes first; a client's write holds it at
                // most until its deadline.
                reserved_writers: 0,
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

/// A reader thread's connections (read-only): the server's and the client's.
struct Reader {
    conns: [Conn; 2],
    writer: Arc<JobQueue>,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl Worker for Reader {
    fn run_group(&mut self, jobs: &mut Vec<Job>, out: &mut Replies) {
        // The snapshot the group's reads see starts after this load (at their first step), so
        // it includes at least this index.
        let index = self.counters.committed_index();
        for_each_identity(jobs, |client, group| {
            let conn = &self.conns[usize::from(client)];
            // Several jobs share one read transaction: one WAL read lock (fcntl calls on the
            // -shm file) instead of one per statement. Every job was queued before the snapshot
            // starts, so each still sees every write acknowledged before it was sent.
            let shared = group.len() > 1 && conn.conn.execute_batch("BEGIN").is_ok();
            for job in group.drain(..) {
                read(conn, &self.writer, &self.monitor, job, index, out);
            }
            // An I/O error may have ended the transaction already.
            if shared && !conn.conn.is_autocommit() {
                let _ = conn.conn.execute_batch("COMMIT");
            }
        });
    }
}

fn read(
    conn: &Conn,
    writer: &JobQueue,
    monitor: &Monitor,
    job: Job,
    index: u64,
    out: &mut Replies,
) {
    let Work::Execute(st) = &job.work else {
        return writer.push(job);
    };
    let start = Instant::now();
    let r = match sqlite::execute_read(conn, st, job.limit) {
        Ok(None) => return writer.push(job),
        Ok(Some(res)) => Ok(res),
        Err(e) => Err(e),
    };
    monitor.record(&st.sql, start.elapsed(), r.is_ok());
    let r = r.map(|res| DataResponse {
        kind: Some(data_response::Kind::Result(res)),
        commit_index: index,
    });
    job.reply.hold(r, out);
}

/// The writer thread's connections, the server's and the client's: group commits.
struct Writer {
    conns: [Conn; 2],
    /// Taken for each group, so transactions get the write lock in their turn.
    turn: Arc<WriteTurn>,
    busy: Duration,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
}

impl Worker for Writer {
    fn run_group(&mut self, jobs: &mut Vec<Job>, out: &mut Replies) {
        // The servers' writes, then the clients': each identity's on its own connection.
        for_each_identity(jobs, |client, group| {
            self.commit_group(usize::from(client), group, out)
        });
    }
}

impl Writer {
    fn commit_group(&mut self, which: usize, group: &mut Vec<Job>, out: &mut Replies) {
        // Held to the end of the group (None: the wait ran out; SQLite decides, BUSY or not).
        let _turn = self.turn.take(self.busy);
        let c = &self.conns[which];
        let mut results: Vec<Result<DataResponse, DbError>> = Vec::with_capacity(group.len());
        let begun = c
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(DbError::from)
            .and_then(|()| c.next_commit_index());
        let index = match begun {
            Ok(i) => i,
            Err(e) => {
                let _ = c.conn.execute_batch("ROLLBACK");
                for job in group.drain(..) {
                    job.reply.hold(Err(e.clone()), out);
                }
                return;
            }
        };
        for job in group.iter() {
            results.push(self.one(c, job, index));
        }
        let wrote = results.iter().filter(|r| r.is_ok()).count();
        let committed = if wrote == 0 {
            c.conn.execute_batch("ROLLBACK").map_err(DbError::from)
        } else {
            c.conn.execute_batch("COMMIT").map_err(DbError::from)
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
                let _ = c.conn.execute_batch("ROLLBACK");
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(DbError::new(
                        ErrorCode::Internal,
                        format!("commit failed: {}", e.message),
                    ));
                }
            }
        }
        for (job, r) in group.drain(..).zip(results) {
            job.reply.hold(r, out);
        }
    }

    /// Runs one write inside its own savepoint.
    fn one(&self, c: &Conn, job: &Job, index: u64) -> Result<DataResponse, DbError> {
        let conn = &c.conn;
        conn.execute_batch("SAVEPOINT w")?;
        let start = Instant::now();
        let r = apply(c, job, index);
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

    fn prune_idempotency(&self) {
        let cutoff = idempotency_cutoff();
        if let Err(e) = self.conns[0].conn.execute(
            "DELETE FROM main._netmod_idempotency WHERE created < ?1",
            [cutoff],
        ) {
            error!("pruning idempotency keys failed: {e}");
        }
    }
}

/// One write on `c`, claim → run → store ([`idempotency::run_keyed`]) in the write's own
/// savepoint, so a write and its record commit together or not at all.
fn apply(c: &Conn, job: &Job, index: u64) -> Result<DataResponse, DbError> {
    let done =
        idempotency::run_keyed(
            &mut Records(c),
            &job.idempotency_key,
            now_secs(),
            |r| match &job.work {
                // `Pool::submit` has refused transaction control already.
                Work::Execute(st) => Ok(data_response::Kind::Result(r.0.execute(st, job.limit)?)),
                Work::Batch(b) => Ok(data_response::Kind::Batch(sqlite::run_batch(
                    r.0, b, job.limit,
                )?)),
            },
        )?;
    let (Keyed::Ran(kind) | Keyed::Stored(kind)) = done;
    Ok(DataResponse {
        kind: Some(kind),
        commit_index: index,
    })
}

/// The idempotency records of a SQLite file (`main._netmod_idempotency`), read and written
/// as the servers even from a client's connection. One writer at a time: a key absent at
/// the claim is still absent at the store.
struct Records<'a>(&'a Conn);

impl Ledger for Records<'_> {
    fn claim(&mut self, key: &str, _now: i64) -> Result<Option<Vec<u8>>, DbError> {
        sqlite::bookkeeping(
            &self.0.conn,
            self.0.sandbox.as_deref(),
            "SELECT response FROM main._netmod_idempotency WHERE key = ?1",
            |q| {
                let mut rows = q.query([key])?;
                rows.next()?.map(|row| row.get::<_, Vec<u8>>(0)).transpose()
            },
        )
    }

    fn store(&mut self, key: &str, now: i64, response: &[u8]) -> Result<(), DbError> {
        sqlite::bookkeeping(
            &self.0.conn,
            self.0.sandbox.as_deref(),
            "INSERT INTO main._netmod_idempotency (key, response, created) VALUES (?1, ?2, ?3)",
            |q| q.execute(rusqlite::params![key, response, now]),
        )?;
        Ok(())
    }
}
