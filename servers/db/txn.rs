//! Interactive transactions: each open transaction owns a connection and a thread.
//!
//! # Lifecycle
//!
//! ```text
//! begin ─► id issued, thread + connection opened, BEGIN (deferred)
//!   │ statements, each with the next seq ─► run in order on that connection
//!   ├─ commit (next seq) ─► commit index advanced, COMMIT ─► gone (later use: TXN_NOT_FOUND)
//!   ├─ rollback (next seq) ─► ROLLBACK ─► gone
//!   └─ timeout since begin, or idle expiry since the last request ─► ROLLBACK ─► expired
//!        (requests naming it get TXN_EXPIRED for 10 minutes, then TXN_NOT_FOUND)
//! ```
//!
//! Ids start with a random per-process prefix, so an id from before a restart is never
//! mistaken for a new one: it gets TXN_NOT_FOUND. A transaction reads from the snapshot of its
//! first statement; its first write takes SQLite's write lock (waiting up to the busy timeout for
//! the group-commit writer), and a write after another commit changed its snapshot gets BUSY:
//! roll back and retry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::info;
use rusqlite::Connection;

use super::monitor::Monitor;
use super::sqlite::{self, DbError, Limit};
use super::workers::{check_allowed, ReplyFn};
use crate::proto::{
    data_response, DataResponse, ErrorCode, Statement, TxnBegin, TxnEnded, TxnInfo,
};

/// Default and largest transaction timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE: Duration = Duration::from_secs(2);
/// How long an expired id is remembered (for TXN_EXPIRED rather than TXN_NOT_FOUND).
const REMEMBER_EXPIRED: Duration = Duration::from_secs(600);

enum Cmd {
    Exec(Statement, Limit, ReplyFn),
    Commit(ReplyFn),
    Rollback(ReplyFn),
}

struct Open {
    tx: Sender<Cmd>,
    next_seq: u64,
}

#[derive(Default)]
struct Table {
    open: HashMap<u64, Open>,
    expired: HashMap<u64, Instant>,
}

/// All open transactions of the server.
pub struct Txns {
    path: PathBuf,
    busy: Duration,
    max_open: usize,
    prefix: u64,
    counter: AtomicU64,
    table: Arc<Mutex<Table>>,
    committed: Arc<AtomicU64>,
    monitor: Arc<Monitor>,
}

impl std::fmt::Debug for Txns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txns").field("path", &self.path).finish()
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    match t.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn not_found(id: u64) -> DbError {
    DbError::new(
        ErrorCode::TxnNotFound,
        format!("no open transaction {id:#x}"),
    )
}

impl Txns {
    pub(crate) fn new(
        path: PathBuf,
        busy: Duration,
        max_open: usize,
        committed: Arc<AtomicU64>,
        monitor: Arc<Monitor>,
    ) -> Self {
        // A random 32-bit prefix per process start; the std hasher is randomly keyed.
        use std::hash::{BuildHasher, RandomState};
        let prefix = RandomState::new().hash_one(std::process::id()) << 32;
        Txns {
            path,
            busy,
            max_open,
            prefix,
            counter: AtomicU64::new(1),
            table: Arc::new(Mutex::new(Table::default())),
            committed,
            monitor,
        }
    }

    /// Opens a transaction; the reply carries its id.
    pub fn begin(&self, req: &TxnBegin, reply: ReplyFn) {
        let timeout = match req.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
        };
        let idle = match req.idle_ms {
            0 => DEFAULT_IDLE,
            ms => Duration::from_millis(u64::from(ms)),
        }
        .min(timeout);
        let id = self.prefix | (self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF);
        let (tx, rx) = mpsc::channel::<Cmd>();
        {
            let mut t = lock(&self.table);
            if t.open.len() >= self.max_open {
                drop(t);
                return reply(Err(DbError::new(
                    ErrorCode::Overloaded,
                    "too many open transactions",
                )));
            }
            t.open.insert(id, Open { tx, next_seq: 1 });
        }
        let conn = match sqlite::open_txn(&self.path, self.busy).and_then(|c| {
            c.execute_batch("BEGIN")?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                lock(&self.table).open.remove(&id);
                return reply(Err(e));
            }
        };
        let (table, committed, monitor) = (
            Arc::clone(&self.table),
            Arc::clone(&self.committed),
            Arc::clone(&self.monitor),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("db-txn-{:x}", id & 0xFFFF_FFFF))
            .spawn(move || {
                run(
                    conn,
                    id,
                    &rx,
                    Instant::now() + timeout,
                    idle,
                    &table,
                    &committed,
                    &monitor,
                )
            });
        if let Err(e) = spawned {
            lock(&self.table).open.remove(&id);
            return reply(Err(DbError::new(
                ErrorCode::Internal,
                format!("cannot start a transaction: {e}"),
            )));
        }
        reply(Ok(DataResponse {
            kind: Some(data_response::Kind::Txn(TxnInfo {
                txn_id: id,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                idle_ms: u32::try_from(idle.as_millis()).unwrap_or(u32::MAX),
            })),
            commit_index: self.committed.load(Ordering::Acquire),
        }))
    }

    fn send(&self, id: u64, seq: u64, make: impl FnOnce(ReplyFn) -> Cmd, reply: ReplyFn) {
        let mut t = lock(&self.table);
        let now = Instant::now();
        t.expired
            .retain(|_, at| now.duration_since(*at) < REMEMBER_EXPIRED);
        if t.expired.contains_key(&id) {
            drop(t);
            return reply(Err(DbError::new(
                ErrorCode::TxnExpired,
                format!("transaction {id:#x} expired and was rolled back"),
            )));
        }
        let Some(open) = t.open.get_mut(&id) else {
            drop(t);
            return reply(Err(not_found(id)));
        };
        if seq != open.next_seq {
            let want = open.next_seq;
            drop(t);
            return reply(Err(DbError::new(
                ErrorCode::BadRequest,
                format!("transaction {id:#x}: seq {seq} out of order, expected {want}"),
            )));
        }
        open.next_seq += 1;
        if let Err(mpsc::SendError(cmd)) = open.tx.send(make(reply)) {
            // The thread just expired the transaction.
            drop(t);
            let reply = match cmd {
                Cmd::Exec(_, _, r) | Cmd::Commit(r) | Cmd::Rollback(r) => r,
            };
            reply(Err(DbError::new(
                ErrorCode::TxnExpired,
                format!("transaction {id:#x} expired"),
            )));
        }
    }

    /// Runs a statement in transaction `id`.
    pub fn execute(&self, id: u64, seq: u64, st: Statement, limit: Limit, reply: ReplyFn) {
        if let Err(e) = check_allowed(&st) {
            return reply(Err(e));
        }
        self.send(id, seq, |r| Cmd::Exec(st, limit, r), reply);
    }

    /// Commits transaction `id`.
    pub fn commit(&self, id: u64, seq: u64, reply: ReplyFn) {
        self.send(id, seq, Cmd::Commit, reply);
    }

    /// Rolls transaction `id` back.
    pub fn rollback(&self, id: u64, seq: u64, reply: ReplyFn) {
        self.send(id, seq, Cmd::Rollback, reply);
    }
}

fn ended(index: u64) -> DataResponse {
    DataResponse {
        kind: Some(data_response::Kind::Ended(TxnEnded {})),
        commit_index: index,
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    conn: Connection,
    id: u64,
    rx: &mpsc::Receiver<Cmd>,
    deadline: Instant,
    idle: Duration,
    table: &Mutex<Table>,
    committed: &AtomicU64,
    monitor: &Monitor,
) {
    // Only a transaction that wrote takes a commit index: advancing it is itself a write, which
    // a read-only transaction on an older snapshot could not make (BUSY).
    let mut wrote = false;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        let cmd = match rx.recv_timeout(wait) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                // Remove first, so nothing new is queued; then answer what was queued meanwhile.
                let mut t = lock(table);
                t.open.remove(&id);
                t.expired.insert(id, Instant::now());
                drop(t);
                let _ = conn.execute_batch("ROLLBACK");
                info!("Transaction {id:#x} expired and was rolled back");
                while let Ok(cmd) = rx.try_recv() {
                    let r = match cmd {
                        Cmd::Exec(_, _, r) | Cmd::Commit(r) | Cmd::Rollback(r) => r,
                    };
                    r(Err(DbError::new(
                        ErrorCode::TxnExpired,
                        format!("transaction {id:#x} expired"),
                    )));
                }
                return;
            }
        };
        match cmd {
            Cmd::Exec(st, limit, reply) => {
                let start = Instant::now();
                wrote |= !sqlite::is_readonly(&conn, &st.sql).unwrap_or(false);
                let r = sqlite::execute(&conn, &st, limit);
                monitor.record(&st.sql, start.elapsed(), r.is_ok());
                reply(r.map(|res| DataResponse {
                    kind: Some(data_response::Kind::Result(res)),
                    commit_index: committed.load(Ordering::Acquire),
                }));
            }
            Cmd::Commit(reply) => {
                lock(table).open.remove(&id);
                let r = if wrote {
                    sqlite::next_commit_index(&conn).and_then(|index| {
                        conn.execute_batch("COMMIT")?;
                        committed.fetch_max(index, Ordering::AcqRel);
                        Ok(index)
                    })
                } else {
                    conn.execute_batch("COMMIT")
                        .map_err(DbError::from)
                        .map(|()| committed.load(Ordering::Acquire))
                };
                if r.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return reply(r.map(ended));
            }
            Cmd::Rollback(reply) => {
                lock(table).open.remove(&id);
                let r = conn.execute_batch("ROLLBACK").map_err(DbError::from);
                return reply(r.map(|()| ended(committed.load(Ordering::Acquire))));
            }
        }
    }
}
