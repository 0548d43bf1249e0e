//! An ordinary account, as an attacker would use it, against real db-server and test-server
//! processes on SQLite (and on PostgreSQL, the last test): each attack of issue 23 fails, and
//! the servers' behaviour (logins, user removal, documents over HTTP, other users' writes) is
//! unchanged afterwards.

mod common;

use common::stack::{code, Stack};
use common::WAIT;
use protocol::proto::{
    data_request, data_response, DataRequest, DataResponse, Statement, StatsRequest, TxnBegin,
    TxnEnd, TxnStatement, Value,
};
use protocol::wire::ErrorCode;
use tools::client::FrameClient;

/// Runs each statement as `c`, which must succeed.
fn run_all(c: &mut FrameClient, sqls: &[&str]) {
    for sql in sqls {
        c.execute(sql, vec![])
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

fn req(kind: data_request::Kind) -> DataRequest {
    DataRequest {
        kind: Some(kind),
        ..Default::default()
    }
}

fn stmt(sql: &str) -> Statement {
    Statement {
        sql: sql.into(),
        ..Default::default()
    }
}

fn rows(r: &DataResponse) -> Vec<Vec<Value>> {
    match &r.kind {
        Some(data_response::Kind::Result(res)) => {
            res.rows.iter().map(|row| row.values.clone()).collect()
        }
        other => panic!("not a result: {other:?}"),
    }
}

#[test]
fn a_client_cannot_swap_a_view_in_for_the_documents_table() {
    let s = Stack::start("lp-view-swap");
    let mut bob = s.user("bob");
    assert_eq!(s.put("admin", "public text").status, 201);
    // The attack of finding 1, and its variants: each refused by the database itself.
    for sql in [
        "ALTER TABLE docs RENAME TO docs_real",
        "ALTER TABLE \"DOCS\" ADD COLUMN x",
        "DROP TABLE docs",
        "CREATE VIEW docs AS SELECT 1",
        "CREATE TABLE main.\"Docs\" (x)",
        "CREATE INDEX docs_by_content ON docs (content)",
        "CREATE VIEW hashes AS SELECT name, secret_hash AS content, created AS updated FROM _netmod_users",
        "CREATE VIEW keys AS SELECT group_concat(key) AS k FROM _netmod_idempotency",
        "CREATE VIEW nested AS WITH u AS (SELECT * FROM \"_NETMOD_USERS\") SELECT * FROM u",
    ] {
        assert_eq!(code(bob.execute(sql, vec![])), ErrorCode::Forbidden, "{sql}");
    }
    // SQLite itself keeps this virtual table out of views (an SQL error); refused either way.
    let sizes = code(bob.execute("CREATE VIEW sizes AS SELECT * FROM dbstat", vec![]));
    assert!(
        matches!(sizes, ErrorCode::Forbidden | ErrorCode::SqlError),
        "{sizes:?}"
    );
    // A refused view is not left behind for anyone to read.
    for view in ["hashes", "keys", "nested", "sizes"] {
        let sql = format!("SELECT * FROM {view}");
        let mut admin = s.admin();
        assert_eq!(
            code(admin.execute(&sql, vec![])),
            ErrorCode::UnknownTable,
            "{view} exists"
        );
    }
    let page = s.get("admin");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("public text"), "{}", page.body);
    s.still_serves("viewswap");
}

#[test]
fn a_client_cannot_shadow_the_servers_tables_with_temporary_objects() {
    let s = Stack::start("lp-temp");
    let mut bob = s.user("bob");
    for sql in [
        "CREATE TEMP TABLE docs (name TEXT PRIMARY KEY, content TEXT, updated INT)",
        "CREATE TEMPORARY TABLE _netmod_users (name TEXT, secret_hash TEXT, created INT)",
        "CREATE TABLE temp.docs (x)",
        "CREATE TEMP VIEW docs AS SELECT 'x' AS name, 'y' AS content, 0 AS updated",
        "CREATE TEMP TABLE scratch (x)",
    ] {
        assert_eq!(
            code(bob.execute(sql, vec![])),
            ErrorCode::Forbidden,
            "{sql}"
        );
    }
    // Finding 2's symptom: PUT answered 201 and the document never appeared.
    s.still_serves("tempshadow");
}

#[test]
fn a_client_reads_no_statistics_of_db_server() {
    // They hold every statement's text, the servers' and other users' (literals included).
    let s = Stack::start("lp-stats");
    let mut alice = s.user("alice");
    run_all(
        &mut alice,
        &[
            "CREATE TABLE notes (body TEXT)",
            "INSERT INTO notes VALUES ('alice secret')",
        ],
    );
    let mut bob = s.user("bob");
    for brief in [false, true] {
        let asked = bob.data(&req(data_request::Kind::Stats(StatsRequest { brief })));
        assert_eq!(code(asked), ErrorCode::Forbidden, "brief: {brief}");
    }
}

#[test]
fn a_client_sees_no_size_or_count_of_the_servers_tables() {
    let s = Stack::start("lp-dbstat");
    let mut bob = s.user("bob");
    for sql in [
        "SELECT * FROM dbstat",
        "SELECT name, ncell FROM dbstat WHERE name = '_netmod_users'",
        "SELECT * FROM main.dbstat",
        "SELECT * FROM pragma_page_count()",
    ] {
        assert_eq!(
            code(bob.execute(sql, vec![])),
            ErrorCode::Forbidden,
            "{sql}"
        );
    }
}

#[test]
fn a_client_keeps_its_own_tables_views_indexes_transactions_and_the_documents() {
    let s = Stack::start("lp-own");
    let mut bob = s.user("bob");
    run_all(
        &mut bob,
        &[
            "CREATE TABLE mine (id INTEGER PRIMARY KEY, body TEXT)",
            "CREATE INDEX mine_body ON mine (body)",
            "INSERT INTO mine (body) VALUES ('a'), ('b')",
            "CREATE VIEW mine_view AS SELECT body FROM mine WHERE body > 'a'",
            "CREATE VIEW doc_names AS SELECT name FROM docs",
            "INSERT INTO docs (name, content, updated) VALUES ('bobs', 'by sql', 1)",
            "UPDATE docs SET content = 'by sql again' WHERE name = 'bobs'",
        ],
    );
    let r = bob.execute("SELECT body FROM mine_view", vec![]).unwrap();
    assert_eq!(r.rows.len(), 1);
    assert!(s.get("bobs").body.contains("by sql again"));
    let r = bob
        .execute("SELECT count(*) FROM doc_names", vec![])
        .unwrap();
    assert_eq!(r.rows[0].values[0], Value::int(1));
    run_all(
        &mut bob,
        &[
            "DROP VIEW mine_view",
            "DROP VIEW doc_names",
            "DROP INDEX mine_body",
            "DELETE FROM docs WHERE name = 'bobs'",
            "DROP TABLE mine",
        ],
    );
    assert_eq!(s.get("bobs").status, 404);
    s.still_serves("own");
}

#[test]
fn idempotency_keys_and_transactions_belong_to_the_user_who_made_them() {
    let s = Stack::start("lp-keys");
    let mut alice = s.user("alice");
    let mut bob = s.user("bob");
    alice
        .execute(
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, who TEXT)",
            vec![],
        )
        .unwrap();
    let keyed = |sql: &str| DataRequest {
        idempotency_key: "order-1".into(),
        ..req(data_request::Kind::Execute(stmt(sql)))
    };
    let hers = alice
        .data(&keyed(
            "INSERT INTO ledger (who) VALUES ('alice') RETURNING id, who",
        ))
        .unwrap();
    // Bob's write with the same key is his own write, not alice's stored answer.
    let his = bob
        .data(&keyed(
            "INSERT INTO ledger (who) VALUES ('bob') RETURNING id, who",
        ))
        .unwrap();
    assert_eq!(rows(&his)[0][1], Value::text("bob"), "{his:?}");
    assert_ne!(his.commit_index, hers.commit_index);
    // Alice's retry still gets exactly her answer, and wrote nothing more.
    let again = alice
        .data(&keyed(
            "INSERT INTO ledger (who) VALUES ('alice') RETURNING id, who",
        ))
        .unwrap();
    assert_eq!(again.kind, hers.kind);
    let n = alice
        .execute("SELECT count(*) FROM ledger", vec![])
        .unwrap();
    assert_eq!(n.rows[0].values[0], Value::int(2));

    // Alice's transaction is unknown to bob.
    let begun = alice
        .data(&req(data_request::Kind::Begin(TxnBegin {
            timeout_ms: 5000,
            idle_ms: 5000,
        })))
        .unwrap();
    let Some(data_response::Kind::Txn(txn)) = begun.kind else {
        panic!("{begun:?}");
    };
    let in_hers = |seq| {
        req(data_request::Kind::TxnExecute(TxnStatement {
            txn_id: txn.txn_id,
            seq,
            stmt: Some(stmt("INSERT INTO ledger (who) VALUES ('intruder')")),
        }))
    };
    assert_eq!(code(bob.data(&in_hers(1))), ErrorCode::TxnNotFound);
    let ends = |seq| {
        req(data_request::Kind::Commit(TxnEnd {
            txn_id: txn.txn_id,
            seq,
        }))
    };
    assert_eq!(code(bob.data(&ends(1))), ErrorCode::TxnNotFound);
    // Her sequence is untouched by the attempts, and she commits her own statement only.
    let mut own = in_hers(1);
    if let Some(data_request::Kind::TxnExecute(t)) = own.kind.as_mut() {
        t.stmt = Some(stmt("INSERT INTO ledger (who) VALUES ('alice in txn')"));
    }
    alice.data(&own).unwrap();
    alice.data(&ends(2)).unwrap();
    let who = alice
        .execute("SELECT who FROM ledger ORDER BY id", vec![])
        .unwrap();
    let who: Vec<_> = who.rows.iter().map(|r| r.values[0].clone()).collect();
    assert_eq!(
        who,
        [
            Value::text("alice"),
            Value::text("bob"),
            Value::text("alice in txn")
        ]
    );
}

/// Issue 24, finding 5: a connection that has not logged in may not make test-server hold a
/// large frame; once logged in, the full frame size is there.
#[test]
fn before_login_only_small_frames_are_taken() {
    let s = Stack::start("lp-prelogin");
    let _ = s.admin();
    // A header declaring 100,000 bytes, nothing after it: answered and closed at once, not
    // waited for (the body would sit in the server's memory).
    let mut anon = FrameClient::connect(s.frames, WAIT).unwrap();
    anon.send_raw(&100_000u32.to_be_bytes()).unwrap();
    let m = anon.recv().unwrap().expect("an answer before the close");
    assert_eq!(
        code::<()>(Err(tools::client::server_error(&m))),
        ErrorCode::FrameTooLarge
    );
    assert!(anon.recv().unwrap().is_none(), "closed");
    // A logged-in user sends a 200 KB statement as before.
    let mut bob = s.user("bob");
    let big = "x".repeat(200_000);
    let r = bob
        .execute("SELECT length(?1)", vec![Value::text(big)])
        .unwrap();
    assert_eq!(r.rows[0].values[0], Value::int(200_000));
}

/// Issue 23's PostgreSQL findings (3 to 7) through test-server, as an ordinary account: a
/// trigger or a temporary table planted where the servers write, session state left on
/// pooled connections, a role switch from inside a query, server programs and files. Each
/// fails in the database itself (the client login's rights), and the servers serve as
/// before.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_an_ordinary_account_cannot_act_as_the_servers_or_the_database_os_user() {
    let Some(s) = Stack::start_pg("lp-pg") else {
        return;
    };
    let mut bob = s.user("bob");
    assert_eq!(s.put("admin", "public text").status, 201);
    let db_server_user = s.schema.as_ref().map_or(String::new(), |schema| {
        let mut pg = db::libpq::PgConn::connect(&schema.primary).unwrap();
        let r = pg.query("SELECT current_user", &[]).unwrap();
        String::from_utf8(r.value(0, 0).unwrap().to_vec()).unwrap()
    });
    // Finding 3: a function that plants a temporary docs table with a trigger that would run
    // COPY TO PROGRAM as whoever writes next.
    bob.execute(
        "CREATE FUNCTION plant() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
             CREATE TEMP TABLE docs (name TEXT PRIMARY KEY, content TEXT, updated BIGINT);
             RETURN 1;
         END $$",
        vec![],
    )
    .unwrap();
    for _ in 0..6 {
        assert_eq!(
            code(bob.execute("SELECT plant()", vec![])),
            ErrorCode::Forbidden
        );
    }
    let attacks = [
        "CREATE TRIGGER t BEFORE INSERT ON docs FOR EACH ROW EXECUTE FUNCTION plant()".to_string(),
        "CREATE TEMP TABLE _netmod_users (name TEXT, secret_hash TEXT, created BIGINT)".to_string(),
        "ALTER TABLE docs RENAME TO docs_real".to_string(),
        "DROP TABLE docs".to_string(),
        "SELECT * FROM _netmod_users".to_string(),
        // Finding 6.
        format!(
            "SELECT s, query_to_xml('select name, secret_hash from _netmod_users', true, true, '')
             FROM (SELECT set_config('role', '{db_server_user}', false) s) x"
        ),
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/netmod-lp-pwned'".to_string(),
        "SELECT pg_read_file('/etc/passwd')".to_string(),
        // Finding 7's comment tricks, now without a filter: the database refuses the role.
        "/* /* */ */ SET ROLE postgres".to_string(),
    ];
    for sql in &attacks {
        let got = code(bob.execute(sql, vec![]));
        assert!(
            matches!(got, ErrorCode::Forbidden | ErrorCode::UnknownTable),
            "{sql}: {got:?}"
        );
    }
    assert!(!std::path::Path::new("/tmp/netmod-lp-pwned").exists());
    // Finding 5: settings left on pooled connections, on readers and writers.
    bob.execute(
        "CREATE FUNCTION poison() RETURNS int LANGUAGE sql AS $$
           SELECT 1 FROM (SELECT set_config('default_transaction_read_only', 'on', false),
                                 set_config('search_path', 'pg_catalog', false),
                                 set_config('statement_timeout', '1', false)) x $$",
        vec![],
    )
    .unwrap();
    bob.execute("CREATE TABLE bobs (id INT)", vec![]).unwrap();
    // What bob sets may reach bob's own next statements on that connection (his search path
    // may lose poison() itself), never another user's: carol's reads and writes, interleaved
    // on every reader and writer connection, run as before.
    let mut carol = s.user("carol");
    carol
        .execute("CREATE TABLE carols (id INT)", vec![])
        .unwrap();
    for _ in 0..8 {
        let _ = bob.execute("SELECT poison()", vec![]);
        carol
            .execute("SELECT count(*) FROM carols", vec![])
            .unwrap();
        let _ = bob.execute("INSERT INTO bobs SELECT poison()", vec![]);
        carol
            .execute("INSERT INTO carols VALUES (1)", vec![])
            .unwrap();
    }
    let page = s.get("admin");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("public text"), "{}", page.body);
    s.still_serves("pgattack");
}

/// On PostgreSQL a statement's text does not say what it writes (a function, a trigger on
/// the client's own table): a client's write to the documents that way reaches the front's
/// document cache like any other write, so nobody is served the old version.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_clients_write_through_a_function_or_trigger_reaches_the_document_cache() {
    let Some(s) = Stack::start_pg("lp-pg-cache") else {
        return;
    };
    assert_eq!(s.put("page", "v1").status, 201);
    assert_eq!(s.put("other", "o1").status, 201);
    let mut bob = s.user("bob");
    run_all(
        &mut bob,
        &[
            "CREATE FUNCTION w(v text) RETURNS int LANGUAGE sql AS
               $$ UPDATE docs SET content = v WHERE name = 'page' RETURNING 1 $$",
            "CREATE TABLE log (v text)",
            "CREATE FUNCTION on_log() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN UPDATE docs SET content = NEW.v WHERE name = 'other'; RETURN NEW; END $$",
            "CREATE TRIGGER t AFTER INSERT ON log FOR EACH ROW EXECUTE FUNCTION on_log()",
        ],
    );
    // Cached from now on (bob's DDL above made every document held out of date).
    s.cached("page", "v1");
    s.cached("other", "o1");
    bob.execute("SELECT w('v2')", vec![]).unwrap();
    common::eventually("the page's new version served", || {
        s.get("page").body.contains("v2")
    });
    bob.execute("INSERT INTO log VALUES ('o2')", vec![])
        .unwrap();
    common::eventually("the other page's new version served", || {
        s.get("other").body.contains("o2")
    });
}

/// Keys narrow a change notice to the rows they name, and caches trust them: a client's
/// (through test-server) are not taken. Bob updates one document naming another as its key;
/// the front serves the new version of the one he wrote.
#[test]
fn a_clients_keys_cannot_keep_a_changed_document_in_the_cache() {
    let s = Stack::start("lp-keys");
    assert_eq!(s.put("a", "a1").status, 201);
    assert_eq!(s.put("b", "b1").status, 201);
    let mut bob = s.user("bob");
    s.cached("a", "a1");
    s.cached("b", "b1");
    let lie = Statement {
        sql: "UPDATE docs SET content = 'b2' WHERE name = 'b'".into(),
        keys: vec!["a".into()],
        ..Default::default()
    };
    bob.data(&req(data_request::Kind::Execute(lie))).unwrap();
    common::eventually("b's new version served", || s.get("b").body.contains("b2"));
}
