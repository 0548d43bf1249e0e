//! The PostgreSQL backend: statements with the protocol's typed values, results, SQLSTATEs
//! turned into the protocol's codes, WAL positions as commit indexes, and connections for
//! interactive transactions and cursors.
//!
//! Values map as: integer ↔ `int8` (and `int2`, `int4`, `oid` on the way out; `bool` comes out
//! as 0/1), real ↔ `float8`/`float4`, blob ↔ `bytea`, text ↔ anything else, sent as text so the
//! server can read it as the statement needs (`timestamptz`, `numeric`, `uuid`, …). Placeholders
//! are SQLite's ([`protocol::placeholders`]), so one SQL text runs on both backends.

mod client_role;
mod endpoint;
mod pipeline;
mod results;
mod txn;
mod values;
#[allow(unused_imports)]
pub use pipeline::*;
#[allow(unused_imports)]
pub use results::*;

pub use client_role::{valid_role_name, ClientLogin};
pub use endpoint::Endpoint;
pub use txn::txn_opener;

use client_role::creates;
use values::{columns, param, rows_of};
pub use values::{parse_lsn, unhex};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

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

/// A connection with the statement caches of the backend: a server connection (db-server's
/// own login, the servers' schema only on its search path) or a client connection (the client
/// login, see [`ClientLogin`]).
#[derive(Debug)]
pub struct Pg {
    conn: PgConn,
    translated: HashMap<String, Arc<Translated>>,
    /// The session's settings, set again after every client statement (`RESET ALL` then
    /// these): the search path, then what the worker set ([`Pg::set_session`]).
    session: Vec<String>,
    /// A client connection: every statement is preceded by a reset (see the comment above
    /// `LIGHT_RESET`), in the same round trip.
    client: bool,
    /// On a client connection: the reset call, the `statement_timeout` a statement without a
    /// deadline gets, and whose statement ran last (see [`crate::page::Limit::owner`]).
    reset_sql: String,
    /// The check that a reset ran to its end (see `_netmod_reset` in `client_role`).
    reset_done_sql: String,
    standing_timeout_ms: u64,
    owner: Option<u64>,
    /// Ask, in each write transaction, which tables it wrote rows of, into `written` (a
    /// writer's client connection while somebody watches: see [`Pg::track_written`]).
    track_written: bool,
    written: Vec<String>,
    /// A reset of this client connection was cut short: the connection is given up, and
    /// none of the statements after the reset ran (see [`Pg::reset_failed`]).
    reset_failed: bool,
    /// On a server connection, the client role that tables it creates are shared with.
    share_with: Option<String>,
    /// Client statements are followed by the resets (see [`Pg::owned_by_one`]).
    resets: bool,
    /// How many outages of the primary had begun when this connection was made (see
    /// `PrimaryGate`): one made before the latest may be to a host that is gone.
    pub(crate) outages_before: u64,
}

// The full reset of a shared client connection is one call of the function `_netmod_reset`
// (made by `client_role`), sent before a statement whose owner (user) is not the one whose
// statement ran last there: nothing another user's statement set or left in the session
// reaches it — settings (`SET`, or `set_config` from inside a function: RESET ALL), cursors
// (CLOSE ALL), prepared statements (DEALLOCATE ALL), LISTENs (UNLISTEN *), session advisory
// locks (pg_advisory_unlock_all), temporary tables (DISCARD TEMP); then the connection's own
// settings and the statement's timeout. It runs inside a transaction block too (a statement
// of a group). One call rather than a statement each, and only on a change of owner: every
// statement on a client connection is parsed afresh, and RESET ALL with the search path set
// again cost as much as the client's statement itself.

/// Before a statement of the same owner as the last on a shared client connection: the
/// session advisory locks it took are let go, and the statement gets its own timeout ($1, ms).
const LIGHT_RESET: &str = "SELECT pg_catalog.pg_advisory_unlock_all(), \
                           pg_catalog.set_config('statement_timeout', $1, false)";

/// A client connection's memory per sort or hash.
const CLIENT_WORK_MEM: &str = "SET work_mem = '16MB'";

/// Before a statement with a deadline on a client connection of one caller.
const SET_TIMEOUT: &str = "SELECT pg_catalog.set_config('statement_timeout', $1, false)";

/// `name` quoted as a PostgreSQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Commands that only read.
fn reads_only(command: &str) -> bool {
    matches!(
        command,
        "SELECT" | "SHOW" | "EXPLAIN" | "FETCH" | "VALUES" | "TABLE" | ""
    )
}

impl Pg {
    /// Connects to `url` with libpq's defaults (see [`Endpoint`] for bounded waits), as a
    /// server connection.
    pub fn connect(url: &str) -> Result<Pg, DbError> {
        Pg::start(PgConn::connect(url)?)
    }

    /// A server connection's session: the search path fixed to the servers' schema (the
    /// first schema of the path the URL gave that exists, PostgreSQL's `current_schema()`)
    /// and `pg_temp`, named last so that no temporary table hides a server table. The client
    /// login may not create anything in that schema (db-server checks at start), so no
    /// client object can change what an unqualified name in a server statement means.
    fn start(conn: PgConn) -> Result<Pg, DbError> {
        let mut pg = Pg {
            conn,
            translated: HashMap::new(),
            session: Vec::new(),
            client: false,
            reset_sql: String::new(),
            reset_done_sql: String::new(),
            standing_timeout_ms: 0,
            owner: None,
            track_written: false,
            written: Vec::new(),
            reset_failed: false,
            share_with: None,
            resets: false,
            outages_before: 0,
        };
        let schema = pg.schema()?;
        pg.set_session(&format!(
            "SET search_path = {}, pg_temp",
            quote_ident(&schema)
        ))?;
        Ok(pg)
    }

    /// A client connection's session: statements prepared inline and kept until a reset
    /// deallocates them (a client may `DEALLOCATE` or `PREPARE` too: see
    /// [`PgConn::prepare_inline`]), the client schema then the servers' on the search path.
    fn start_client(mut conn: PgConn, login: &ClientLogin) -> Result<Pg, DbError> {
        conn.prepare_inline();
        let mut pg = Pg {
            conn,
            translated: HashMap::new(),
            session: Vec::new(),
            client: true,
            reset_sql: login.reset_sql(),
            reset_done_sql: login.reset_done_sql(),
            standing_timeout_ms: login.standing_timeout_ms,
            owner: None,
            track_written: false,
            written: Vec::new(),
            reset_failed: false,
            share_with: None,
            resets: true,
            outages_before: 0,
        };
        pg.set_session(&login.search_path())?;
        // Memory per sort or hash of a client statement (the server's default is 4 MB; an
        // administrator's ALTER ROLE … SET work_mem is overridden here). Disk it may spill to
        // is temp_file_limit, which only a superuser sets (docs/operations.md).
        pg.set_session(CLIENT_WORK_MEM)?;
        if pg.standing_timeout_ms > 0 {
            pg.exec(&format!(
                "SET statement_timeout = {}",
                pg.standing_timeout_ms
            ))?;
        }
        Ok(pg)
    }

    /// The schema unqualified names are created in (`current_schema()`).
    pub fn schema(&mut self) -> Result<String, DbError> {
        self.scalar("SELECT current_schema()", &[])?
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| {
                DbError::new(
                    ErrorCode::BadRequest,
                    "no schema of the search path exists (set one with the URL's \
                     options=-csearch_path%3D…, or create a schema named after the user)",
                )
            })
    }

    /// True for a client connection.
    pub fn is_client(&self) -> bool {
        self.client
    }

    /// This client connection serves one caller and is closed after (an interactive
    /// transaction, a cursor): its statements go without the resets, as nothing they leave
    /// can reach another caller.
    pub fn owned_by_one(&mut self) {
        self.resets = false;
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

    /// From now on (`on`), every transaction of this connection's statements also asks
    /// PostgreSQL which tables it wrote rows of (`pg_stat_xact_user_tables`), in the same round
    /// trip; [`Pg::take_written`] gives them. For a client's writes, whose text does not say
    /// (a function, a trigger on the client's own table may write anywhere the client may):
    /// change notices must name what was written.
    pub fn track_written(&mut self, on: bool) {
        self.track_written = on;
    }

    /// The tables written since the last call (see [`Pg::track_written`]).
    pub fn take_written(&mut self) -> Vec<String> {
        std::mem::take(&mut self.written)
    }

    /// A reset of this client connection before another user's statement was cut short (the
    /// last user's own `statement_timeout` can cancel it): the connection is given up, and
    /// the statements sent behind the reset did not run (their transaction was refused by
    /// the check that follows every reset) — writes among them may be sent again elsewhere.
    pub fn reset_failed(&self) -> bool {
        self.reset_failed
    }

    /// The server reached, `host:port` (see [`PgConn::server`]).
    pub fn server(&self) -> String {
        self.conn.server()
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
    ) -> Result<(StatementResult, bool), DbError> {
        if self.client {
            // With its deadline and the resets, in the same round trip (see `execute_many`).
            let (mut out, _) = self.execute_many(&[(st, limit)], false, None)?;
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
        if r.is_ok() && !self.client && creates(&st.sql) {
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
    ) -> Result<
        (
            Vec<Option<Result<(StatementResult, bool), DbError>>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        let start = Instant::now();
        if let ([(st, limit)], None) = (sts, then) {
            if self.client {
                return self.pipelined(sts, together, then, start);
            }
            // One statement alone: no pipeline needed.
            return match self.execute(st, *limit) {
                Err(e) if e.code == ErrorCode::Unavailable && !self.is_ok() => Err(e),
                r => Ok((vec![Some(r)], None)),
            };
        }
        self.pipelined(sts, together, then, start)
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
            let (ran, value) = self.execute_many(&batch, true, then)?;
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
