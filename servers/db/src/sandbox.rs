//! The client sandbox: statements a client sent through test-server run without access to the
//! server's own tables (`_netmod_*`) or to anything that reaches past the database.
//!
//! test-server sets `DataRequest.sandboxed` on every request it forwards for a client.
//! db-server marks each statement of such a request by prefixing [`MARK`] (an SQL comment, so
//! the text still runs as written), and each backend enforces the mark with the database's own
//! checks, not by reading the SQL text (which quoting, escapes or `U&"…"` identifiers defeat):
//!
//! - SQLite: an authorizer callback, installed on every connection, refuses while a marked
//!   statement is prepared (or re-prepared after a schema change) any access to a `_netmod_*`
//!   table — directly, through a view or a CTE — plus `ATTACH`, `DETACH`, `PRAGMA`, triggers
//!   (their bodies would later run with the server's rights) and virtual tables. The mark also
//!   keeps a sandboxed statement out of the cache entry of the same text prepared unsandboxed.
//! - PostgreSQL: each marked statement runs between `SET ROLE netmod_client` and `RESET ROLE`
//!   in its own pipeline segment; that role holds no rights on the server's tables (revoked at
//!   start and after every table the server creates) and no TRIGGER right on the tables it
//!   does not own. `SET`, `RESET` and `DO` statements are refused in the sandbox. Known gap:
//!   the session still authenticates as db-server's own user, so a statement that switches
//!   the role back from inside a query (`set_config('role', …)` followed by a dynamic query,
//!   or a function doing the same) is not stopped; closing it needs a separate login for the
//!   client role.
//!
//! A refusal is `FORBIDDEN`.

use std::cell::Cell;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// Statement kinds refused in the sandbox before they reach a database: ATTACH/DETACH
/// (SQLite: another file), SET/RESET/DO (PostgreSQL: a role change or a block that could make
/// one; see the gap noted in docs/protocol.md).
pub const REFUSED_STATEMENTS: &[&str] = &["ATTACH", "DETACH", "SET", "RESET", "DO"];

/// Prefix of a sandboxed statement's text.
pub const MARK: &str = "/*netmod:sandbox*/ ";

/// The PostgreSQL role sandboxed statements run as.
pub const PG_ROLE: &str = "netmod_client";

/// Prefix of the server's own tables.
pub const SERVER_TABLES: &str = "_netmod_";

/// True when `sql` carries the sandbox mark.
pub fn is_marked(sql: &str) -> bool {
    sql.starts_with(MARK)
}

/// The statement text without the mark (for logs and statistics).
pub fn unmarked(sql: &str) -> &str {
    sql.strip_prefix(MARK).unwrap_or(sql)
}

/// `sql` with the mark (once).
pub fn mark(sql: &mut String) {
    if !is_marked(sql) {
        sql.insert_str(0, MARK);
    }
}

thread_local! {
    /// Set while this thread prepares or runs a marked statement on SQLite.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// While alive, SQLite statements prepared on this thread are checked by [`authorize`]; does
/// nothing for an unmarked statement.
#[derive(Debug)]
pub struct Guard(bool);

impl Guard {
    /// Enters the sandbox if `sql` is marked.
    pub fn enter(sql: &str) -> Guard {
        let on = is_marked(sql);
        if on {
            ACTIVE.with(|a| a.set(true));
        }
        Guard(on)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0 {
            ACTIVE.with(|a| a.set(false));
        }
    }
}

fn server_table(name: &str) -> bool {
    name.get(..SERVER_TABLES.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(SERVER_TABLES))
}

/// The authorizer of every SQLite connection: allows everything outside the sandbox.
pub fn authorize(ctx: AuthContext<'_>) -> Authorization {
    if !ACTIVE.with(Cell::get) {
        return Authorization::Allow;
    }
    use AuthAction as A;
    let denied = match ctx.action {
        A::Attach { .. }
        | A::Detach { .. }
        | A::Pragma { .. }
        | A::CreateTrigger { .. }
        | A::CreateTempTrigger { .. }
        | A::CreateVtable { .. }
        | A::DropVtable { .. }
        | A::Unknown { .. } => true,
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Update { table_name, .. }
        | A::Delete { table_name }
        | A::CreateTable { table_name }
        | A::CreateTempTable { table_name }
        | A::DropTable { table_name }
        | A::DropTempTable { table_name }
        | A::Analyze { table_name }
        | A::AlterTable { table_name, .. }
        | A::CreateIndex { table_name, .. }
        | A::CreateTempIndex { table_name, .. }
        | A::DropIndex { table_name, .. }
        | A::DropTempIndex { table_name, .. }
        | A::DropTrigger { table_name, .. }
        | A::DropTempTrigger { table_name, .. } => server_table(table_name),
        A::CreateView { view_name }
        | A::CreateTempView { view_name }
        | A::DropView { view_name }
        | A::DropTempView { view_name } => server_table(view_name),
        A::Reindex { index_name } => server_table(index_name),
        _ => false,
    };
    if denied {
        Authorization::Deny
    } else {
        Authorization::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_added_once_and_read_back() {
        let mut sql = "SELECT 1".to_string();
        mark(&mut sql);
        mark(&mut sql);
        assert!(is_marked(&sql));
        assert_eq!(unmarked(&sql), "SELECT 1");
        assert!(server_table("_NetMod_users") && !server_table("docs") && !server_table("_net"));
    }
}
