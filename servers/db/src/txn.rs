//! Interactive transactions and cursors: each owns a connection and a thread, and both share
//! one registry of ids, sequence numbers and expiry. A cursor is a read transaction streaming
//! one statement page by page (`run_cursor`).
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
//! mistaken for a new one: it gets TXN_NOT_FOUND. The backend does the database part through
//! [`TxnConn`] (opened by an [`Opener`], BEGIN already run). On SQLite a transaction reads from
//! the snapshot of its first statement; its first write takes the write lock (waiting up to the
//! busy timeout for the group-commit writer), and a write after another commit changed its
//! snapshot gets BUSY: roll back and retry. PostgreSQL's REPEATABLE READ behaves the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::info;

use super::error::DbError;
use super::monitor::Monitor;
use super::page::Limit;
use super::reply::ReplyTo;
use super::workers::{check_statement, Caller};
use protocol::proto::{
    data_response, Column, CursorOpen, CursorPage, DataResponse, ErrorCode, Row, Statement,
    StatementResult, TxnBegin, TxnEnded, TxnInfo,
};

/// What a connection is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An interactive transaction: reads and writes.
    Transaction,
    /// A cursor: one read-only statement from one snapshot.
    Cursor,
}

/// One page of a cursor.
#[derive(Debug)]
pub struct Page {
    /// The columns, on the first page only.
    pub columns: Vec<Column>,
    /// The rows.
    pub rows: Vec<Row>,
    /// True on the last page.
    pub done: bool,
}

/// A backend's connection inside an open transaction (the opener has run BEGIN).
pub trait TxnConn: Send {
    /// Runs a statement; also says whether it may have written.
    fn execute(&mut self, st: &Statement, limit: Limit)
        -> Result<(StatementResult, bool), DbError>;
    /// Commits; returns the commit index of this commit, or `committed`'s value when nothing
    /// was written.
    fn commit(&mut self, wrote: bool, committed: &AtomicU64) -> Result<u64, DbError>;
    /// Rolls back (errors are moot: the connection is dropped afterwards).
    fn rollback(&mut self);
    /// Streams `st`'s rows page by page: calls `page` with each page (or the error) until the
    /// last page, an error, or `page` returns false.
    fn cursor(
        &mut self,
        st: &Statement,
        page_rows: usize,
        limit: Limit,
        page: &mut dyn FnMut(Result<Page, DbError>) -> bool,
    );
}

/// Opens a connection with its transaction begun: a client connection when `sandboxed`
/// (the caller's identity, see [`crate::sandbox`]), else a server connection.
pub type Opener = Arc<dyn Fn(Purpose, bool) -> Result<Box<dyn TxnConn>, DbError> + Send + Sync>;

/// Default and largest transaction timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE: Duration = Duration::from_secs(2);
/// The longest a client's transaction may sit idle (whatever it asks): a transaction holding
/// the write lock and sending nothing holds up every other user's writes, so it is rolled
/// back well before their lock waits (SQLite: 5 s) give up.
const MAX_CLIENT_IDLE: Duration = Duration::from_secs(2);
/// Interactive transactions and cursors one user may hold open at once, by default.
pub const DEFAULT_PER_USER: usize = 8;
/// How long an expired id is remembered (for TXN_EXPIRED rather than TXN_NOT_FOUND).
const REMEMBER_EXPIRED: Duration = Duration::from_secs(600);

enum Cmd {
    Exec(Statement, Limit, ReplyTo),
    Commit(ReplyTo),
    /// Rollback of a transaction, close of a cursor.
    Rollback(ReplyTo),
    Fetch(ReplyTo),
}

impl Cmd {
    fn into_reply(self) -> ReplyTo {
        match self {
            Cmd::Exec(_, _, r) | Cmd::Commit(r) | Cmd::Rollback(r) | Cmd::Fetch(r) => r,
        }
    }
}

/// Rows per cursor page when the client does not say.
const DEFAULT_PAGE_ROWS: usize = 1000;

struct Open {
    tx: Sender<Cmd>,
    next_seq: u64,
    /// Who began it: requests from anyone else are told it does not exist.
    owner: Caller,
}

#[derive(Default)]
struct Table {
    open: HashMap<u64, Open>,
    /// Expired ids: when, and whose.
    expired: HashMap<u64, (Instant, Caller)>,
}

/// All open transactions of the server.
pub struct Txns {
    opener: Opener,
    max_open: usize,
    /// Most open at once for one client user (`Caller::user` of a sandboxed caller).
    max_per_user: usize,
    prefix: u64,
    counter: AtomicU64,
    table: Arc<Mutex<Table>>,
    committed: Arc<AtomicU64>,
    monitor: Arc<Monitor>,
}

impl std::fmt::Debug for Txns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txns")
            .field("max_open", &self.max_open)
            .finish_non_exhaustive()
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
        opener: Opener,
        max_open: usize,
        max_per_user: usize,
        committed: Arc<AtomicU64>,
        monitor: Arc<Monitor>,
    ) -> Self {
        // A random 32-bit prefix per process start; the std hasher is randomly keyed.
        use std::hash::{BuildHasher, RandomState};
        let prefix = RandomState::new().hash_one(std::process::id()) << 32;
        Txns {
            opener,
            max_open,
            max_per_user: max_per_user.max(1),
            prefix,
            counter: AtomicU64::new(1),
            table: Arc::new(Mutex::new(Table::default())),
            committed,
            monitor,
        }
    }

    /// Reserves an id and a command channel, opens a connection, and starts `body` on its own
    /// thread with them. Shared by transactions and cursors.
    #[allow(clippy::type_complexity)]
    fn open(
        &self,
        purpose: Purpose,
        owner: Caller,
        timeout_ms: u32,
        idle_ms: u32,
        reply: ReplyTo,
        body: impl FnOnce(Box<dyn TxnConn>, Session, ReplyTo) + Send + 'static,
    ) {
        let timeout = match timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
        };
        let idle = match idle_ms {
            0 => DEFAULT_IDLE,
            ms => Duration::from_millis(u64::from(ms)),
        }
        .min(timeout)
        .min(if owner.sandboxed {
            MAX_CLIENT_IDLE
        } else {
            Duration::MAX
        });
        let id = self.prefix | (self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF);
        let (tx, rx) = mpsc::channel::<Cmd>();
        let sandboxed = {
            let mut t = lock(&self.table);
            if t.open.len() >= self.max_open {
                drop(t);
                return reply.send(Err(DbError::new(
                    ErrorCode::Overloaded,
                    "too many open transactions and cursors",
                )));
            }
            if owner.sandboxed {
                let mine = t
                    .open
                    .values()
                    .filter(|o| o.owner.sandboxed && o.owner.user == owner.user)
                    .count();
                if mine >= self.max_per_user {
                    drop(t);
                    return reply.send(Err(DbError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "{mine} transactions and cursors open already, the most one user \
                             may have (db-server's --max-txns-per-user): end one first"
                        ),
                    )));
                }
            }
            let sandboxed = owner.sandboxed;
            t.open.insert(
                id,
                Open {
                    tx,
                    next_seq: 1,
                    owner,
                },
            );
            sandboxed
        };
        let conn = match (self.opener)(purpose, sandboxed) {
            Ok(c) => c,
            Err(e) => {
                lock(&self.table).open.remove(&id);
                return reply.send(Err(e));
            }
        };
        let session = Session {
            id,
            rx,
            deadline: Instant::now() + timeout,
            timeout,
            idle,
            table: Arc::clone(&self.table),
            committed: Arc::clone(&self.committed),
            monitor: Arc::clone(&self.monitor),
        };
        // The reply travels to the thread through a slot, so that it can still be answered here
        // if the thread cannot be started (the closure, and anything moved into it, is dropped).
        let (slot, table) = (Arc::new(Mutex::new(Some(reply))), Arc::clone(&self.table));
        let for_thread = Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name(format!("db-txn-{:x}", id & 0xFFFF_FFFF))
            .spawn(move || {
                let reply = for_thread.lock().ok().and_then(|mut r| r.take());
                if let Some(reply) = reply {
                    body(conn, session, reply);
                }
            });
        if let Err(e) = spawned {
            lock(&table).open.remove(&id);
            if let Some(reply) = slot.lock().ok().and_then(|mut r| r.take()) {
                reply.send(Err(DbError::new(
                    ErrorCode::Internal,
                    format!("cannot start a thread: {e}"),
                )));
            }
        }
    }

    /// Opens a transaction; the reply carries its id.
    pub fn begin(&self, req: &TxnBegin, owner: Caller, reply: ReplyTo) {
        self.open(
            Purpose::Transaction,
            owner,
            req.timeout_ms,
            req.idle_ms,
            reply,
            |mut conn, session, reply| {
                reply.send(Ok(DataResponse {
                    kind: Some(data_response::Kind::Txn(TxnInfo {
                        txn_id: session.id,
                        timeout_ms: u32::try_from(session.timeout.as_millis()).unwrap_or(u32::MAX),
                        idle_ms: u32::try_from(session.idle.as_millis()).unwrap_or(u32::MAX),
                    })),
                    commit_index: session.committed.load(Ordering::Acquire),
                }));
                run(&mut *conn, &session);
            },
        );
    }

    /// Opens a cursor over `req.stmt`; the reply carries its id and first page.
    pub fn open_cursor(&self, req: CursorOpen, limit: Limit, owner: Caller, reply: ReplyTo) {
        let st = req.stmt.unwrap_or_default();
        if let Err(e) = check_statement(&st, &owner) {
            return reply.send(Err(e));
        }
        let page_rows = match req.page_rows {
            0 => DEFAULT_PAGE_ROWS,
            n => n as usize,
        };
        self.open(
            Purpose::Cursor,
            owner,
            req.timeout_ms,
            req.idle_ms,
            reply,
            move |mut conn, session, reply| {
                run_cursor(&mut *conn, &session, &st, page_rows, limit, reply);
                conn.rollback();
            },
        );
    }

    fn send(
        &self,
        id: u64,
        seq: u64,
        caller: &Caller,
        make: impl FnOnce(ReplyTo) -> Cmd,
        reply: ReplyTo,
    ) {
        let mut t = lock(&self.table);
        let now = Instant::now();
        t.expired
            .retain(|_, (at, _)| now.duration_since(*at) < REMEMBER_EXPIRED);
        if t.expired.get(&id).is_some_and(|(_, owner)| owner == caller) {
            drop(t);
            return reply.send(Err(DbError::new(
                ErrorCode::TxnExpired,
                format!("transaction {id:#x} expired and was rolled back"),
            )));
        }
        // Another user's transaction is, to this caller, one that does not exist.
        let Some(open) = t.open.get_mut(&id).filter(|o| o.owner == *caller) else {
            drop(t);
            return reply.send(Err(not_found(id)));
        };
        if seq != open.next_seq {
            let want = open.next_seq;
            drop(t);
            return reply.send(Err(DbError::new(
                ErrorCode::BadRequest,
                format!("transaction {id:#x}: seq {seq} out of order, expected {want}"),
            )));
        }
        open.next_seq += 1;
        if let Err(mpsc::SendError(cmd)) = open.tx.send(make(reply)) {
            // The thread just expired the transaction.
            drop(t);
            cmd.into_reply().send(Err(DbError::new(
                ErrorCode::TxnExpired,
                format!("transaction {id:#x} expired"),
            )));
        }
    }

    /// Runs a statement in transaction `id`.
    pub fn execute(
        &self,
        id: u64,
        seq: u64,
        caller: &Caller,
        st: Statement,
        limit: Limit,
        reply: ReplyTo,
    ) {
        if let Err(e) = check_statement(&st, caller) {
            return reply.send(Err(e));
        }
        self.send(id, seq, caller, |r| Cmd::Exec(st, limit, r), reply);
    }

    /// Commits transaction `id`.
    pub fn commit(&self, id: u64, seq: u64, caller: &Caller, reply: ReplyTo) {
        self.send(id, seq, caller, Cmd::Commit, reply);
    }

    /// Rolls transaction `id` back, or closes cursor `id`.
    pub fn rollback(&self, id: u64, seq: u64, caller: &Caller, reply: ReplyTo) {
        self.send(id, seq, caller, Cmd::Rollback, reply);
    }

    /// The next page of cursor `id`.
    pub fn fetch(&self, id: u64, seq: u64, caller: &Caller, reply: ReplyTo) {
        self.send(id, seq, caller, Cmd::Fetch, reply);
    }
}

fn ended(index: u64) -> DataResponse {
    DataResponse {
        kind: Some(data_response::Kind::Ended(TxnEnded {})),
        commit_index: index,
    }
}

/// What the thread of one transaction or cursor owns.
struct Session {
    id: u64,
    rx: mpsc::Receiver<Cmd>,
    deadline: Instant,
    timeout: Duration,
    idle: Duration,
    table: Arc<Mutex<Table>>,
    committed: Arc<AtomicU64>,
    monitor: Arc<Monitor>,
}

impl Session {
    /// The next command, or `None` when the idle expiry or the timeout came first; then the
    /// session is marked expired and commands queued meanwhile are answered TXN_EXPIRED. The
    /// caller rolls back.
    fn next(&self) -> Option<Cmd> {
        let wait = self
            .idle
            .min(self.deadline.saturating_duration_since(Instant::now()));
        match self.rx.recv_timeout(wait) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let mut t = lock(&self.table);
                if let Some(open) = t.open.remove(&self.id) {
                    t.expired.insert(self.id, (Instant::now(), open.owner));
                }
                drop(t);
                info!(
                    "Transaction or cursor {:#x} expired and was rolled back",
                    self.id
                );
                while let Ok(cmd) = self.rx.try_recv() {
                    cmd.into_reply().send(Err(DbError::new(
                        ErrorCode::TxnExpired,
                        format!("transaction {:#x} expired", self.id),
                    )));
                }
                None
            }
        }
    }

    fn end(&self) {
        lock(&self.table).open.remove(&self.id);
    }
}

fn misuse(what: &str) -> DbError {
    DbError::new(ErrorCode::BadRequest, what.to_string())
}

/// A cursor's thread: pages of one statement from one read snapshot.
fn run_cursor(
    conn: &mut dyn TxnConn,
    session: &Session,
    st: &Statement,
    page_rows: usize,
    limit: Limit,
    first: ReplyTo,
) {
    let start = Instant::now();
    // Pages are cut at the size limit rather than failing: the next page carries on. The
    // statement may run until the cursor's own end, not the open request's deadline.
    let page_limit = Limit {
        truncate: true,
        deadline: limit.deadline.map(|_| session.deadline),
        ..limit
    };
    let mut reply = Some(first);
    conn.cursor(st, page_rows, page_limit, &mut |page| {
        let Some(r) = reply.take() else {
            return false;
        };
        let done = !matches!(page, Ok(Page { done: false, .. }));
        if done {
            session.end();
            session
                .monitor
                .record(&st.sql, start.elapsed(), page.is_ok());
        }
        r.send(page.map(|p| DataResponse {
            kind: Some(data_response::Kind::Page(CursorPage {
                cursor_id: session.id,
                columns: p.columns,
                rows: p.rows,
                done: p.done,
            })),
            commit_index: session.committed.load(Ordering::Acquire),
        }));
        if done {
            return false;
        }
        loop {
            match session.next() {
                None => return false,
                Some(Cmd::Fetch(r)) => {
                    reply = Some(r);
                    return true;
                }
                Some(Cmd::Rollback(r)) => {
                    session.end();
                    r.send(Ok(ended(session.committed.load(Ordering::Acquire))));
                    return false;
                }
                Some(other) => other
                    .into_reply()
                    .send(Err(misuse("a cursor takes fetch and close_cursor only"))),
            }
        }
    });
    if let Some(r) = reply.take() {
        // The backend stopped without a page (it should not); still answer.
        session.end();
        r.send(Err(DbError::new(ErrorCode::Internal, "cursor ended early")));
    }
}

/// A transaction's thread.
fn run(conn: &mut dyn TxnConn, session: &Session) {
    let (committed, monitor) = (&*session.committed, &*session.monitor);
    // Only a transaction that wrote takes a new commit index.
    let mut wrote = false;
    loop {
        let Some(cmd) = session.next() else {
            conn.rollback();
            return;
        };
        match cmd {
            Cmd::Exec(st, limit, reply) => {
                let start = Instant::now();
                let r = conn.execute(&st, limit).map(|(res, w)| {
                    wrote |= w;
                    res
                });
                monitor.record(&st.sql, start.elapsed(), r.is_ok());
                reply.send(r.map(|res| DataResponse {
                    kind: Some(data_response::Kind::Result(res)),
                    commit_index: committed.load(Ordering::Acquire),
                }));
            }
            Cmd::Fetch(reply) => reply.send(Err(misuse("fetch is for cursors"))),
            Cmd::Commit(reply) => {
                session.end();
                let r = conn.commit(wrote, committed);
                match r {
                    Ok(index) => {
                        committed.fetch_max(index, Ordering::AcqRel);
                    }
                    Err(_) => conn.rollback(),
                }
                return reply.send(r.map(ended));
            }
            Cmd::Rollback(reply) => {
                session.end();
                conn.rollback();
                return reply.send(Ok(ended(committed.load(Ordering::Acquire))));
            }
        }
    }
}
