//! The client role (`netmod_client`) on db-server's connections: making it, what it may touch,
//! and keeping the servers' tables out of its reach as tables are created.

use super::Pg;
use crate::error::DbError;
use crate::libpq::TxnState;
use crate::sandbox;

impl Pg {
    /// A statement outside the sandbox created something: it may be a server table that the
    /// schema's default privileges just gave to the sandbox's role.
    pub(super) fn after_create(&mut self) {
        if let Err(e) = self.protect_server_tables() {
            log::warn!("protecting the server's tables from the client role failed: {e}");
        }
    }

    /// Prepares the tables the server keeps for itself, and the client sandbox's role.
    pub fn create_meta(&mut self) -> Result<(), DbError> {
        self.exec(
            "CREATE TABLE IF NOT EXISTS _netmod_idempotency (
                 key TEXT PRIMARY KEY, response BYTEA, created BIGINT NOT NULL,
                 commit_index BIGINT)",
        )?;
        // A user that may not create roles (a managed database, say) still gets a working
        // db-server; sandboxed statements then fail closed (FORBIDDEN) until the role exists.
        let sandbox = self
            .serialized(SANDBOX_ROLE_SETUP)
            .and_then(|()| self.protect_server_tables());
        if let Err(e) = sandbox {
            log::warn!(
                "the client sandbox's role {} could not be set up ({e}); statements sent through \
                 test-server will be refused until it is: see docs/protocol.md, \"The client sandbox\"",
                sandbox::PG_ROLE
            );
        }
        Ok(())
    }

    /// Takes every right on the server's tables (`_netmod_*`) away from the sandbox's role:
    /// run at start and after every statement outside the sandbox that creates something,
    /// since the schema's default privileges give new tables to the role.
    pub fn protect_server_tables(&mut self) -> Result<(), DbError> {
        self.serialized(PROTECT_SERVER_TABLES)
    }

    /// Runs `block` (rights and roles) under a transaction-scoped advisory lock that every
    /// db-server connection takes for it. PostgreSQL fails a GRANT or REVOKE on an object
    /// another transaction is changing the rights of ("tuple concurrently updated"): several
    /// test-servers creating their tables at once through one or more db-servers did that.
    /// Inside a transaction it runs in a savepoint, so that its failure (logged by the caller)
    /// does not abort the caller's transaction.
    fn serialized(&mut self, block: &str) -> Result<(), DbError> {
        const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('netmod: client role rights'))";
        let (run, undo) = if self.txn_state() == TxnState::Idle {
            (format!("BEGIN; {LOCK}; {block}; COMMIT"), "ROLLBACK")
        } else {
            (
                format!("SAVEPOINT netmod_rights; {LOCK}; {block}; RELEASE netmod_rights"),
                "ROLLBACK TO netmod_rights; RELEASE netmod_rights",
            )
        };
        let r = self.exec(&run);
        if r.is_err() && self.is_ok() {
            let _ = self.exec(undo);
        }
        r
    }
}

/// True for a statement outside the sandbox that creates something (a table, a view, …).
pub(super) fn creates(sql: &str, client: bool) -> bool {
    !client && crate::workers::first_keyword(sql).eq_ignore_ascii_case("CREATE")
}

/// Switches a connection to the sandbox's role for one statement.
pub(super) const SET_CLIENT_ROLE: &str = "SET ROLE netmod_client";

/// The role sandboxed statements run as: it may read and write the tables of the current
/// schema and create its own there, and holds no right on the server's tables (taken away by
/// [`PROTECT_SERVER_TABLES`]) and no TRIGGER right on tables it does not own (a trigger
/// would run with the rights of whoever writes the table, the server included).
const SANDBOX_ROLE_SETUP: &str = "DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'netmod_client') THEN
        BEGIN
            CREATE ROLE netmod_client NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- another db-server made it meanwhile
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'netmod_client', 'USAGE') THEN
        EXECUTE format('GRANT netmod_client TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO netmod_client', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA %I TO netmod_client', current_schema());
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO netmod_client', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON TABLES TO netmod_client', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO netmod_client', current_schema());
END $$";

/// Revokes the sandbox's role's rights on every `_netmod_*` table of the current schema.
const PROTECT_SERVER_TABLES: &str = "DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
             WHERE schemaname = current_schema() AND tablename LIKE '\\_netmod\\_%'
    LOOP
        EXECUTE 'REVOKE ALL ON ' || t || ' FROM netmod_client';
    END LOOP;
END $$";
