//! The client identity: what statements a client sent through test-server may do, and how each
//! backend makes the database itself enforce it.
//!
//! test-server sets `DataRequest.sandboxed` (and `user`) on every request it forwards for a
//! client; db-server carries that as a typed [`crate::workers::Caller`] on the job, never as a
//! mark in the SQL text. The design rests on identities and connections rather than on reading
//! SQL text (which quoting, comments and escapes defeat):
//!
//! - **Separate connections.** Client statements run only on client connections; the servers'
//!   own statements (logins, users, documents, idempotency and commit-index bookkeeping in
//!   server transactions) only on server connections. Nothing a client leaves in a session — a
//!   temporary object, a setting, a prepared statement — can change what a server statement
//!   means.
//! - **SQLite** (one file, one identity): a client connection's authorizer ([`Sandbox`]) is the
//!   client identity. While a statement is prepared it refuses any access to a server table
//!   (`_netmod_*`, however spelled, directly, through a view or a CTE), `dbstat` and the other
//!   introspection tables, DDL on a table the servers read or write ([`SHARED_TABLES`], e.g.
//!   `docs`: rows yes, schema no), temporary objects, triggers (their bodies would later run
//!   when the servers write), virtual tables, `ATTACH`/`DETACH` and `PRAGMA`. A view a client
//!   creates is read back under the same authorizer before its answer: one whose body reaches
//!   what the client may not is dropped and refused. db-server's own bookkeeping on a client
//!   connection (the idempotency record and the commit index, which must commit with the
//!   client's write) runs in a *server turn* ([`Sandbox::as_server`]), prepared outside the
//!   statement cache so that no client text can reuse it.
//! - **PostgreSQL**: client connections log in as a role of their own
//!   ([`crate::postgres::ClientLogin`], [`PG_ROLE`] by default), which the database itself
//!   keeps from the servers' tables: they live in a schema owned by db-server's role, where the
//!   client role may use the rows of the shared tables (`docs`) and nothing of `_netmod_*`, and
//!   may create nothing. db-server checks the role's rights in the catalogs at start and
//!   refuses client statements when it may do more. Every client statement is followed, in the
//!   same round trip, by a reset of everything it could have left in the session.
//!
//! A refusal is `FORBIDDEN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Instant;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use crate::deadline::Deadline;
use crate::error::DbError;
use protocol::proto::ErrorCode;

/// Statement kinds refused to clients before they reach a database: ATTACH/DETACH (SQLite:
/// another file; the authorizer refuses them too, this only gives the clearer message).
pub const REFUSED_STATEMENTS: &[&str] = &["ATTACH", "DETACH"];

/// The PostgreSQL login role client statements run as by default (see docs/operations.md).
pub const PG_ROLE: &str = "netmod_client";

/// Prefix of the servers' own tables: no client ever reads or writes them.
pub const SERVER_TABLES: &str = "_netmod_";

/// Tables the servers read and write that clients share: clients read and write their rows
/// but may not create, alter, drop or index them (test-server's documents, which its HTTP
/// front serves to anonymous readers).
pub const SHARED_TABLES: &[&str] = &["docs"];

/// SQLite's introspection tables, which tell about every table (the servers' included).
const INTROSPECTION: &[&str] = &["dbstat", "sqlite_dbpage", "sqlite_stmt"];

/// True for a server table's name (`_netmod_…`, any case).
pub fn is_server_table(name: &str) -> bool {
    name.get(..SERVER_TABLES.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(SERVER_TABLES))
}

/// True for a table whose schema clients may not change: a server table or a shared one.
pub fn is_protected(name: &str) -> bool {
    is_server_table(name) || SHARED_TABLES.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// The longest value (string or blob, SQL text included) a client statement may make on
/// SQLite, in bytes: a bound on the memory one of its values takes (SQLite's own default is
/// 1 GB: `zeroblob(900000000)` took that much before failing TOO_LARGE). Above the largest
/// result a request may carry (10 MB), so no answer a client may get is cut by it.
pub const CLIENT_MAX_VALUE: i32 = 16 << 20;

/// SQLite virtual-machine instructions between two looks at a client statement's deadline.
const DEADLINE_CHECK_OPS: i32 = 4096;

/// The client identity of one SQLite client connection: its authorizer, its statements'
/// deadline, and what it noticed.
#[derive(Debug, Default)]
pub struct Sandbox {
    /// Set while db-server runs its own bookkeeping on the connection.
    server_turn: AtomicBool,
    /// Views created by the statement being prepared (checked once it ran).
    created_views: Mutex<Vec<String>>,
    /// When the running client statement must stop.
    deadline: Deadline,
}

impl Sandbox {
    /// Makes `conn` a client connection: installs the authorizer, the deadline's progress
    /// handler and the value-size limit, and returns its state.
    pub fn install(conn: &Connection) -> Arc<Sandbox> {
        let sandbox = Arc::new(Sandbox::default());
        let state = Arc::clone(&sandbox);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| state.authorize(ctx)));
        let state = Arc::clone(&sandbox);
        conn.progress_handler(DEADLINE_CHECK_OPS, Some(move || state.deadline.passed()));
        if let Err(e) = conn.set_limit(
            rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH,
            CLIENT_MAX_VALUE,
        ) {
            log::warn!("limiting client values on SQLite failed: {e}");
        }
        sandbox
    }

    /// Runs a client statement (`f`) that must stop at `at`: past it SQLite interrupts it,
    /// and its error (`TIMEOUT`) says so.
    pub fn until<T>(
        &self,
        at: Option<Instant>,
        f: impl FnOnce() -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let r = self.deadline.during(at, f);
        match r {
            Err(e) if e.code == ErrorCode::Timeout && at.is_some_and(|t| Instant::now() >= t) => {
                Err(DbError::new(
                    ErrorCode::Timeout,
                    "the statement ran past its deadline and was stopped (DataRequest.timeout_ms, \
                     at most db-server's --statement-timeout-ms)",
                ))
            }
            r => r,
        }
    }

    /// Runs `f` (db-server's own statements, prepared outside the cache) with the server's
    /// rights. Only db-server's fixed SQL runs here, never a client's text.
    pub fn as_server<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.server_turn.store(true, Ordering::Release);
        let _reset = Reset(&self.server_turn);
        f()
    }

    /// Forgets the views noticed so far (before a client statement is prepared).
    pub fn clear_views(&self) {
        if let Ok(mut v) = self.created_views.lock() {
            v.clear();
        }
    }

    /// The views the last prepared statement creates.
    pub fn take_views(&self) -> Vec<String> {
        self.created_views
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        if self.server_turn.load(Ordering::Acquire) {
            return Authorization::Allow;
        }
        if let AuthAction::CreateView { view_name } = ctx.action {
            if let Ok(mut v) = self.created_views.lock() {
                v.push(view_name.to_string());
            }
        }
        if refused(&ctx.action) {
            Authorization::Deny
        } else {
            Authorization::Allow
        }
    }
}

/// The client identity's policy: true for what a client statement may not do.
fn refused(action: &AuthAction<'_>) -> bool {
    use AuthAction as A;
    match *action {
        // Another file, the connection's settings, code that would run later with whoever
        // writes the table, session-private objects that could shadow the servers' names.
        A::Attach { .. }
        | A::Detach { .. }
        | A::Pragma { .. }
        | A::CreateTrigger { .. }
        | A::CreateTempTrigger { .. }
        | A::DropTrigger { .. }
        | A::DropTempTrigger { .. }
        | A::CreateVtable { .. }
        | A::DropVtable { .. }
        | A::CreateTempTable { .. }
        | A::CreateTempView { .. }
        | A::CreateTempIndex { .. }
        | A::DropTempTable { .. }
        | A::DropTempView { .. }
        | A::DropTempIndex { .. }
        | A::Unknown { .. } => true,
        // Rows: none of the servers' tables, no introspection.
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Update { table_name, .. }
        | A::Delete { table_name } => {
            is_server_table(table_name)
                || INTROSPECTION
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(table_name))
        }
        // Schema: never of a table the servers use (nor a new object under such a name).
        A::CreateTable { table_name }
        | A::DropTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateIndex { table_name, .. }
        | A::DropIndex { table_name, .. } => is_protected(table_name),
        A::CreateView { view_name } | A::DropView { view_name } => is_protected(view_name),
        A::Reindex { index_name } => is_server_table(index_name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_shared_tables_are_known_in_any_case() {
        assert!(is_server_table("_NetMod_users") && !is_server_table("docs"));
        assert!(!is_server_table("_net"));
        assert!(is_protected("DOCS") && is_protected("_netmod_meta") && !is_protected("notes"));
    }

    #[test]
    fn a_client_connection_refuses_what_the_servers_own_and_a_server_turn_does_not() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE _netmod_users (name TEXT, secret_hash TEXT);
             CREATE TABLE docs (name TEXT PRIMARY KEY, content TEXT);",
        )
        .unwrap();
        let sandbox = Sandbox::install(&conn);
        for sql in [
            "SELECT * FROM _netmod_users",
            "SELECT * FROM main.\"_NETMOD_USERS\"",
            "ALTER TABLE docs RENAME TO docs_real",
            "DROP TABLE docs",
            "CREATE INDEX d ON docs (content)",
            "CREATE TEMP TABLE docs (x)",
            "CREATE TEMP VIEW v AS SELECT 1",
            "SELECT * FROM dbstat",
            "PRAGMA table_info(docs)",
        ] {
            assert!(conn.prepare(sql).is_err(), "{sql}: allowed");
        }
        // Rows of the shared table, and names that only start like it, are the client's.
        assert!(conn.prepare("INSERT INTO docs VALUES ('a', 'b')").is_ok());
        assert!(conn.prepare("CREATE VIEW docs2 AS SELECT 1").is_ok());
        assert!(sandbox
            .as_server(|| conn.prepare("SELECT * FROM _netmod_users").map(|_| ()))
            .is_ok());
        // The turn ends with the call.
        assert!(conn.prepare("SELECT * FROM _netmod_users").is_err());
    }
}
