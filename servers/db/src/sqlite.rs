//! The embedded SQLite backend: opening connections, running statements and batches, and
//! turning SQLite's errors into the protocol's codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ffi, Connection, OpenFlags};

pub use super::error::DbError;
pub use super::page::Limit;
use super::page::{self, SizedRow};
use super::sandbox::Sandbox;
use super::turn::{Turn, WriteTurn};
use super::txn::{Opener, Page, Purpose, TxnConn};
use protocol::proto::{
    value, Batch, BatchResult, Column, ErrorCode, Row, Statement, StatementResult, Value,
};

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        let text = e.to_string();
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                let msg = msg.as_deref().unwrap_or_default();
                match f.code {
                    _ if f.extended_code == ffi::SQLITE_CONSTRAINT_DATATYPE => {
                        ErrorCode::TypeMismatch
                    }
                    ffi::ErrorCode::ConstraintViolation => ErrorCode::Constraint,
                    ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                        ErrorCode::Busy
                    }
                    ffi::ErrorCode::ReadOnly => ErrorCode::ReadOnly,
                    // The client identity's authorizer refused (see `sandbox`).
                    ffi::ErrorCode::AuthorizationForStatementDenied => ErrorCode::Forbidden,
                    ffi::ErrorCode::TypeMismatch => ErrorCode::TypeMismatch,
                    ffi::ErrorCode::TooBig => ErrorCode::TooLarge,
                    // Stopped at its deadline (see `deadline`).
                    ffi::ErrorCode::OperationInterrupted => ErrorCode::Timeout,
                    _ if msg.starts_with("no such table") => ErrorCode::UnknownTable,
                    _ => ErrorCode::SqlError,
                }
            }
            rusqlite::Error::SqlInputError { msg, .. } if msg.starts_with("no such table") => {
                ErrorCode::UnknownTable
            }
            rusqlite::Error::InvalidParameterName(_) => ErrorCode::BadRequest,
            _ => ErrorCode::SqlError,
        };
        DbError::new(code, text)
    }
}

/// How much memory each connection may use to keep the database's pages at hand.
///
/// SQLite's default page cache is 2 MiB per connection: once a table outgrows it, every read
/// that misses is a `pread` into the kernel's page cache. Memory-mapping the file serves those
/// reads from the kernel's page cache directly (shared by every connection, counted once) and a
/// larger cache keeps hot pages (index interiors) in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteMemory {
    /// `PRAGMA cache_size` in KiB, per connection (each reader, the writer, each open
    /// transaction): a budget, used as pages are read.
    pub cache_kib: u64,
    /// `PRAGMA mmap_size` in bytes: address space, not memory; resident as the kernel caches
    /// the file (0 = read with `pread` only).
    pub mmap_bytes: u64,
}

impl Default for SqliteMemory {
    /// 16 MiB of cache per connection, up to 1 GiB of the file mapped.
    fn default() -> Self {
        SqliteMemory {
            cache_kib: 16 * 1024,
            mmap_bytes: 1 << 30,
        }
    }
}

fn tune(conn: &Connection, memory: SqliteMemory) -> Result<(), DbError> {
    conn.pragma_update(
        None,
        "cache_size",
        -(memory.cache_kib.min(i64::MAX as u64) as i64),
    )?;
    // Answers with the size SQLite applied (capped at compile time): a row, not an update.
    let _: i64 = conn.query_row(
        &format!("PRAGMA mmap_size = {}", memory.mmap_bytes),
        [],
        |r| r.get(0),
    )?;
    Ok(())
}

/// Opens (creating if needed) the database for writing: WAL, `synchronous=FULL` so that an
/// acknowledged commit survives power loss, and the tables the server keeps for itself.
pub fn open_writer(
    path: &Path,
    busy: Duration,
    memory: SqliteMemory,
) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    tune(&conn, memory)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS main._netmod_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
         INSERT OR IGNORE INTO main._netmod_meta (k, v) VALUES ('commit_index', 0);
         CREATE TABLE IF NOT EXISTS main._netmod_idempotency (
             key TEXT PRIMARY KEY, response BLOB NOT NULL, created INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

/// A connection and, for a client connection, the client identity it runs under.
///
/// Server connections run only the servers' own statements; client connections only clients'
/// statements, plus db-server's bookkeeping in a server turn (see [`Sandbox`]).
pub struct Conn {
    /// The connection.
    pub conn: Connection,
    /// `Some` on a client connection.
    pub sandbox: Option<Arc<Sandbox>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("client", &self.sandbox.is_some())
            .finish()
    }
}

impl Conn {
    fn new(conn: Connection, client: bool) -> Conn {
        let sandbox = client.then(|| Sandbox::install(&conn));
        Conn { conn, sandbox }
    }

    /// Runs one statement (see [`execute`]).
    pub fn execute(&self, st: &Statement, limit: Limit) -> Result<StatementResult, DbError> {
        execute(&self.conn, self.sandbox.as_deref(), st, limit)
    }

    /// The stored commit index, advanced by one, inside the caller's transaction.
    pub fn next_commit_index(&self) -> Result<u64, DbError> {
        bookkeeping(
            &self.conn,
            self.sandbox.as_deref(),
            "UPDATE main._netmod_meta SET v = v + 1 WHERE k = 'commit_index' RETURNING v",
            |q| q.query_row([], |r| r.get::<_, i64>(0)),
        )
        .map(|v| u64::try_from(v).unwrap_or(0))
    }
}

/// Runs db-server's own statement `sql` on `conn` through `f`: from the statement cache on a
/// server connection; on a client connection in a server turn, prepared afresh (a cached copy
/// could later serve a client's identical text without the authorizer).
pub fn bookkeeping<T>(
    conn: &Connection,
    sandbox: Option<&Sandbox>,
    sql: &str,
    f: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
) -> Result<T, DbError> {
    match sandbox {
        None => {
            let mut q = conn.prepare_cached(sql)?;
            Ok(f(&mut q)?)
        }
        Some(s) => s.as_server(|| {
            let mut q = conn.prepare(sql)?;
            Ok(f(&mut q)?)
        }),
    }
}

/// Opens the writer's client connection: the same file and durability as [`open_writer`], under
/// the client identity.
pub fn open_client_writer(
    path: &Path,
    busy: Duration,
    memory: SqliteMemory,
) -> Result<Conn, DbError> {
    open_read_write(path, busy, memory, 256, true)
}

/// A read-write connection to an existing database with durable commits, its statement cache
/// holding `cache` statements; a client connection when `client`.
fn open_read_write(
    path: &Path,
    busy: Duration,
    memory: SqliteMemory,
    cache: usize,
    client: bool,
) -> Result<Conn, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy)?;
    tune(&conn, memory)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(cache);
    Ok(Conn::new(conn, client))
}

/// Opens a read-only connection (a WAL reader never blocks the writer or other readers), a
/// client connection when `client`.
pub fn open_reader(
    path: &Path,
    busy: Duration,
    memory: SqliteMemory,
    client: bool,
) -> Result<Conn, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(busy)?;
    tune(&conn, memory)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(Conn::new(conn, client))
}

/// The commit index stored in the database.
pub fn commit_index(conn: &Connection) -> Result<u64, DbError> {
    let v: i64 = conn.query_row(
        "SELECT v FROM main._netmod_meta WHERE k = 'commit_index'",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Opens a connection for an interactive transaction (the database already exists), a client
/// connection when `client`.
pub fn open_txn(
    path: &Path,
    busy: Duration,
    memory: SqliteMemory,
    client: bool,
) -> Result<Conn, DbError> {
    open_read_write(path, busy, memory, 64, client)
}

/// A request's value as SQLite binds it, borrowed (text and blobs are not copied here).
fn to_sql(v: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match &v.kind {
        None | Some(value::Kind::Null(_)) => ValueRef::Null,
        Some(value::Kind::Integer(i)) => ValueRef::Integer(*i),
        Some(value::Kind::Real(f)) => ValueRef::Real(*f),
        Some(value::Kind::Text(t)) => ValueRef::Text(t.as_bytes()),
        Some(value::Kind::Blob(b)) => ValueRef::Blob(b),
    })
}

fn from_sql(v: ValueRef<'_>) -> (Value, usize) {
    let (kind, size) = match v {
        ValueRef::Null => (value::Kind::Null(true), 2),
        ValueRef::Integer(i) => (value::Kind::Integer(i), 10),
        ValueRef::Real(f) => (value::Kind::Real(f), 9),
        ValueRef::Text(t) => (
            value::Kind::Text(String::from_utf8_lossy(t).into_owned()),
            t.len() + 6,
        ),
        ValueRef::Blob(b) => (value::Kind::Blob(b.to_vec().into()), b.len() + 6),
    };
    (Value { kind: Some(kind) }, size)
}

/// Binds `st`'s arguments to a prepared statement.
pub fn bind(stmt: &mut rusqlite::Statement<'_>, st: &Statement) -> Result<(), DbError> {
    let params = stmt.parameter_count();
    if st.args.len() > params {
        return Err(DbError::new(
            ErrorCode::SqlError,
            format!(
                "{} arguments given, the statement has {params} parameters",
                st.args.len()
            ),
        ));
    }
    for (i, v) in st.args.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, to_sql(v))?;
    }
    for a in &st.named_args {
        let Some(i) = stmt.parameter_index(&a.name)? else {
            return Err(DbError::new(
                ErrorCode::BadRequest,
                format!("no parameter named {}", a.name),
            ));
        };
        stmt.raw_bind_parameter(
            i,
            a.value
                .as_ref()
                .map(to_sql)
                .unwrap_or(ToSqlOutput::Borrowed(ValueRef::Null)),
        )?;
    }
    Ok(())
}

/// The result columns of a prepared statement.
pub fn columns(stmt: &rusqlite::Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            decltype: c.decl_type().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Reads rows until `max_rows`, the size limit, or the end (see [`page::fill`]); returns the
/// rows and whether the end was reached.
pub fn read_rows(
    rows: &mut rusqlite::Rows<'_>,
    ncols: usize,
    max_rows: usize,
    limit: Limit,
    carry: Option<&mut Option<SizedRow>>,
) -> Result<(Vec<Row>, bool), DbError> {
    page::fill(max_rows, limit, carry, || {
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(ncols);
        let mut bytes = 0;
        for i in 0..ncols {
            let (v, size) = from_sql(row.get_ref(i)?);
            bytes += size;
            values.push(v);
        }
        Ok(Some((Row { values }, bytes)))
    })
}

/// Runs one statement on `conn` (through its prepared-statement cache), under `sandbox` on a
/// client connection.
pub fn execute(
    conn: &Connection,
    sandbox: Option<&Sandbox>,
    st: &Statement,
    limit: Limit,
) -> Result<StatementResult, DbError> {
    run(conn, sandbox, st, limit, false).map(|r| r.unwrap_or_default())
}

/// Runs one statement on `c` if SQLite says it only reads; `None` (nothing run) if it may
/// write. One lookup in the statement cache for both (a reader's whole job).
pub fn execute_read(
    c: &Conn,
    st: &Statement,
    limit: Limit,
) -> Result<Option<StatementResult>, DbError> {
    run(&c.conn, c.sandbox.as_deref(), st, limit, true)
}

fn run(
    conn: &Connection,
    sandbox: Option<&Sandbox>,
    st: &Statement,
    limit: Limit,
    reads_only: bool,
) -> Result<Option<StatementResult>, DbError> {
    match sandbox {
        Some(s) => s.until(limit.deadline, || {
            run_now(conn, sandbox, st, limit, reads_only)
        }),
        None => run_now(conn, sandbox, st, limit, reads_only),
    }
}

fn run_now(
    conn: &Connection,
    sandbox: Option<&Sandbox>,
    st: &Statement,
    limit: Limit,
    reads_only: bool,
) -> Result<Option<StatementResult>, DbError> {
    if st.sql.trim().is_empty() {
        return Err(DbError::new(ErrorCode::BadRequest, "empty SQL text"));
    }
    let start = Instant::now();
    // A client's CREATE is prepared afresh, so the authorizer sees (and names) every view it
    // makes; everything else comes from the cache, whose entries were all prepared under this
    // connection's authorizer.
    let creating =
        sandbox.filter(|_| super::workers::first_keyword(&st.sql).eq_ignore_ascii_case("CREATE"));
    if let Some(s) = creating {
        s.clear_views();
    }
    let mut fresh;
    let mut cached;
    let stmt: &mut rusqlite::Statement<'_> = if creating.is_some() {
        fresh = conn.prepare(&st.sql)?;
        &mut fresh
    } else {
        cached = conn.prepare_cached(&st.sql)?;
        &mut cached
    };
    if reads_only && !stmt.readonly() {
        return Ok(None);
    }
    bind(stmt, st)?;
    let columns = columns(stmt);
    let readonly = stmt.readonly();
    let ncols = columns.len();
    let mut rows = stmt.raw_query();
    let (rows_out, done) = read_rows(&mut rows, ncols, usize::MAX, limit, None)?;
    drop(rows);
    if let Some(s) = creating {
        check_views(conn, s)?;
    }
    let mut out = StatementResult {
        columns,
        truncated: !done,
        ..StatementResult::default()
    };
    out.rows = rows_out;
    out.rows_read = out.rows.len() as u64;
    if !readonly {
        out.rows_affected = conn.changes();
        out.rows_written = out.rows_affected;
        out.last_insert_id = conn.last_insert_rowid();
    }
    out.duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(Some(out))
}

/// Reads every view the client's statement just created under the client identity: a view
/// whose body reaches what the client may not (a server table, introspection) is dropped and
/// the statement refused, so no such view exists for anyone to read later.
fn check_views(conn: &Connection, sandbox: &Sandbox) -> Result<(), DbError> {
    for view in sandbox.take_views() {
        let quoted = format!("main.\"{}\"", view.replace('"', "\"\""));
        let Err(e) = conn.prepare(&format!("SELECT * FROM {quoted}")) else {
            continue;
        };
        let dropped = sandbox.as_server(|| conn.execute_batch(&format!("DROP VIEW {quoted}")));
        if let Err(d) = dropped {
            log::error!("dropping the refused client view {view} failed: {d}");
        }
        let e = DbError::from(e);
        return Err(DbError::new(
            e.code,
            format!(
                "view {view} refused: its body cannot be read by clients ({})",
                e.message
            ),
        ));
    }
    Ok(())
}

/// True when `sql` can only read: decided by SQLite itself on a prepared statement.
pub fn is_readonly(conn: &Connection, sql: &str) -> Result<bool, DbError> {
    Ok(conn.prepare_cached(sql)?.readonly())
}

/// Runs a batch's steps in order on `conn`, inside a transaction the caller opened (a failing
/// SQLite statement undoes only itself, so `may_fail` steps need no savepoint).
pub fn run_batch(c: &Conn, batch: &Batch, limit: Limit) -> Result<BatchResult, DbError> {
    super::batch::run(batch, limit, |st, limit, _may_fail| c.execute(st, limit))
}

/// A SQLite connection holding an interactive transaction or a cursor, and the write turn
/// once it has written (held to its end).
struct SqliteTxn {
    conn: Conn,
    turn: Arc<WriteTurn>,
    busy: Duration,
    holding: Option<Turn>,
}

/// Opens connections for interactive transactions and cursors on the database at `path`.
pub fn txn_opener(
    path: PathBuf,
    busy: Duration,
    memory: SqliteMemory,
    turn: Arc<WriteTurn>,
) -> Opener {
    Arc::new(move |_purpose: Purpose, client: bool| {
        let conn = open_txn(&path, busy, memory, client)?;
        // Deferred: the snapshot starts at the first read, the write lock at the first write.
        conn.conn.execute_batch("BEGIN")?;
        Ok(Box::new(SqliteTxn {
            conn,
            turn: Arc::clone(&turn),
            busy,
            holding: None,
        }) as Box<dyn TxnConn>)
    })
}

impl TxnConn for SqliteTxn {
    fn execute(
        &mut self,
        st: &Statement,
        limit: Limit,
    ) -> Result<(StatementResult, bool), DbError> {
        let wrote = !is_readonly(&self.conn.conn, &st.sql).unwrap_or(false);
        if wrote && self.holding.is_none() {
            // In line with the writer's groups and the other transactions (`turn`).
            self.holding = self.turn.take(self.busy);
        }
        self.conn.execute(st, limit).map(|r| (r, wrote))
    }

    fn commit(&mut self, wrote: bool, committed: &AtomicU64) -> Result<u64, DbError> {
        // Advancing the index is itself a write, which a read-only transaction on an older
        // snapshot could not make (BUSY); so only a transaction that wrote takes one.
        if wrote {
            let index = self.conn.next_commit_index()?;
            self.conn.conn.execute_batch("COMMIT")?;
            self.holding = None;
            Ok(index)
        } else {
            self.conn.conn.execute_batch("COMMIT")?;
            Ok(committed.load(Ordering::Acquire))
        }
    }

    fn rollback(&mut self) {
        let _ = self.conn.conn.execute_batch("ROLLBACK");
        self.holding = None;
    }

    fn cursor(
        &mut self,
        st: &Statement,
        page_rows: usize,
        limit: Limit,
        page: &mut dyn FnMut(Result<Page, DbError>) -> bool,
    ) {
        let prepared = self
            .conn
            .conn
            .prepare(&st.sql)
            .map_err(DbError::from)
            .and_then(|mut stmt| {
                if !stmt.readonly() {
                    return Err(DbError::new(
                        ErrorCode::BadRequest,
                        "a cursor reads: its statement must be read-only",
                    ));
                }
                bind(&mut stmt, st)?;
                Ok(stmt)
            });
        let mut stmt = match prepared {
            Ok(s) => s,
            Err(e) => {
                page(Err(e));
                return;
            }
        };
        let mut columns = columns(&stmt);
        let ncols = columns.len();
        let mut rows = stmt.raw_query();
        let mut carry = None;
        let sandbox = self.conn.sandbox.as_deref();
        loop {
            let mut read = || read_rows(&mut rows, ncols, page_rows, limit, Some(&mut carry));
            let r = match sandbox {
                Some(s) => s.until(limit.deadline, read),
                None => read(),
            };
            let done = !matches!(r, Ok((_, false)));
            let more = page(r.map(|(rows, done)| Page {
                columns: std::mem::take(&mut columns),
                rows,
                done,
            }));
            if done || !more {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
