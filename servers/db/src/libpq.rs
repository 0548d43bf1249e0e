//! A small safe layer over libpq (the `pq-sys` crate, with libpq built from source, so no system
//! library is needed): blocking connections, statements prepared once per connection and run by
//! name, text-format results.
//!
//! libpq rather than the `postgres` crate: that crate drives its connections with a tokio
//! runtime, and the product runs no async runtime. libpq is PostgreSQL's own client library;
//! blocking calls are exactly what a database worker thread wants.
//!
//! ```no_run
//! use db::libpq::{Param, PgConn};
//! let mut conn = PgConn::connect("postgresql://postgres@127.0.0.1:5432/postgres")?;
//! let res = conn.query("SELECT $1::int8 + 1", &[Param::Int(41)])?;
//! assert_eq!(res.value(0, 0), Some(&b"42"[..]));
//! # Ok::<(), db::libpq::PgError>(())
//! ```

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;

use pq_sys as ffi;

/// A type OID of PostgreSQL.
pub type Oid = u32;

/// Type OIDs the backend names or binds.
pub mod oid {
    use super::Oid;
    /// `bool`
    pub const BOOL: Oid = 16;
    /// `bytea`
    pub const BYTEA: Oid = 17;
    /// `int8`
    pub const INT8: Oid = 20;
    /// `int2`
    pub const INT2: Oid = 21;
    /// `int4`
    pub const INT4: Oid = 23;
    /// `oid`
    pub const OID: Oid = 26;
    /// `float4`
    pub const FLOAT4: Oid = 700;
    /// `float8`
    pub const FLOAT8: Oid = 701;
    /// Let the server infer the type from the statement.
    pub const UNKNOWN: Oid = 0;
}

/// The `sqlstate` of a statement skipped in a pipeline because an earlier one in its
/// transaction failed (not a PostgreSQL code).
pub const ABORTED: &str = "ABORT";

/// A failure reported by libpq or the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PgError {
    /// The five-character SQLSTATE; empty when the failure is on the client side (connection).
    pub sqlstate: String,
    /// libpq's or the server's message, trimmed.
    pub message: String,
}

impl PgError {
    fn client(message: impl Into<String>) -> Self {
        PgError {
            sqlstate: String::new(),
            message: message.into(),
        }
    }
}

/// A parameter value, sent in the binary format for numbers and bytes (exact, no parsing) and
/// in text for text (so that the server may read it as any type the statement needs).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// `int8`.
    Int(i64),
    /// `float8`.
    Real(f64),
    /// Text; a NUL byte is refused (PostgreSQL text cannot hold one).
    Text(&'a str),
    /// `bytea`.
    Blob(&'a [u8]),
}

impl Param<'_> {
    /// The type the statement is prepared with for this value.
    pub fn type_oid(&self) -> Oid {
        match self {
            Param::Int(_) => oid::INT8,
            Param::Real(_) => oid::FLOAT8,
            Param::Blob(_) => oid::BYTEA,
            Param::Null | Param::Text(_) => oid::UNKNOWN,
        }
    }
}

/// One result of a statement; freed on drop.
#[derive(Debug)]
pub struct PgResult {
    raw: NonNull<ffi::PGresult>,
}

// SAFETY: a PGresult is plain memory owned by this value alone; nothing else points into it.
unsafe impl Send for PgResult {}

impl Drop for PgResult {
    fn drop(&mut self) {
        // SAFETY: `raw` came from libpq and is cleared exactly once.
        unsafe { ffi::PQclear(self.raw.as_ptr()) }
    }
}

/// The text at `p`, trimmed; empty for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libpq returns NUL-terminated strings that live as long as their owner.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

impl PgResult {
    fn status(&self) -> ffi::ExecStatusType {
        // SAFETY: valid result pointer.
        unsafe { ffi::PQresultStatus(self.raw.as_ptr()) }
    }

    fn error(&self) -> PgError {
        // SAFETY: valid result pointer; the returned strings belong to it.
        let (state, msg) = unsafe {
            (
                ffi::PQresultErrorField(self.raw.as_ptr(), ffi::PG_DIAG_SQLSTATE as c_int),
                ffi::PQresultErrorMessage(self.raw.as_ptr()),
            )
        };
        // SAFETY: both are NULL or strings owned by this result, alive while `self` is.
        let (sqlstate, message) = unsafe { (owned(state), owned(msg)) };
        PgError {
            sqlstate,
            message: message.trim_start_matches("ERROR:").trim().to_string(),
        }
    }

    /// Rows in the result.
    pub fn rows(&self) -> usize {
        // SAFETY: valid result pointer.
        usize::try_from(unsafe { ffi::PQntuples(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// Columns in the result.
    pub fn columns(&self) -> usize {
        // SAFETY: valid result pointer.
        usize::try_from(unsafe { ffi::PQnfields(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// The name of column `col`.
    pub fn column_name(&self, col: usize) -> String {
        // SAFETY: valid result pointer; libpq checks the index and returns NULL when out of range.
        unsafe { owned(ffi::PQfname(self.raw.as_ptr(), col as c_int)) }
    }

    /// The type of column `col`.
    pub fn column_type(&self, col: usize) -> Oid {
        // SAFETY: as above; out of range gives 0.
        unsafe { ffi::PQftype(self.raw.as_ptr(), col as c_int) }
    }

    /// The text of a value, `None` for NULL (or out of range).
    pub fn value(&self, row: usize, col: usize) -> Option<&[u8]> {
        if row >= self.rows() || col >= self.columns() {
            return None;
        }
        let (r, c) = (row as c_int, col as c_int);
        // SAFETY: indexes checked above; the bytes live as long as `self`.
        unsafe {
            if ffi::PQgetisnull(self.raw.as_ptr(), r, c) != 0 {
                return None;
            }
            let p = ffi::PQgetvalue(self.raw.as_ptr(), r, c) as *const u8;
            let len = usize::try_from(ffi::PQgetlength(self.raw.as_ptr(), r, c)).unwrap_or(0);
            Some(std::slice::from_raw_parts(p, len))
        }
    }

    /// Rows an INSERT, UPDATE, DELETE or MERGE changed (0 for other commands).
    pub fn rows_affected(&self) -> u64 {
        // SAFETY: valid result pointer; the string belongs to it.
        unsafe { owned(ffi::PQcmdTuples(self.raw.as_ptr())) }
            .parse()
            .unwrap_or(0)
    }

    /// The command tag's first word (`SELECT`, `INSERT`, …).
    pub fn command(&self) -> String {
        // SAFETY: valid result pointer; the string belongs to it.
        let tag = unsafe { owned(ffi::PQcmdStatus(self.raw.as_ptr())) };
        tag.split(' ').next().unwrap_or_default().to_string()
    }
}

struct Prepared {
    name: CString,
    types: Vec<Oid>,
}

/// Statements kept prepared per connection before the cache is emptied.
const CACHE_CAPACITY: usize = 512;

/// How a statement is sent.
#[derive(Debug)]
enum How {
    /// Its text, unnamed: parsed with this run.
    Text(CString),
    /// The name it is prepared under.
    Named(CString),
    /// Its Parse under a new name, then its run (in a pipeline: no round trip of its own).
    Parse { name: CString, text: CString },
}

impl How {
    /// The prepared statement's name, if it has one.
    fn name(&self) -> Option<&CString> {
        match self {
            How::Text(_) => None,
            How::Named(n) | How::Parse { name: n, .. } => Some(n),
        }
    }
}

/// One blocking connection. It may move between threads but is used by one at a time.
pub struct PgConn {
    raw: NonNull<ffi::PGconn>,
    prepared: HashMap<String, Vec<Prepared>>,
    count: usize,
    next_name: u64,
    /// Statements go unnamed (parsed with each run) rather than prepared and cached: see
    /// [`PgConn::prepare_nothing`].
    unnamed: bool,
    /// Pipelines prepare their statements inline (see [`PgConn::prepare_inline`]).
    inline: bool,
    /// A statement met a prepared statement missing or already there (a client's `DEALLOCATE`
    /// or `PREPARE`): the cache was emptied; see [`PgConn::take_lost_names`].
    lost_names: bool,
    /// Set by [`PgConn::give_up`]: the connection counts as broken.
    given_up: bool,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("prepared", &self.count)
            .finish()
    }
}

// SAFETY: a PGconn may be used from any thread as long as one thread at a time does; `&mut self`
// on every call and no `Sync` see to that.
unsafe impl Send for PgConn {}

impl Drop for PgConn {
    fn drop(&mut self) {
        // SAFETY: `raw` came from PQconnectdb and is finished exactly once.
        unsafe { ffi::PQfinish(self.raw.as_ptr()) }
    }
}

unsafe extern "C" fn notice(_arg: *mut std::ffi::c_void, message: *const c_char) {
    // SAFETY: libpq passes a NUL-terminated message valid for the duration of the callback.
    log::debug!("PostgreSQL: {}", unsafe { owned(message) });
}

/// Where a connection stands with respect to transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// Not in a transaction.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a transaction block that failed: only ROLLBACK helps.
    Failed,
    /// The connection is broken.
    Broken,
}

impl PgConn {
    /// Connects with a `postgresql://` URL or a `key=value` connection string.
    pub fn connect(url: &str) -> Result<PgConn, PgError> {
        PgConn::connect_with(url, &[])
    }

    /// Connects with `url`, taking `defaults` (libpq keyword, value) for what the URL does
    /// not set: a setting in the URL wins.
    ///
    /// ```no_run
    /// use db::libpq::PgConn;
    /// // Give up on a server that does not answer within 5 s, unless the URL says otherwise.
    /// let conn = PgConn::connect_with(
    ///     "postgresql://postgres@10.0.0.5/app",
    ///     &[("connect_timeout", "5"), ("tcp_user_timeout", "5000")],
    /// )?;
    /// # Ok::<(), db::libpq::PgError>(())
    /// ```
    pub fn connect_with(url: &str, defaults: &[(&str, &str)]) -> Result<PgConn, PgError> {
        PgConn::connect_params(url, defaults, &[])
    }

    /// Like [`PgConn::connect_with`], and `overrides` win over the URL's own settings (the
    /// client login's user and password on a URL that names db-server's); an override with
    /// an empty value takes the URL's setting away (libpq then looks where it looks when none
    /// is given: the environment, the password file).
    pub fn connect_params(
        url: &str,
        defaults: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> Result<PgConn, PgError> {
        let c =
            |s: &str| CString::new(s).map_err(|_| PgError::client("connection URL holds a NUL"));
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (k, v) in conn_params(url, defaults, overrides)? {
            keys.push(c(&k)?);
            values.push(c(&v)?);
        }
        let key_ptrs: Vec<*const c_char> = keys
            .iter()
            .map(|k| k.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let value_ptrs: Vec<*const c_char> = values
            .iter()
            .map(|v| v.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // SAFETY: both arrays are NULL-terminated, of equal length, and point into C strings
        // that outlive the call; libpq returns NULL only when out of memory.
        let raw = NonNull::new(unsafe {
            ffi::PQconnectdbParams(key_ptrs.as_ptr(), value_ptrs.as_ptr(), 0)
        })
        .ok_or_else(|| PgError::client("libpq: out of memory"))?;
        let conn = PgConn {
            raw,
            prepared: HashMap::new(),
            count: 0,
            next_name: 0,
            unnamed: false,
            inline: false,
            lost_names: false,
            given_up: false,
        };
        if !conn.is_ok() {
            return Err(PgError {
                sqlstate: "08001".into(),
                message: conn.last_error(),
            });
        }
        // Server notices (NOTICE, WARNING) go to the log at debug level, not to stderr.
        // SAFETY: valid connection; the processor takes no state.
        unsafe {
            ffi::PQsetNoticeProcessor(conn.raw.as_ptr(), Some(notice), std::ptr::null_mut());
        }
        Ok(conn)
    }

    /// The connection's socket (for socket options; do not read or write it).
    pub fn socket(&self) -> c_int {
        // SAFETY: valid connection pointer.
        unsafe { ffi::PQsocket(self.raw.as_ptr()) }
    }

    /// True while the connection is usable.
    pub fn is_ok(&self) -> bool {
        // SAFETY: valid connection pointer.
        !self.given_up
            && unsafe { ffi::PQstatus(self.raw.as_ptr()) == ffi::ConnStatusType::CONNECTION_OK }
    }

    /// Marks the connection as broken (its session is in a state nobody knows): from now on
    /// [`PgConn::is_ok`] is false, and its owner replaces it.
    pub fn give_up(&mut self) {
        self.given_up = true;
    }

    /// The transaction state after the last command.
    pub fn txn_state(&self) -> TxnState {
        use ffi::PGTransactionStatusType as T;
        // SAFETY: valid connection pointer.
        match unsafe { ffi::PQtransactionStatus(self.raw.as_ptr()) } {
            T::PQTRANS_IDLE => TxnState::Idle,
            T::PQTRANS_INTRANS | T::PQTRANS_ACTIVE => TxnState::InTransaction,
            T::PQTRANS_INERROR => TxnState::Failed,
            T::PQTRANS_UNKNOWN => TxnState::Broken,
        }
    }

    fn last_error(&self) -> String {
        // SAFETY: valid connection pointer; the message belongs to it.
        unsafe { owned(ffi::PQerrorMessage(self.raw.as_ptr())) }
    }

    /// Takes ownership of `res` (NULL: the connection's error) and turns a failed status into
    /// a [`PgError`].
    ///
    /// # Safety
    /// `res` is NULL or a result libpq returned on this connection that nothing else owns (the
    /// returned [`PgResult`] clears it).
    unsafe fn check(&self, res: *mut ffi::PGresult) -> Result<PgResult, PgError> {
        let Some(raw) = NonNull::new(res) else {
            let sqlstate = if self.is_ok() { "" } else { "08006" };
            return Err(PgError {
                sqlstate: sqlstate.into(),
                message: self.last_error(),
            });
        };
        let res = PgResult { raw };
        use ffi::ExecStatusType as S;
        match res.status() {
            S::PGRES_PIPELINE_ABORTED => Err(PgError {
                sqlstate: ABORTED.into(),
                message: "not run: an earlier statement of its transaction failed".into(),
            }),
            S::PGRES_COMMAND_OK
            | S::PGRES_TUPLES_OK
            | S::PGRES_TUPLES_CHUNK
            | S::PGRES_SINGLE_TUPLE
            | S::PGRES_EMPTY_QUERY => Ok(res),
            _ => {
                let mut e = res.error();
                if e.sqlstate.is_empty() && !self.is_ok() {
                    e.sqlstate = "08006".into();
                }
                Err(e)
            }
        }
    }

    /// Runs SQL text without parameters (control statements such as `BEGIN`; several
    /// statements separated by `;` are allowed here).
    pub fn exec(&mut self, sql: &str) -> Result<PgResult, PgError> {
        let c = CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"))?;
        // SAFETY: valid connection and C string.
        let res = unsafe { ffi::PQexec(self.raw.as_ptr(), c.as_ptr()) };
        // SAFETY: a fresh result of this connection, owned by nobody yet.
        unsafe { self.check(res) }
    }

    /// Runs one statement with `$n` parameters, prepared on first use and cached by its text
    /// and parameter types. The whole result is held in memory: for results of unknown size
    /// use [`PgConn::stream`].
    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<PgResult, PgError> {
        self.send(sql, params)?;
        let mut first: Option<Result<PgResult, PgError>> = None;
        loop {
            // SAFETY: valid connection pointer.
            let r = unsafe { ffi::PQgetResult(self.raw.as_ptr()) };
            if r.is_null() {
                break;
            }
            // SAFETY: a fresh result of this connection, owned by nobody yet.
            let r = unsafe { self.check(r) };
            if first.is_none() {
                first = Some(r);
            }
        }
        // SAFETY: NULL asks for the connection's error.
        first.unwrap_or_else(|| unsafe { self.check(std::ptr::null_mut()) })
    }

    /// Starts one statement whose rows arrive `chunk` at a time, so that no more than a chunk
    /// is ever held; see [`RowStream`].
    pub fn stream(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        chunk: usize,
    ) -> Result<RowStream<'_>, PgError> {
        self.send(sql, params)?;
        let chunk = c_int::try_from(chunk.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: valid connection right after a send; a failure leaves plain (whole) results.
        unsafe { ffi::PQsetChunkedRowsMode(self.raw.as_ptr(), chunk) };
        Ok(RowStream {
            conn: self,
            finished: false,
        })
    }

    /// From now on, statements are sent unnamed, parsed again with each run, and nothing is
    /// kept prepared on the server: for a connection whose statements may themselves
    /// `DEALLOCATE` (or `PREPARE` a name), which a statement cache could not survive.
    /// Statements still go in one round trip each (parse, bind and execute together).
    pub fn prepare_nothing(&mut self) {
        self.unnamed = true;
    }

    /// For a connection whose statements may themselves `DEALLOCATE` or `PREPARE` (a client
    /// connection): a statement in a [`PgConn::pipeline`] is prepared inside the pipeline
    /// (its Parse sent with it, no round trip of its own) under a name of ours and kept for the
    /// next run of the same text; everything else goes unnamed ([`PgConn::prepare_nothing`]).
    /// The caller empties the cache where the session's prepared statements go (the `forgets`
    /// of [`PgConn::pipeline_forgetting`]); a statement that finds a name of ours gone, or one
    /// of ours taken, fails alone and empties the cache ([`PgConn::take_lost_names`]).
    pub fn prepare_inline(&mut self) {
        self.unnamed = true;
        self.inline = true;
    }

    /// Forgets every statement prepared here (the session's were deallocated).
    fn forget_prepared(&mut self) {
        self.prepared.clear();
        self.count = 0;
    }

    /// True (once) when a statement since the last call met a prepared statement of ours
    /// missing, or a name of ours already taken: the session's prepared statements are not what
    /// the cache says (it has been emptied), so the caller should deallocate them all.
    pub fn take_lost_names(&mut self) -> bool {
        std::mem::take(&mut self.lost_names)
    }

    /// The name of `sql` prepared here for these parameter types, if it is.
    fn cached(&self, sql: &str, params: &[Param<'_>]) -> Option<CString> {
        let same = |p: &Prepared| {
            p.types.len() == params.len()
                && p.types.iter().zip(params).all(|(t, v)| *t == v.type_oid())
        };
        self.prepared
            .get(sql)
            .and_then(|variants| variants.iter().find(|p| same(p)))
            .map(|p| p.name.clone())
    }

    fn send(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), PgError> {
        let name = self.prepare(sql, params)?;
        let how = if self.unnamed {
            How::Text(name)
        } else {
            How::Named(name)
        };
        self.send_prepared(&how, params)
    }

    /// Sends a statement as `how` says: its text (unnamed), the name it is prepared under, or
    /// its Parse under a new name followed by its run.
    fn send_prepared(&mut self, how: &How, params: &[Param<'_>]) -> Result<(), PgError> {
        let mut texts: Vec<Option<Vec<u8>>> = Vec::with_capacity(params.len());
        let mut formats: Vec<c_int> = Vec::with_capacity(params.len());
        for p in params {
            let (bytes, binary) = match p {
                Param::Null => (None, false),
                Param::Int(i) => (Some(i.to_be_bytes().to_vec()), true),
                Param::Real(f) => (Some(f.to_bits().to_be_bytes().to_vec()), true),
                Param::Blob(b) => (Some(b.to_vec()), true),
                Param::Text(t) => {
                    if t.contains('\0') {
                        return Err(PgError {
                            sqlstate: "22021".into(),
                            message: "text holds a NUL character, which PostgreSQL cannot store"
                                .into(),
                        });
                    }
                    let mut v = Vec::with_capacity(t.len() + 1);
                    v.extend_from_slice(t.as_bytes());
                    v.push(0);
                    (Some(v), false)
                }
            };
            texts.push(bytes);
            formats.push(c_int::from(binary));
        }
        let mut lengths: Vec<c_int> = Vec::with_capacity(params.len());
        for t in &texts {
            let len = t.as_ref().map_or(0, Vec::len);
            lengths
                .push(c_int::try_from(len).map_err(|_| PgError::client("parameter over 2 GiB"))?);
        }
        let values: Vec<*const c_char> = texts
            .iter()
            .map(|t| t.as_ref().map_or(std::ptr::null(), |v| v.as_ptr().cast()))
            .collect();
        if let How::Parse { name, text } = how {
            let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
            // SAFETY: valid connection, C strings and a types array of `params.len()` entries.
            let sent = unsafe {
                ffi::PQsendPrepare(
                    self.raw.as_ptr(),
                    name.as_ptr(),
                    text.as_ptr(),
                    params.len() as c_int,
                    types.as_ptr(),
                )
            };
            if sent == 0 {
                return Err(self.broken());
            }
        }
        let sent = if let How::Text(name) = how {
            let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
            // SAFETY: as below, plus a types array of `params.len()` entries; `name` is the
            // NUL-terminated SQL text.
            unsafe {
                ffi::PQsendQueryParams(
                    self.raw.as_ptr(),
                    name.as_ptr(),
                    params.len() as c_int,
                    types.as_ptr(),
                    values.as_ptr(),
                    lengths.as_ptr(),
                    formats.as_ptr(),
                    0,
                )
            }
        } else {
            let name = match how {
                How::Named(name) | How::Parse { name, .. } | How::Text(name) => name,
            };
            // SAFETY: every pointer array has `params.len()` entries and outlives the call;
            // text values are NUL-terminated, binary ones have their lengths.
            unsafe {
                ffi::PQsendQueryPrepared(
                    self.raw.as_ptr(),
                    name.as_ptr(),
                    params.len() as c_int,
                    values.as_ptr(),
                    lengths.as_ptr(),
                    formats.as_ptr(),
                    0,
                )
            }
        };
        if sent == 0 {
            return Err(PgError {
                sqlstate: if self.is_ok() { "" } else { "08006" }.into(),
                message: self.last_error(),
            });
        }
        Ok(())
    }

    /// Runs statements back to back in one round trip (libpq's pipeline mode). A sync follows
    /// each statement whose index is in `syncs` (and the last one): the statements since the
    /// previous sync form one implicit transaction, committed at the sync, or rolled back whole
    /// when one of them fails; the statements after the failing one, up to the sync, are
    /// reported [`ABORTED`].
    ///
    /// `each(i, stream)` reads statement `i`'s results (rows in chunks of `chunk`), in order;
    /// a failure to prepare statement `i` comes to it as the stream's error, and the statement
    /// is left out. An `Err` from `pipeline` itself means the connection failed.
    pub fn pipeline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        syncs: &[usize],
        chunk: usize,
        each: impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        self.pipeline_forgetting(stmts, syncs, &[], chunk, each)
    }

    /// [`PgConn::pipeline`] where the statements whose indexes are in `forgets` deallocate the
    /// session's prepared statements (`DEALLOCATE ALL`, or a function doing it): on a connection
    /// that prepares inline ([`PgConn::prepare_inline`]) they go unnamed, and the statements
    /// after them are prepared afresh.
    pub fn pipeline_forgetting(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        syncs: &[usize],
        forgets: &[usize],
        chunk: usize,
        mut each: impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        let hows = if self.inline {
            self.name_inline(stmts, forgets)?
        } else {
            // Preparing needs a round trip of its own, so it happens before, once per statement.
            stmts
                .iter()
                .map(|(sql, params)| {
                    let name = self.prepare(sql, params)?;
                    Ok(if self.unnamed {
                        How::Text(name)
                    } else {
                        How::Named(name)
                    })
                })
                .collect()
        };
        if !self.is_ok() {
            return Err(self.broken());
        }
        // Statements parsed in this pipeline before its last `forgets` are gone after it.
        let last_forget = forgets.iter().copied().filter(|&f| f < stmts.len()).max();
        // SAFETY: valid, idle connection.
        if unsafe { ffi::PQenterPipelineMode(self.raw.as_ptr()) } == 0 {
            return Err(self.broken());
        }
        let r = self.run_pipeline(stmts, &hows, syncs, last_forget, chunk, &mut each);
        // SAFETY: valid connection; fails (harmlessly) only if results are left unread.
        if unsafe { ffi::PQexitPipelineMode(self.raw.as_ptr()) } == 0 && r.is_ok() {
            return Err(self.broken());
        }
        r
    }

    /// How each statement of an inline-preparing pipeline goes: a `forgets` statement as text;
    /// one prepared here before (and not forgotten since) by its name; a new one with its
    /// Parse, under a new name, which later statements of the same text and types reuse.
    fn name_inline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        forgets: &[usize],
    ) -> Result<Vec<Result<How, PgError>>, PgError> {
        // (Outside a transaction block only: in a failed one DEALLOCATE would fail too.)
        if self.count >= CACHE_CAPACITY && self.txn_state() == TxnState::Idle {
            self.exec("DEALLOCATE ALL")?;
            self.forget_prepared();
        }
        let text =
            |sql: &str| CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"));
        // Parsed earlier in this pipeline: (text, types) → name.
        let mut fresh: HashMap<(&str, Vec<Oid>), CString> = HashMap::new();
        let mut hows = Vec::with_capacity(stmts.len());
        for (i, (sql, params)) in stmts.iter().enumerate() {
            if forgets.contains(&i) {
                hows.push(text(sql).map(How::Text));
                self.forget_prepared();
                fresh.clear();
                continue;
            }
            let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
            if let Some(name) = self.cached(sql, params) {
                hows.push(Ok(How::Named(name)));
            } else if let Some(name) = fresh.get(&(*sql, types.clone())) {
                hows.push(Ok(How::Named(name.clone())));
            } else {
                self.next_name += 1;
                let name = CString::new(format!("netmod_s{}", self.next_name))
                    .map_err(|_| PgError::client("statement name"))?;
                match text(sql) {
                    Ok(t) => {
                        fresh.insert((*sql, types), name.clone());
                        hows.push(Ok(How::Parse { name, text: t }));
                    }
                    Err(e) => hows.push(Err(e)),
                }
            }
        }
        Ok(hows)
    }

    fn broken(&self) -> PgError {
        PgError {
            sqlstate: "08006".into(),
            message: self.last_error(),
        }
    }

    fn run_pipeline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        hows: &[Result<How, PgError>],
        syncs: &[usize],
        last_forget: Option<usize>,
        chunk: usize,
        each: &mut impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        let last = stmts.len().saturating_sub(1);
        let sync_after = |i: usize| i == last || syncs.contains(&i);
        let mut pending_sync = false;
        // A statement refused before it is sent (a bad parameter) fails alone; a Parse of it is
        // not sent either, so a later statement that meant to reuse its name fails the same way.
        let mut refused: Vec<Option<PgError>> = vec![None; stmts.len()];
        let mut unsent: HashMap<CString, PgError> = HashMap::new();
        for (i, ((_, params), how)) in stmts.iter().zip(hows).enumerate() {
            if let Ok(how) = how {
                if let Some(e) = how.name().and_then(|n| unsent.get(n)) {
                    refused[i] = Some(e.clone());
                } else {
                    match self.send_prepared(how, params) {
                        Ok(()) => pending_sync = true,
                        Err(e) if self.is_ok() && !e.sqlstate.starts_with("08") => {
                            if let How::Parse { name, .. } = how {
                                unsent.insert(name.clone(), e.clone());
                            }
                            refused[i] = Some(e);
                        }
                        Err(_) => return Err(self.broken()),
                    }
                }
            }
            if sync_after(i) && pending_sync {
                // SAFETY: valid connection in pipeline mode.
                if unsafe { ffi::PQsendPipelineSync(self.raw.as_ptr()) } == 0 {
                    return Err(self.broken());
                }
                pending_sync = false;
            }
        }
        // SAFETY: valid connection; a blocking connection flushes everything.
        if unsafe { ffi::PQflush(self.raw.as_ptr()) } != 0 {
            return Err(self.broken());
        }
        let chunk = c_int::try_from(chunk.max(1)).unwrap_or(c_int::MAX);
        // Parses that failed in this pipeline: a later statement naming one gets its error.
        let mut failed: HashMap<CString, PgError> = HashMap::new();
        let mut synced_segment = false;
        for (i, how) in hows.iter().enumerate() {
            if let Err(e) = how {
                each(i, Err(e.clone()));
            } else if let Some(e) = refused[i].take() {
                each(i, Err(e));
            } else {
                synced_segment = true;
                // A Parse sent with the statement answers first.
                let mut parse_error = None;
                if let Ok(How::Parse { name, .. }) = how {
                    let mut parsed = RowStream {
                        conn: self,
                        finished: false,
                    };
                    let r = parsed.next_result();
                    drop(parsed);
                    match r {
                        Ok(_) if last_forget.is_none_or(|f| f < i) => {
                            let (sql, params) = stmts[i];
                            self.remember(sql, params, name.clone());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if e.sqlstate != ABORTED {
                                failed.insert(name.clone(), e.clone());
                                parse_error = Some(e);
                            }
                        }
                    }
                }
                if parse_error.is_none() {
                    if let Some(e) = how
                        .as_ref()
                        .ok()
                        .and_then(How::name)
                        .and_then(|n| failed.get(n))
                    {
                        parse_error = Some(e.clone());
                    }
                }
                // SAFETY: valid connection; this query's results have not been read yet.
                unsafe { ffi::PQsetChunkedRowsMode(self.raw.as_ptr(), chunk) };
                let mut stream = RowStream {
                    conn: self,
                    finished: false,
                };
                match parse_error {
                    // Its run failed too (no such statement): the Parse's error is the one.
                    Some(e) => {
                        drop(stream);
                        each(i, Err(e));
                    }
                    None => {
                        each(i, Ok(&mut stream));
                        drop(stream);
                    }
                }
            }
            if sync_after(i) && synced_segment {
                // SAFETY: valid connection; the sync's own result comes next.
                let r = unsafe { ffi::PQgetResult(self.raw.as_ptr()) };
                let Some(raw) = NonNull::new(r) else {
                    return Err(self.broken());
                };
                let res = PgResult { raw };
                if res.status() != ffi::ExecStatusType::PGRES_PIPELINE_SYNC {
                    return Err(PgError {
                        sqlstate: "08P01".into(),
                        message: format!("pipeline out of step: {:?}", res.status()),
                    });
                }
                synced_segment = false;
            }
        }
        Ok(())
    }

    /// `name` is `sql` prepared for these parameter types.
    fn remember(&mut self, sql: &str, params: &[Param<'_>], name: CString) {
        self.prepared
            .entry(sql.to_string())
            .or_default()
            .push(Prepared {
                name,
                types: params.iter().map(Param::type_oid).collect(),
            });
        self.count += 1;
    }

    /// The name of `sql` prepared for these parameter types, preparing it if needed; in
    /// unnamed mode the SQL text, to be sent as it is.
    fn prepare(&mut self, sql: &str, params: &[Param<'_>]) -> Result<CString, PgError> {
        if self.unnamed {
            return CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"));
        }
        if let Some(name) = self.cached(sql, params) {
            return Ok(name);
        }
        if self.count >= CACHE_CAPACITY {
            self.exec("DEALLOCATE ALL")?;
            self.forget_prepared();
        }
        self.next_name += 1;
        let name = CString::new(format!("s{}", self.next_name))
            .map_err(|_| PgError::client("statement name"))?;
        let text = CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"))?;
        let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
        // SAFETY: valid connection, C strings and a types array of `params.len()` entries.
        let res = unsafe {
            ffi::PQprepare(
                self.raw.as_ptr(),
                name.as_ptr(),
                text.as_ptr(),
                params.len() as c_int,
                types.as_ptr(),
            )
        };
        // SAFETY: a fresh result of this connection, owned by nobody yet.
        unsafe { self.check(res) }?;
        self.remember(sql, params, name.clone());
        Ok(name)
    }
}

/// The keywords and values [`PgConn::connect_params`] hands libpq, in order (the last value
/// of a keyword wins): the defaults, the URL's own settings but those overridden, then the
/// overrides that have a value.
fn conn_params(
    url: &str,
    defaults: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> Result<Vec<(String, String)>, PgError> {
    let own = |(k, v): &(&str, &str)| (k.to_string(), v.to_string());
    let mut out: Vec<(String, String)> = defaults.iter().map(own).collect();
    out.extend(
        parse_conninfo(url)?
            .into_iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k)),
    );
    out.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).map(own));
    Ok(out)
}

/// The settings a connection URL (or `key=value` string) gives, as libpq reads them.
fn parse_conninfo(url: &str) -> Result<Vec<(String, String)>, PgError> {
    let text = CString::new(url).map_err(|_| PgError::client("connection URL holds a NUL"))?;
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: a C string; libpq allocates the options (or the message) for us to free.
    let opts = unsafe { ffi::PQconninfoParse(text.as_ptr(), &mut err) };
    if opts.is_null() {
        // SAFETY: NULL or a message libpq allocated, freed once read.
        let message = unsafe { owned(err) };
        if !err.is_null() {
            // SAFETY: allocated by libpq, not used after this.
            unsafe { ffi::PQfreemem(err.cast()) };
        }
        return Err(PgError {
            sqlstate: "08001".into(),
            message: format!("connection URL not understood: {}", message.trim()),
        });
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: an array ended by an entry whose keyword is NULL.
        let opt = unsafe { &*opts.add(i) };
        if opt.keyword.is_null() {
            break;
        }
        if !opt.val.is_null() {
            // SAFETY: NUL-terminated strings owned by the array (values kept as they are: a
            // password may start or end with a space).
            let (k, v) = unsafe { (CStr::from_ptr(opt.keyword), CStr::from_ptr(opt.val)) };
            out.push((
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            ));
        }
        i += 1;
    }
    // SAFETY: the array PQconninfoParse returned, not used after this.
    unsafe { ffi::PQconninfoFree(opts) };
    Ok(out)
}

/// The results of one statement started by [`PgConn::stream`]: chunks of rows, then a last,
/// row-less result carrying the command tag. Dropping it early reads and discards the rest,
/// so the connection is ready for the next statement.
pub struct RowStream<'c> {
    conn: &'c mut PgConn,
    finished: bool,
}

impl RowStream<'_> {
    /// The next result (a chunk of rows, or the final one), `None` after the last.
    pub fn next_result(&mut self) -> Result<Option<PgResult>, PgError> {
        if self.finished {
            return Ok(None);
        }
        // SAFETY: valid connection pointer.
        let r = unsafe { ffi::PQgetResult(self.conn.raw.as_ptr()) };
        if r.is_null() {
            self.finished = true;
            return Ok(None);
        }
        // SAFETY: a fresh result of this connection, owned by nobody yet.
        let r = unsafe { self.conn.check(r) };
        if let Err(e) = &r {
            // A name of ours gone (a client's DEALLOCATE) or taken (its PREPARE): what the
            // cache says of the session is wrong.
            if self.conn.inline && (e.sqlstate == "26000" || e.sqlstate == "42P05") {
                self.conn.forget_prepared();
                self.conn.lost_names = true;
            }
            self.drain();
        }
        r.map(Some)
    }

    /// Asks the server to stop the statement, then discards what already came: for a reader
    /// that wants no more rows of a large result. Inside a transaction this fails it.
    pub fn cancel(mut self) {
        if self.finished {
            return;
        }
        // SAFETY: valid connection pointer; the cancel object is freed here.
        unsafe {
            let c = ffi::PQgetCancel(self.conn.raw.as_ptr());
            if !c.is_null() {
                let mut buf = [0 as c_char; 256];
                ffi::PQcancel(c, buf.as_mut_ptr(), buf.len() as c_int);
                ffi::PQfreeCancel(c);
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        // SAFETY: valid connection pointer; every result is cleared.
        unsafe {
            loop {
                let r = ffi::PQgetResult(self.conn.raw.as_ptr());
                if r.is_null() {
                    break;
                }
                ffi::PQclear(r);
            }
        }
        self.finished = true;
    }
}

impl Drop for RowStream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.drain();
        }
    }
}

/// The name PostgreSQL gives a common type; empty for others.
pub fn type_name(t: Oid) -> &'static str {
    match t {
        oid::BOOL => "bool",
        oid::BYTEA => "bytea",
        18 => "char",
        19 => "name",
        oid::INT8 => "int8",
        oid::INT2 => "int2",
        oid::INT4 => "int4",
        25 => "text",
        oid::OID => "oid",
        114 => "json",
        oid::FLOAT4 => "float4",
        oid::FLOAT8 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1700 => "numeric",
        2950 => "uuid",
        3220 => "pg_lsn",
        3802 => "jsonb",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::conn_params;

    fn get<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
        params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn the_client_login_replaces_the_urls_user_and_never_sends_its_password() {
        let url = "postgresql://netmod:db%20secret@10.0.0.5:5433/app?connect_timeout=9";
        let p = conn_params(
            url,
            &[("connect_timeout", "5"), ("keepalives", "1")],
            &[("user", "netmod_client"), ("password", "")],
        )
        .unwrap();
        assert_eq!(get(&p, "user"), ["netmod_client"]);
        assert!(get(&p, "password").is_empty(), "{p:?}");
        assert_eq!(get(&p, "host"), ["10.0.0.5"]);
        assert_eq!(get(&p, "port"), ["5433"]);
        assert_eq!(get(&p, "dbname"), ["app"]);
        // The URL's own setting comes after the default, so it wins.
        assert_eq!(get(&p, "connect_timeout"), ["5", "9"]);
        let with = conn_params(url, &[], &[("password", " client secret ")]).unwrap();
        assert_eq!(get(&with, "password"), [" client secret "]);
        assert_eq!(get(&with, "user"), ["netmod"]);
        assert!(conn_params("postgresql://h/db?nonsense=1", &[], &[]).is_err());
    }
}
