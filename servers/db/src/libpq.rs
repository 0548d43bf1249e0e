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

    /// The server this connection reached, `host:port` (of a multi-host URL, the one that
    /// was kept: after a failover, the new primary).
    pub fn server(&self) -> String {
        // SAFETY: valid connection pointer; the strings belong to it.
        let (host, port) = unsafe {
            (
                owned(ffi::PQhost(self.raw.as_ptr())),
                owned(ffi::PQport(self.raw.as_ptr())),
            )
        };
        format!("{host}:{port}")
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
}

mod conninfo;
mod pipeline;
mod result;
mod stream;
#[cfg(test)]
mod tests;
#[allow(unused_imports)]
pub use conninfo::*;
#[allow(unused_imports)]
pub use pipeline::*;
#[allow(unused_imports)]
pub use result::*;
#[allow(unused_imports)]
pub use stream::*;
