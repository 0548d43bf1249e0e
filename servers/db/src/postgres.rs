//! The PostgreSQL backend: statements with the protocol's typed values, results, SQLSTATEs
//! turned into the protocol's codes, WAL positions as commit indexes, and connections for
//! interactive transactions and cursors.
//!
//! Values map as: integer ↔ `int8` (and `int2`, `int4`, `oid` on the way out; `bool` comes out
//! as 0/1), real ↔ `float8`/`float4`, blob ↔ `bytea`, text ↔ anything else, sent as text so the
//! server can read it as the statement needs (`timestamptz`, `numeric`, `uuid`, …). Placeholders
//! are SQLite's ([`protocol::placeholders`]), so one SQL text runs on both backends.

mod client_role;
mod txn;
mod values;

pub use txn::txn_opener;

use client_role::{creates, SET_CLIENT_ROLE};
use values::{columns, param, rows_of};
pub use values::{parse_lsn, unhex};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::DbError;
use super::libpq::{self, oid, Param, PgConn, PgError, PgResult, RowStream, TxnState};
use super::page::{self, Limit, SizedRow};
use protocol::placeholders::{to_dollar, Translated};
use protocol::proto::{value, Column, ErrorCode, Row, Statement, StatementResult, Value};

impl From<PgError> for DbError {
    fn from(e: PgError) -> Self {
        let s = e.sqlstate.as_str();
        let code = match s {
            "42P01" => ErrorCode::UnknownTable,
            "25006" => ErrorCode::ReadOnly,
            "57014" => ErrorCode::Timeout,
            "40001" | "40P01" | "55P03" | "55006" => ErrorCode::Busy,
            "42804" | "42846" | "42883" | "22P02" | "22003" | "22007" | "22008" | "22021"
            | "2200N" | "22P05" => ErrorCode::TypeMismatch,
            "54000" | "54001" | "54011" => ErrorCode::TooLarge,
            // insufficient_privilege: the sandbox's role may not (see `sandbox`).
            "42501" => ErrorCode::Forbidden,
            "" => ErrorCode::Unavailable,
            _ if s.starts_with("23") => ErrorCode::Constraint,
            _ if s.starts_with("08") || s.starts_with("57P") => ErrorCode::Unavailable,
            _ if s.starts_with("53") => ErrorCode::Overloaded,
            _ if s.starts_with("XX") => ErrorCode::Internal,
            _ => ErrorCode::SqlError,
        };
        DbError::new(code, format!("{} (SQLSTATE {})", e.message, e.sqlstate))
    }
}

/// Statements kept translated per connection before the cache is emptied.
const TRANSLATED_CAPACITY: usize = 512;
/// Rows fetched from the server at a time while reading a result.
const CHUNK_ROWS: usize = 256;

/// A connection with the statement caches of the backend.
#[derive(Debug)]
pub struct Pg {
    conn: PgConn,
    translated: HashMap<String, Arc<Translated>>,
    /// The session's settings, set again after every client statement (`RESET ALL` then
    /// these): temporary objects searched last, then what the worker set ([`Pg::set_session`]).
    session: Vec<String>,
}

/// Commands that only read.
fn reads_only(command: &str) -> bool {
    matches!(
        command,
        "SELECT" | "SHOW" | "EXPLAIN" | "FETCH" | "VALUES" | "TABLE" | ""
    )
}

/// A PostgreSQL server db-server connects to: its URL, and how long the server may leave a
/// connection attempt or sent data unanswered before the connection counts as dead.
///
/// Without that bound a server cut off by the network (no RST, no FIN: packets vanish) holds
/// a worker for the kernel's retransmission timeout, about 15 minutes, and an idle connection
/// to it for ever. The bound becomes libpq's `connect_timeout`, `tcp_user_timeout` and TCP
/// keepalives, unless the URL sets them itself.
///
/// ```no_run
/// use std::time::Duration;
/// use db::postgres::Endpoint;
/// let primary = Endpoint::new("postgresql://netmod@10.0.0.30/netmod", Duration::from_secs(5));
/// let pg = primary.connect()?;
/// # Ok::<(), db::error::DbError>(())
/// ```
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    defaults: Vec<(&'static str, String)>,
}

impl Endpoint {
    /// `url` with `timeout` (zero: libpq's and the kernel's defaults).
    pub fn new(url: impl Into<String>, timeout: Duration) -> Endpoint {
        let mut defaults = Vec::new();
        if !timeout.is_zero() {
            let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
            let half = secs.div_ceil(2).to_string();
            defaults = vec![
                // libpq rounds a connect_timeout under 2 s up to 2 s.
                ("connect_timeout", secs.to_string()),
                ("tcp_user_timeout", timeout.as_millis().to_string()),
                ("keepalives", "1".into()),
                ("keepalives_idle", half.clone()),
                ("keepalives_interval", half),
                ("keepalives_count", "2".into()),
            ];
        }
        Endpoint {
            url: url.into(),
            defaults,
        }
    }

    /// Opens a connection.
    pub fn connect(&self) -> Result<Pg, DbError> {
        let defaults: Vec<(&str, &str)> = self
            .defaults
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        Pg::start(PgConn::connect_with(&self.url, &defaults)?)
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        let url = &self.url;
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let user = &url[s + 3..at];
                let user = user.split(':').next().unwrap_or_default();
                format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
            }
            _ => url.to_string(),
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Pg {
    /// Connects to `url` with libpq's defaults (see [`Endpoint`] for bounded waits).
    pub fn connect(url: &str) -> Result<Pg, DbError> {
        Pg::start(PgConn::connect(url)?)
    }

    /// A new connection's session: the search path it was given, with `pg_temp` named last,
    /// so that a temporary table (which a client statement may have left behind before the
    /// reset that follows it) never hides a permanent one from a server statement.
    fn start(conn: PgConn) -> Result<Pg, DbError> {
        let mut pg = Pg {
            conn,
            translated: HashMap::new(),
            session: Vec::new(),
        };
        let path = pg
            .scalar("SELECT current_setting('search_path')", &[])?
            .and_then(|p| String::from_utf8(p).ok())
            .unwrap_or_default();
        let path = if path.trim().is_empty() {
            "pg_temp".to_string()
        } else {
            format!("{path}, pg_temp")
        };
        pg.set_session(&format!("SET search_path = {path}"))?;
        Ok(pg)
    }

    /// Runs a session setting (`SET …`, no parameters) and keeps it: it is set again after
    /// every client statement, which ends with `RESET ALL`.
    pub fn set_session(&mut self, sql: &str) -> Result<(), DbError> {
        if sql.is_empty() {
            return Ok(());
        }
        self.exec(sql)?;
        self.session.push(sql.to_string());
        Ok(())
    }

    /// The connection's socket (for socket options; do not read or write it).
    pub fn socket(&self) -> std::ffi::c_int {
        self.conn.socket()
    }

    /// True while the connection is usable.
    pub fn is_ok(&self) -> bool {
        self.conn.is_ok()
    }

    /// Where the connection stands with respect to transactions.
    pub fn txn_state(&self) -> TxnState {
        self.conn.txn_state()
    }

    /// Runs control SQL without parameters (`BEGIN`, `COMMIT`, `SET …`).
    pub fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.exec(sql)?;
        Ok(())
    }

    /// Runs internal SQL with parameters; returns the first column of the first row.
    pub fn scalar(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Vec<u8>>, DbError> {
        let res = self.conn.query(sql, params)?;
        Ok(res.value(0, 0).map(<[u8]>::to_vec))
    }

    /// The primary's current WAL position: after a COMMIT returns, at or past that commit.
    pub fn current_lsn(&mut self) -> Result<u64, DbError> {
        self.lsn("SELECT pg_current_wal_lsn()")
    }

    /// A standby's replayed WAL position: every commit up to it is visible there.
    pub fn replay_lsn(&mut self) -> Result<u64, DbError> {
        self.lsn("SELECT pg_last_wal_replay_lsn()")
    }

    fn lsn(&mut self, sql: &str) -> Result<u64, DbError> {
        self.scalar(sql, &[])?
            .as_deref()
            .and_then(parse_lsn)
            .ok_or_else(|| DbError::new(ErrorCode::Internal, format!("{sql}: no WAL position")))
    }

    fn translate(&mut self, sql: &str) -> Arc<Translated> {
        if let Some(t) = self.translated.get(sql) {
            return Arc::clone(t);
        }
        if self.translated.len() >= TRANSLATED_CAPACITY {
            self.translated.clear();
        }
        let t = Arc::new(to_dollar(sql));
        self.translated.insert(sql.to_string(), Arc::clone(&t));
        t
    }

    /// The statement's SQL in PostgreSQL's placeholders and its arguments in order.
    fn bind<'s>(
        &mut self,
        st: &'s Statement,
    ) -> Result<(Arc<Translated>, Vec<Param<'s>>), DbError> {
        if st.sql.trim().is_empty() {
            return Err(DbError::new(ErrorCode::BadRequest, "empty SQL text"));
        }
        let t = self.translate(&st.sql);
        if st.args.len() > t.params {
            return Err(DbError::new(
                ErrorCode::SqlError,
                format!(
                    "{} arguments given, the statement has {} parameters",
                    st.args.len(),
                    t.params
                ),
            ));
        }
        let mut params = vec![Param::Null; t.params];
        for (i, v) in st.args.iter().enumerate() {
            params[i] = param(Some(v));
        }
        for a in &st.named_args {
            let Some(i) = t.index_of(&a.name) else {
                return Err(DbError::new(
                    ErrorCode::BadRequest,
                    format!("no parameter named {}", a.name),
                ));
            };
            params[i - 1] = param(a.value.as_ref());
        }
        Ok((t, params))
    }

    /// Runs one statement (prepared once per connection); says whether it may have written.
    /// Rows stream in chunks, so a result over the limit never sits whole in memory.
    pub fn execute(
        &mut self,
        st: &Statement,
        limit: Limit,
        client: bool,
    ) -> Result<(StatementResult, bool), DbError> {
        if client {
            // As the client role, in the same round trip (see `execute_many`).
            let (mut out, _) = self.execute_many(&[(st, limit)], false, None, true)?;
            return out
                .pop()
                .flatten()
                .unwrap_or_else(|| Err(DbError::new(ErrorCode::Internal, "statement not run")));
        }
        let start = Instant::now();
        let (t, params) = self.bind(st)?;
        let mut stream = self.conn.stream(&t.sql, &params, CHUNK_ROWS)?;
        let r = match read_result(&mut stream, limit, start) {
            Ok(r) => Ok(r),
            Err(Fail::Db(e)) => Err(e),
            Err(Fail::Aborted) => Err(DbError::new(ErrorCode::Internal, "statement not run")),
        };
        drop(stream);
        if r.is_ok() && creates(&st.sql, client) {
            self.after_create();
        }
        r
    }

    /// Runs statements in one round trip: in one transaction (`together`: committed at once,
    /// or not at all if one fails) or each on its own. `then`, a statement without parameters,
    /// runs after them (after the commit); its first value comes back.
    ///
    /// Per statement: `Some(outcome)`, or `None` when it did not run because another statement
    /// of its transaction failed. An `Err` means the connection failed (outcomes unknown).
    #[allow(clippy::type_complexity)]
    pub fn execute_many(
        &mut self,
        sts: &[(&Statement, Limit)],
        together: bool,
        then: Option<&str>,
        client: bool,
    ) -> Result<
        (
            Vec<Option<Result<(StatementResult, bool), DbError>>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        let start = Instant::now();
        if let ([(st, limit)], None) = (sts, then) {
            if client {
                return self.pipelined(sts, together, then, start, true);
            }
            // One statement alone: no pipeline needed.
            return match self.execute(st, *limit, false) {
                Err(e) if e.code == ErrorCode::Unavailable && !self.is_ok() => Err(e),
                r => Ok((vec![Some(r)], None)),
            };
        }
        self.pipelined(sts, together, then, start, client)
    }

    /// `execute_many` over a pipeline. A sandboxed statement runs between `SET ROLE
    /// netmod_client` and `RESET ROLE` in its own transaction segment, so the role never
    /// outlives it: a failure rolls the `SET` back with the statement.
    #[allow(clippy::type_complexity)]
    fn pipelined(
        &mut self,
        sts: &[(&Statement, Limit)],
        together: bool,
        then: Option<&str>,
        start: Instant,
        client: bool,
    ) -> Result<
        (
            Vec<Option<Result<(StatementResult, bool), DbError>>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        let mut outcomes: Vec<Option<Result<(StatementResult, bool), DbError>>> =
            (0..sts.len()).map(|_| None).collect();
        let mut bound = Vec::with_capacity(sts.len());
        let mut which = Vec::with_capacity(sts.len());
        for (i, (st, _)) in sts.iter().enumerate() {
            match self.bind(st) {
                Ok(b) => {
                    bound.push(b);
                    which.push(i);
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        // The statements on the wire: each one's index in `sts`, or `None` for the role
        // changes around a sandboxed one.
        let mut stmts: Vec<(&str, &[Param<'_>])> = Vec::with_capacity(bound.len());
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(bound.len());
        let mut syncs: Vec<usize> = Vec::new();
        for ((t, p), &i) in bound.iter().zip(&which) {
            let sandboxed = client;
            if sandboxed {
                stmts.push((SET_CLIENT_ROLE, &[]));
                slot.push(None);
            }
            stmts.push((t.sql.as_str(), p.as_slice()));
            slot.push(Some(i));
            if sandboxed {
                // Nothing the statement set outlives it: role, settings (a function may have
                // called set_config), temporary objects; then the connection's own settings.
                for reset in ["RESET ROLE", "RESET ALL", "DISCARD TEMP"]
                    .into_iter()
                    .chain(self.session.iter().map(String::as_str))
                {
                    stmts.push((reset, &[]));
                    slot.push(None);
                }
            }
            if !together {
                syncs.push(stmts.len() - 1);
            }
        }
        let n = stmts.len();
        if together && n > 0 {
            syncs.push(n - 1);
        }
        if let Some(sql) = then {
            stmts.push((sql, &[]));
        }
        if stmts.is_empty() {
            return Ok((outcomes, None));
        }
        let mut then_value = None;
        // A role change that failed (e.g. the role is missing): the statement it guarded
        // is told why rather than "not run".
        let mut role_error: Option<DbError> = None;
        self.conn
            .pipeline(&stmts, &syncs, CHUNK_ROWS, |k, stream| {
                if k >= n {
                    if let Ok(s) = stream {
                        if let Ok(Some(res)) = s.next_result() {
                            then_value = res.value(0, 0).map(<[u8]>::to_vec);
                        }
                    }
                    return;
                }
                let Some(i) = slot[k] else {
                    let failed = match stream {
                        Ok(s) => loop {
                            match s.next_result() {
                                Ok(Some(_)) => {}
                                Ok(None) => break None,
                                Err(e) => break Some(e),
                            }
                        },
                        Err(e) => Some(e),
                    };
                    if let Some(Fail::Db(e)) = failed.map(Fail::from) {
                        // Fail closed: without the role, a sandboxed statement does not run.
                        role_error.get_or_insert(DbError::new(
                            ErrorCode::Forbidden,
                            format!("the client sandbox is not available: {}", e.message),
                        ));
                    }
                    return;
                };
                let r = match stream {
                    Ok(s) => read_result(s, sts[i].1, start),
                    Err(e) => Err(Fail::from(e)),
                };
                outcomes[i] = match r {
                    Ok(r) => Some(Ok(r)),
                    Err(Fail::Db(e)) => Some(Err(e)),
                    Err(Fail::Aborted) => role_error.take().map(Err),
                };
            })?;
        let created = sts
            .iter()
            .zip(&outcomes)
            .any(|((st, _), o)| matches!(o, Some(Ok(_))) && creates(&st.sql, client));
        if created {
            self.after_create();
        }
        Ok((outcomes, then_value))
    }

    /// Runs statements in one transaction and one round trip: those that succeed are
    /// committed together; one that fails gets its error alone, and the others (rolled back
    /// with it) run again without it. `then` runs after the final commit; its first value
    /// comes back. An `Err` means the connection failed (whether the group committed is
    /// unknown).
    #[allow(clippy::type_complexity)]
    pub fn execute_group(
        &mut self,
        sts: &[(&Statement, Limit)],
        then: Option<&str>,
        client: bool,
    ) -> Result<
        (
            Vec<Result<(StatementResult, bool), DbError>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        let mut outcomes: Vec<Option<Result<(StatementResult, bool), DbError>>> =
            (0..sts.len()).map(|_| None).collect();
        // Indexes still to run.
        let mut todo: Vec<usize> = (0..sts.len()).collect();
        loop {
            let batch: Vec<(&Statement, Limit)> = todo.iter().map(|&i| sts[i]).collect();
            let (ran, value) = self.execute_many(&batch, true, then, client)?;
            let failed = ran.iter().any(|r| !matches!(r, Some(Ok(_))));
            let mut again = Vec::new();
            for (&i, r) in todo.iter().zip(ran) {
                match r {
                    Some(Err(e)) => outcomes[i] = Some(Err(e)),
                    Some(Ok(ok)) if !failed => outcomes[i] = Some(Ok(ok)),
                    _ => again.push(i),
                }
            }
            if !failed || again.is_empty() {
                let done = outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(DbError::new(ErrorCode::Internal, "not run"))))
                    .collect();
                return Ok((done, value));
            }
            todo = again;
        }
    }
}

/// Why a statement of a pipeline has no result.
enum Fail {
    /// Another statement of its transaction failed first; it did not run.
    Aborted,
    Db(DbError),
}

impl From<PgError> for Fail {
    fn from(e: PgError) -> Self {
        if e.sqlstate == libpq::ABORTED {
            Fail::Aborted
        } else {
            Fail::Db(e.into())
        }
    }
}

/// Reads one statement's results from `stream` into a result under `limit`; also says whether
/// the statement may have written.
fn read_result(
    stream: &mut RowStream<'_>,
    limit: Limit,
    start: Instant,
) -> Result<(StatementResult, bool), Fail> {
    struct Collect {
        out: StatementResult,
        types: Vec<libpq::Oid>,
        pending: std::vec::IntoIter<SizedRow>,
        last: Option<PgResult>,
    }
    impl Collect {
        fn take(&mut self, res: PgResult) {
            if self.out.columns.is_empty() && res.columns() > 0 {
                self.out.columns = columns(&res);
                self.types = (0..res.columns()).map(|c| res.column_type(c)).collect();
            }
            self.pending = rows_of(&res, &self.types);
            self.last = Some(res);
        }
    }
    let mut c = Collect {
        out: StatementResult::default(),
        types: Vec::new(),
        pending: Vec::new().into_iter(),
        last: None,
    };
    // The first result apart: an aborted statement says so there.
    if let Some(res) = stream.next_result()? {
        c.take(res);
    }
    let (rows, done) = page::fill(usize::MAX, limit, None, || loop {
        if let Some(r) = c.pending.next() {
            return Ok(Some(r));
        }
        let Some(res) = stream.next_result()? else {
            return Ok(None);
        };
        c.take(res);
    })
    .map_err(Fail::Db)?;
    // Read what is left (a cut result), so the final command tag is known.
    while let Some(res) = stream.next_result()? {
        c.last = Some(res);
    }
    let (mut out, last) = (c.out, c.last);
    let command = last.as_ref().map(PgResult::command).unwrap_or_default();
    let wrote = !reads_only(&command);
    out.rows = rows;
    out.truncated = !done;
    out.rows_read = out.rows.len() as u64;
    if wrote {
        out.rows_affected = last.as_ref().map_or(0, PgResult::rows_affected);
        out.rows_written = out.rows_affected;
    }
    out.duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok((out, wrote))
}
