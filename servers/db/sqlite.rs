//! The embedded SQLite backend: opening connections, running statements and batches, and
//! turning SQLite's errors into the protocol's codes.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{ffi, Connection, OpenFlags};

use crate::proto::{
    batch_condition, step_outcome, value, Batch, BatchCondition, BatchResult, Column, ErrorCode,
    Row, Statement, StatementResult, StepOutcome, Value,
};

/// A failure with the code a client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DbError {
    /// The documented code.
    pub code: ErrorCode,
    /// What went wrong, in the database's words where it has them.
    pub message: String,
}

impl DbError {
    /// An error of `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DbError {
            code,
            message: message.into(),
        }
    }
}

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
                    ffi::ErrorCode::TypeMismatch => ErrorCode::TypeMismatch,
                    ffi::ErrorCode::TooBig => ErrorCode::TooLarge,
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

/// Opens (creating if needed) the database for writing: WAL, `synchronous=FULL` so that an
/// acknowledged commit survives power loss, and the tables the server keeps for itself.
pub fn open_writer(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _netmod_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
         INSERT OR IGNORE INTO _netmod_meta (k, v) VALUES ('commit_index', 0);
         CREATE TABLE IF NOT EXISTS _netmod_idempotency (
             key TEXT PRIMARY KEY, response BLOB NOT NULL, created INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

/// Opens a read-only connection (a WAL reader never blocks the writer or other readers).
pub fn open_reader(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The commit index stored in the database.
pub fn commit_index(conn: &Connection) -> Result<u64, DbError> {
    let v: i64 = conn.query_row(
        "SELECT v FROM _netmod_meta WHERE k = 'commit_index'",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Advances the stored commit index by one and returns it, inside the caller's transaction.
/// SQLite's write lock orders the writer's groups and interactive transactions, so every commit
/// gets its own index.
pub fn next_commit_index(conn: &Connection) -> Result<u64, DbError> {
    let v: i64 = conn
        .prepare_cached("UPDATE _netmod_meta SET v = v + 1 WHERE k = 'commit_index' RETURNING v")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Opens a connection for an interactive transaction (the database already exists).
pub fn open_txn(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn to_sql(v: &Value) -> SqlValue {
    match &v.kind {
        None | Some(value::Kind::Null(_)) => SqlValue::Null,
        Some(value::Kind::Integer(i)) => SqlValue::Integer(*i),
        Some(value::Kind::Real(f)) => SqlValue::Real(*f),
        Some(value::Kind::Text(t)) => SqlValue::Text(t.clone()),
        Some(value::Kind::Blob(b)) => SqlValue::Blob(b.to_vec()),
    }
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

/// Result size limit of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Bytes of rows (estimated as encoded) a result may carry.
    pub max_bytes: usize,
    /// Over the limit: cut and flag `truncated` instead of failing with TOO_LARGE.
    pub truncate: bool,
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
        stmt.raw_bind_parameter(i, a.value.as_ref().map(to_sql).unwrap_or(SqlValue::Null))?;
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

/// Reads rows until `max_rows`, the size limit (cut or TOO_LARGE per `limit.truncate`), or
/// the end; returns the rows and whether the end was reached.
pub fn read_rows(
    rows: &mut rusqlite::Rows<'_>,
    ncols: usize,
    max_rows: usize,
    limit: Limit,
) -> Result<(Vec<Row>, bool), DbError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < max_rows {
        let Some(row) = rows.next()? else {
            return Ok((out, true));
        };
        let mut values = Vec::with_capacity(ncols);
        for i in 0..ncols {
            let (v, size) = from_sql(row.get_ref(i)?);
            bytes += size;
            values.push(v);
        }
        if bytes > limit.max_bytes {
            if !limit.truncate {
                return Err(DbError::new(
                    ErrorCode::TooLarge,
                    format!("result over the limit of {} bytes", limit.max_bytes),
                ));
            }
            // A cursor carries this row on the next page; a plain result is cut here.
            return Ok((out, false));
        }
        out.push(Row { values });
    }
    Ok((out, false))
}

/// Runs one statement on `conn` (through its prepared-statement cache).
pub fn execute(
    conn: &Connection,
    st: &Statement,
    limit: Limit,
) -> Result<StatementResult, DbError> {
    if st.sql.trim().is_empty() {
        return Err(DbError::new(ErrorCode::BadRequest, "empty SQL text"));
    }
    let start = Instant::now();
    let mut stmt = conn.prepare_cached(&st.sql)?;
    bind(&mut stmt, st)?;
    let columns = columns(&stmt);
    let readonly = stmt.readonly();
    let ncols = columns.len();
    let mut rows = stmt.raw_query();
    let (rows_out, done) = read_rows(&mut rows, ncols, usize::MAX, limit)?;
    drop(rows);
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
    Ok(out)
}

/// True when `sql` can only read: decided by SQLite itself on a prepared statement.
pub fn is_readonly(conn: &Connection, sql: &str) -> Result<bool, DbError> {
    Ok(conn.prepare_cached(sql)?.readonly())
}

fn holds(cond: &BatchCondition, outcomes: &[StepOutcome], here: usize) -> Result<bool, DbError> {
    let step = |i: u32| -> Result<&StepOutcome, DbError> {
        let i = i as usize;
        if i >= here {
            return Err(DbError::new(
                ErrorCode::BadRequest,
                format!("step {here}'s condition names step {i}, which does not come before it"),
            ));
        }
        Ok(&outcomes[i])
    };
    Ok(match &cond.cond {
        None => true,
        Some(batch_condition::Cond::Ok(i)) => {
            matches!(step(*i)?.outcome, Some(step_outcome::Outcome::Ok(_)))
        }
        Some(batch_condition::Cond::Error(i)) => {
            matches!(step(*i)?.outcome, Some(step_outcome::Outcome::Error(_)))
        }
        Some(batch_condition::Cond::Not(c)) => !holds(c, outcomes, here)?,
        Some(batch_condition::Cond::And(l)) => {
            let mut all = true;
            for c in &l.conds {
                all &= holds(c, outcomes, here)?;
            }
            all
        }
        Some(batch_condition::Cond::Or(l)) => {
            let mut any = false;
            for c in &l.conds {
                any |= holds(c, outcomes, here)?;
            }
            any
        }
    })
}

/// Runs a batch's steps in order on `conn`, inside a transaction the caller opened. Returns the
/// outcomes, or the error of the first step whose failure rolls the batch back.
pub fn run_batch(conn: &Connection, batch: &Batch, limit: Limit) -> Result<BatchResult, DbError> {
    let mut outcomes: Vec<StepOutcome> = Vec::with_capacity(batch.steps.len());
    let mut budget = limit;
    for (i, step) in batch.steps.iter().enumerate() {
        let run = match &step.condition {
            Some(c) => holds(c, &outcomes, i)?,
            None => true,
        };
        let outcome = if !run {
            step_outcome::Outcome::Skipped(true)
        } else {
            let stmt = step.stmt.clone().unwrap_or_default();
            match execute(conn, &stmt, budget) {
                Ok(r) => {
                    budget.max_bytes = budget.max_bytes.saturating_sub(r.rows.len() * 16);
                    step_outcome::Outcome::Ok(r)
                }
                Err(e) if step.may_fail => step_outcome::Outcome::Error(crate::proto::Error {
                    code: e.code as i32,
                    message: e.message,
                    retryable: e.code.retryable(),
                }),
                Err(e) => {
                    return Err(DbError::new(
                        e.code,
                        format!("batch step {i} failed: {}", e.message),
                    ));
                }
            }
        };
        outcomes.push(StepOutcome {
            outcome: Some(outcome),
        });
    }
    Ok(BatchResult { steps: outcomes })
}
