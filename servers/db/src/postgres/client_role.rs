//! The client login: the PostgreSQL role client statements run as, on connections of their
//! own; what db-server prepares for it at start, and what it checks the role may not do.
//!
//! ```text
//! servers' schema S (db-server's current_schema(), owned by db-server's role)
//!   docs, … ............ the client role: SELECT, INSERT, UPDATE, DELETE (rows, not schema)
//!   _netmod_* .......... no right at all
//!   _netmod_claim(), _netmod_store() ... SECURITY DEFINER, EXECUTE granted, but useless
//!                        without the proof (a secret in _netmod_secret) that only db-server reads
//! clients' schema S_client (owned by db-server's role)
//!   USAGE, CREATE for the client role: its own tables, views, indexes, functions
//! ```

use std::sync::Arc;

use super::{quote_ident, Pg};
use crate::error::DbError;
use crate::libpq::{Param, TxnState};
use protocol::proto::ErrorCode;

/// The login client statements run as, and what db-server found of it at start.
///
/// db-server never creates or alters roles: an administrator creates this one (a plain
/// `LOGIN` role, see docs/operations.md). At start db-server gives it its rights on the
/// servers' schema and the clients' schema, then reads back what the role may do in the
/// database; a role that may do more than the documented rights (a superuser, a member of
/// db-server's role or of a `pg_*` role, one that may create temporary tables or objects in
/// the servers' schema, …), or that cannot log in, is not used: client statements are
/// refused with `FORBIDDEN` saying why, and db-server's own work goes on.
#[derive(Debug, Clone)]
pub struct ClientLogin {
    /// The role's name.
    pub role: String,
    /// Its password (none: the server trusts it, or libpq's password file has it).
    pub password: Option<String>,
    servers: String,
    clients: String,
    refused: Option<String>,
    token: String,
    /// The `statement_timeout` a client connection keeps between statements (ms; 0: none):
    /// db-server's maximum for a client statement, so that a statement whose deadline is that
    /// far off needs no `SET` of its own.
    pub standing_timeout_ms: u64,
}

impl ClientLogin {
    /// `Err(FORBIDDEN)` when the login may not be used (see the type's docs).
    pub(crate) fn usable(&self) -> Result<(), DbError> {
        match &self.refused {
            None => Ok(()),
            Some(why) => Err(DbError::new(
                ErrorCode::Forbidden,
                format!(
                    "client statements are refused: the client login {} {why}",
                    self.role
                ),
            )),
        }
    }

    /// Why the login is not used, if it is not.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The same login, refused for `why`.
    pub fn refuse(self: &Arc<Self>, why: String) -> Arc<ClientLogin> {
        Arc::new(ClientLogin {
            refused: Some(why),
            ..ClientLogin::clone(self)
        })
    }

    /// A client connection's search path: its own schema, then the servers' (for `docs`).
    pub(crate) fn search_path(&self) -> String {
        format!(
            "SET search_path = {}, {}",
            quote_ident(&self.clients),
            quote_ident(&self.servers)
        )
    }

    /// The call that resets a client connection after a statement (`_netmod_reset`, made
    /// in [`Pg::create_meta`]): `$1` the session's own settings (SET statements, one a line),
    /// `$2` the `statement_timeout` (ms) for the next statement, `$3` the value it leaves for
    /// [`ClientLogin::reset_done_sql`] to find.
    pub(crate) fn reset_sql(&self) -> String {
        format!(
            "SELECT {}._netmod_reset($1, $2, $3)",
            quote_ident(&self.servers)
        )
    }

    /// The check, first in the transaction of a statement after a reset, that the reset ran
    /// to its end (`$1`: the value given to it): fails otherwise.
    pub(crate) fn reset_done_sql(&self) -> String {
        format!(
            "SELECT {}._netmod_reset_done($1)",
            quote_ident(&self.servers)
        )
    }

    /// Claims an idempotency key inside the open transaction, through `_netmod_claim` (the
    /// same call on a server connection and on a client one, which may not read the records
    /// itself): `None` when this write is the first with it, else the stored response. A
    /// concurrent write with the key makes this wait for its transaction's end.
    pub(crate) fn claim(
        &self,
        pg: &mut Pg,
        key: &str,
        now: i64,
    ) -> Result<Option<Vec<u8>>, DbError> {
        let sql = format!(
            "SELECT {}._netmod_claim($1, $2, $3)",
            quote_ident(&self.servers)
        );
        let got = pg.scalar(
            &sql,
            &[Param::Text(&self.token), Param::Text(key), Param::Int(now)],
        )?;
        match got {
            None => Ok(None),
            Some(text) => super::unhex(&text)
                .map(Some)
                .ok_or_else(|| DbError::new(ErrorCode::Internal, "stored response unreadable")),
        }
    }

    /// Stores the response of the write that claimed `key`, in its transaction.
    pub(crate) fn store(&self, pg: &mut Pg, key: &str, response: &[u8]) -> Result<(), DbError> {
        let sql = format!(
            "SELECT {}._netmod_store($1, $2, $3)",
            quote_ident(&self.servers)
        );
        pg.scalar(
            &sql,
            &[
                Param::Text(&self.token),
                Param::Text(key),
                Param::Blob(response),
            ],
        )?;
        Ok(())
    }
}

/// True for a role name db-server accepts for the client login: lower-case letters, digits
/// and `_`, not starting with a digit or `pg_`, at most 63 bytes (so it needs no quoting).
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with("pg_")
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Pg {
    /// A statement outside the sandbox created something: its rights are set (a table is
    /// shared with the client role unless it is a server table, `_netmod_*`).
    pub(super) fn after_create(&mut self) {
        let Some(role) = self.share_with.clone() else {
            return;
        };
        if let Err(e) = self.serialized(&share(&role)) {
            log::warn!("giving the client role its rights on a new table failed: {e}");
        }
    }

    /// Prepares the servers' own tables and functions, and the client login `role`: its
    /// schema and its rights; then checks what the role may do. Run once at start, on a
    /// server connection. An error is db-server's own tables failing; a client login that
    /// cannot be used comes back refused (and logged).
    pub fn create_meta(
        &mut self,
        role: &str,
        password: Option<String>,
    ) -> Result<ClientLogin, DbError> {
        let servers = self.schema()?;
        let clients = format!("{servers}_client");
        self.serialized(SERVER_TABLES)?;
        self.serialized(SERVER_FUNCTIONS)?;
        let token = self
            .scalar("SELECT token FROM _netmod_secret WHERE id = 1", &[])?
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or_else(|| DbError::new(ErrorCode::Internal, "_netmod_secret is empty"))?;
        let mut refused = None;
        if !valid_role_name(role) {
            refused = Some(format!(
                "is not a name db-server accepts (lower-case letters, digits and _, \
                 not pg_…): {role:?}"
            ));
        } else {
            let setup = self
                .serialized(&client_setup(role))
                .and_then(|()| self.serialized(&share(role)));
            if let Err(e) = setup {
                refused = Some(format!("could not be given its rights ({})", e.message));
            }
            if refused.is_none() {
                let problems = self
                    .scalar(RIGHTS_PROBLEMS, &[Param::Text(role)])?
                    .and_then(|t| String::from_utf8(t).ok())
                    .unwrap_or_default();
                if !problems.is_empty() {
                    refused = Some(format!("is not fit for client statements: {problems}"));
                }
            }
        }
        if let Some(why) = &refused {
            log::error!(
                "the client login {role} {why}; statements sent through test-server are \
                 refused until that is fixed and db-server restarted: see docs/operations.md, \
                 \"On PostgreSQL\""
            );
        }
        Ok(ClientLogin {
            role: role.to_string(),
            password,
            servers,
            clients,
            refused,
            token,
            standing_timeout_ms: 0,
        })
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

/// True for a server statement that creates something (a table, a view, …).
pub(super) fn creates(sql: &str) -> bool {
    crate::workers::first_keyword(sql).eq_ignore_ascii_case("CREATE")
}

/// db-server's own tables, in the servers' schema: idempotency records, and the secret that
/// proves a call of `_netmod_claim`/`_netmod_store` comes from db-server.
const SERVER_TABLES: &str = r"
    CREATE TABLE IF NOT EXISTS _netmod_idempotency (
        key TEXT PRIMARY KEY, response BYTEA, created BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS _netmod_secret (
        id INT PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);
    INSERT INTO _netmod_secret
        VALUES (1, md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text))
        ON CONFLICT (id) DO NOTHING";

/// The functions that claim and store an idempotency key inside a write's transaction (see
/// [`crate::idempotency`]), on server and client connections alike. They run as db-server's
/// role (SECURITY DEFINER, a fixed search path), and only for a caller that gives the
/// secret: the client role may call them but learns nothing and forges nothing by doing so.
/// `_netmod_claim` answers NULL to the first write with a key, else the stored response; its
/// INSERT waits for a concurrent claim's transaction, and the SELECT after it, a statement of
/// its own, sees what that transaction committed.
const SERVER_FUNCTIONS: &str = r#"DO $do$
DECLARE
    s text := current_schema();
BEGIN
    -- Builds before the records lost their commit index answered a boolean.
    IF EXISTS (SELECT FROM pg_proc WHERE pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = s)
               AND proname = '_netmod_claim' AND prorettype = 'boolean'::regtype) THEN
        EXECUTE format('DROP FUNCTION %I._netmod_claim(text, text, bigint)', s);
    END IF;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I._netmod_claim(proof text, k text, now_s bigint)
        RETURNS bytea LANGUAGE plpgsql SECURITY DEFINER SET search_path = %I, pg_temp AS $b$
        DECLARE stored bytea;
        BEGIN
            IF proof IS DISTINCT FROM (SELECT token FROM _netmod_secret WHERE id = 1) THEN
                RAISE EXCEPTION 'only db-server records idempotency keys' USING ERRCODE = '42501';
            END IF;
            INSERT INTO _netmod_idempotency (key, created) VALUES (k, now_s)
                ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN NULL;
            END IF;
            SELECT response INTO stored FROM _netmod_idempotency WHERE key = k;
            RETURN COALESCE(stored, ''::bytea);
        END $b$$f$, s, s);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I._netmod_store(proof text, k text, resp bytea)
        RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = %I, pg_temp AS $b$
        BEGIN
            IF proof IS DISTINCT FROM (SELECT token FROM _netmod_secret WHERE id = 1) THEN
                RAISE EXCEPTION 'only db-server records idempotency keys' USING ERRCODE = '42501';
            END IF;
            UPDATE _netmod_idempotency SET response = resp WHERE key = k AND response IS NULL;
        END $b$$f$, s, s);
    EXECUTE format('REVOKE ALL ON FUNCTION %I._netmod_claim(text, text, bigint),
                    %I._netmod_store(text, text, bytea) FROM PUBLIC', s, s);
END $do$"#;

/// The clients' schema (made if missing, owned by db-server's role), the client role's
/// rights on it and on the servers' schema, its right to call the idempotency functions
/// ([`SERVER_FUNCTIONS`]) and the reset it runs between users' statements.
fn client_setup(role: &str) -> String {
    format!(
        r#"DO $do$
DECLARE
    s text := current_schema();
    c text := current_schema() || '_client';
BEGIN
    IF current_user = '{role}' THEN
        RETURN; -- refused by the rights check; never revoke db-server's own rights
    END IF;
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = c) THEN
        EXECUTE format('CREATE SCHEMA %I', c);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO "{role}"', c);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO "{role}"', s);
    -- Runs as its caller (the client login), on its own session: everything a client statement
    -- may have left there, then the connection's own settings. Qualified names only: the
    -- caller's search path is the client's.
    -- It ends by writing `done`, a value the caller cannot guess, into netmod.reset, which
    -- _netmod_reset_done checks first thing in the next statement's transaction: a reset cut
    -- short (the session's own statement_timeout, set by the last user, cancelling it part
    -- way) makes that statement fail rather than run in what is left of the session.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I._netmod_reset(session text, next_timeout_ms bigint,
                                                    done text)
        RETURNS void LANGUAGE plpgsql AS $b$
        DECLARE s text;
        BEGIN
            EXECUTE 'RESET ALL';
            EXECUTE 'CLOSE ALL';
            EXECUTE 'DEALLOCATE ALL';
            EXECUTE 'UNLISTEN *';
            PERFORM pg_catalog.pg_advisory_unlock_all();
            EXECUTE 'DISCARD TEMP';
            IF session <> '' THEN
                FOREACH s IN ARRAY pg_catalog.string_to_array(session, E'\n') LOOP
                    EXECUTE s;
                END LOOP;
            END IF;
            IF next_timeout_ms > 0 THEN
                PERFORM pg_catalog.set_config('statement_timeout', next_timeout_ms::text, false);
            END IF;
            PERFORM pg_catalog.set_config('netmod.reset', done, false);
        END $b$$f$, s);
    -- The two-argument reset of releases before the check that follows it.
    EXECUTE format('DROP FUNCTION IF EXISTS %I._netmod_reset(text, bigint)', s);
    -- Its own search path: no operator or function the session's path names can stand in.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I._netmod_reset_done(done text)
        RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $b$
        BEGIN
            IF pg_catalog.current_setting('netmod.reset', true) IS DISTINCT FROM done THEN
                RAISE EXCEPTION 'the session was not reset after another user''s statement';
            END IF;
        END $b$$f$, s);
    EXECUTE format('REVOKE ALL ON FUNCTION %I._netmod_reset(text, bigint, text),
                    %I._netmod_reset_done(text) FROM PUBLIC', s, s);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I._netmod_claim(text, text, bigint),
                    %I._netmod_store(text, text, bytea), %I._netmod_reset(text, bigint, text),
                    %I._netmod_reset_done(text) TO "{role}"', s, s, s, s);
END $do$"#
    )
}

/// The client role's rights on the servers' schema's relations: rows of every table but the
/// servers' own (`_netmod_*`: none, not even for PUBLIC), sequences to use. Never DDL
/// (db-server owns them), `TRUNCATE`, `REFERENCES` (a client foreign key would block the
/// servers' deletes) or `TRIGGER`. Run at start and after every server statement that creates.
fn share(role: &str) -> String {
    format!(
        r#"DO $do$
DECLARE
    s text := current_schema();
    r record;
BEGIN
    IF current_user = '{role}' THEN
        RETURN;
    END IF;
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
             WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = s)
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        IF r.relname LIKE '\_netmod\_%' THEN
            EXECUTE format('REVOKE ALL ON TABLE %I.%I FROM PUBLIC, "{role}"', s, r.relname);
        ELSIF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I.%I TO "{role}"', s, r.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I TO "{role}"',
                           s, r.relname);
        END IF;
    END LOOP;
END $do$"#
    )
}

/// What the client role (`$1`) may do beyond its documented rights, as one line (empty:
/// nothing). Read from the database's own catalogs, so that an operator's mistake (a
/// superuser, a member of db-server's role, TEMP left to PUBLIC) is caught before a client
/// statement runs.
const RIGHTS_PROBLEMS: &str = r"
SELECT concat_ws('; ',
    CASE WHEN r.oid IS NULL THEN 'does not exist' END,
    CASE WHEN r.rolname = current_user THEN 'is db-server''s own login' END,
    CASE WHEN r.rolsuper THEN 'is a superuser' END,
    CASE WHEN r.rolcreaterole THEN 'may create roles' END,
    CASE WHEN r.rolcreatedb THEN 'may create databases' END,
    CASE WHEN r.rolbypassrls THEN 'bypasses row-level security' END,
    CASE WHEN r.rolreplication THEN 'may replicate' END,
    CASE WHEN NOT r.rolcanlogin THEN 'may not log in' END,
    (SELECT 'is a member of ' || string_agg(g.rolname, ', ' ORDER BY g.rolname)
       FROM pg_roles g
      WHERE g.oid <> r.oid AND pg_has_role(r.oid, g.oid, 'MEMBER')
        AND (g.rolname = current_user OR g.rolname LIKE 'pg\_%' OR g.rolsuper
             OR g.rolcreaterole OR g.rolcreatedb OR g.rolbypassrls OR g.rolreplication)),
    CASE WHEN has_schema_privilege(r.oid, current_schema(), 'CREATE')
         THEN 'may create objects in the servers'' schema ' || current_schema() END,
    CASE WHEN has_database_privilege(r.oid, current_database(), 'TEMP')
         THEN 'may create temporary tables (REVOKE TEMP ON DATABASE ' || current_database()
              || ' FROM PUBLIC)' END,
    CASE WHEN has_database_privilege(r.oid, current_database(), 'CREATE')
         THEN 'may create schemas in the database' END,
    (SELECT 'has rights on ' || string_agg(c.relname, ', ' ORDER BY c.relname)
       FROM pg_class c
      WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
        AND c.relname LIKE '\_netmod\_%' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        AND has_table_privilege(r.oid, c.oid,
                'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))
)
FROM (SELECT $1::text AS name) n LEFT JOIN pg_roles r ON r.rolname = n.name";
