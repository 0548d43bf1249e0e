//! db-server on real PostgreSQL: the SQLite suite's behaviours (CRUD with every value type,
//! batches, error codes, idempotency, transactions, cursors, durability under kill -9) plus
//! replica routing against a real streaming-replication hot standby.
//!
//! Needs `DATABASE_URL` (the primary) and, for the replica tests, `DATABASE_REPLICA_URL` (a hot
//! standby of it); `.ci/pg-cluster start DIR PORT` sets both up on loopback. Without them every
//! test here is ignored (`build.rs` sets `netmod_pg` and `netmod_pg_replica` only when they are
//! set), unless `NETMOD_REQUIRE_PG=1` (set by `.ci/run`), which runs them and turns a missing
//! database into a failure. Each test works in its own schema.
//!
//! db-server logs in as an ordinary role (`.ci/pg-cluster` makes `netmod`, owner of the
//! database `netmod`, and the client login `netmod_client`); `DATABASE_ADMIN_URL`, a
//! superuser's, serves the tests that make roles or cut connections.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::{urls, Schema};
use common::{start_db_pool, Proc, Running, WAIT};
use db::libpq::PgConn;
use db::{PgConfig, PoolConfig};
use protocol::proto::{
    batch_condition, data_request, data_response, step_outcome, Batch, BatchCondition, BatchStep,
    CursorOpen, DataRequest, NamedArg, ReadConsistency, Statement, StatementResult, TxnBegin,
    TxnEnd, TxnStatement, Value,
};
use protocol::wire::ErrorCode;
use tools::client::{ClientError, FrameClient};

impl Schema {
    fn config(&self, replicas: Vec<String>) -> PgConfig {
        PgConfig {
            replicas,
            readers: 2,
            writers: 4,
            max_txns: 16,
            replica_wait: Duration::from_secs(5),
            replica_retry: Duration::from_secs(60),
            ..PgConfig::new(self.primary.clone())
        }
    }

    /// db-server in-process on this schema, without replicas.
    fn start(&self) -> Running {
        start_db_pool(PoolConfig::Postgres(self.config(vec![])))
    }

    /// With the hot standby as replica, or `None` when there is none.
    fn start_with_replica(&self) -> Option<Running> {
        let Some(r) = self.replica.clone() else {
            common::prerequisite(
                "a PostgreSQL hot standby (DATABASE_REPLICA_URL)",
                "NETMOD_REQUIRE_PG",
                false,
            );
            return None;
        };
        Some(start_db_pool(PoolConfig::Postgres(self.config(vec![r]))))
    }
}

fn stmt(sql: &str, args: Vec<Value>) -> Statement {
    Statement {
        keys: Vec::new(),
        sql: sql.into(),
        args,
        named_args: vec![],
    }
}

fn req(kind: data_request::Kind) -> DataRequest {
    DataRequest {
        kind: Some(kind),
        ..Default::default()
    }
}

fn exec(sql: &str, args: Vec<Value>) -> DataRequest {
    req(data_request::Kind::Execute(stmt(sql, args)))
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn result(c: &mut FrameClient, r: &DataRequest) -> (StatementResult, u64) {
    let resp = c.data(r).unwrap();
    match resp.kind {
        Some(data_response::Kind::Result(res)) => (res, resp.commit_index),
        other => panic!("{other:?}"),
    }
}

fn count(c: &mut FrameClient, table: &str) -> i64 {
    let r = c
        .execute(&format!("SELECT count(*) FROM {table}"), vec![])
        .unwrap();
    match r.rows[0].values[0].kind {
        Some(protocol::proto::value::Kind::Integer(n)) => n,
        ref other => panic!("count is {other:?}"),
    }
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_crud_round_trips_every_value_type_nulls_unicode_and_a_large_blob() {
    let Some(schema) = Schema::new("crud") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, \
         b BYTEA, n TEXT, flag BOOLEAN, small INT)",
        vec![],
    )
    .unwrap();
    let blob: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
    let ins = c
        .execute(
            "INSERT INTO t (i, r, s, b, n, flag, small) VALUES (?1, ?2, ?3, ?4, ?5, true, ?6)",
            vec![
                Value::int(i64::MIN),
                Value::real(-2.5e-300),
                Value::text("héllo 世界 🦀"),
                Value::blob(blob.clone()),
                Value::null(),
                Value::int(7),
            ],
        )
        .unwrap();
    assert_eq!(ins.rows_affected, 1);
    let r = c
        .execute(
            "SELECT id, i, r, s, b, n, flag, small, i + 1 AS next FROM t WHERE i < 0",
            vec![],
        )
        .unwrap();
    let types: Vec<(&str, &str)> = r
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.decltype.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("id", "int8"),
            ("i", "int8"),
            ("r", "float8"),
            ("s", "text"),
            ("b", "bytea"),
            ("n", "text"),
            ("flag", "bool"),
            ("small", "int4"),
            ("next", "int8"),
        ]
    );
    assert_eq!(
        r.rows[0].values,
        [
            Value::int(1),
            Value::int(i64::MIN),
            Value::real(-2.5e-300),
            Value::text("héllo 世界 🦀"),
            Value::blob(blob),
            Value::null(),
            Value::int(1),
            Value::int(7),
            Value::int(i64::MIN + 1),
        ]
    );
    // Named parameters, as SQLite spells them, and a NULL through a named one.
    let named = Statement {
        keys: Vec::new(),
        sql: "UPDATE t SET s = :s, n = :n WHERE id = :id".into(),
        args: vec![],
        named_args: vec![
            NamedArg {
                name: ":s".into(),
                value: Some(Value::text("bye")),
            },
            NamedArg {
                name: ":id".into(),
                value: Some(Value::int(1)),
            },
            NamedArg {
                name: ":n".into(),
                value: None,
            },
        ],
    };
    let up = result(&mut c, &req(data_request::Kind::Execute(named))).0;
    assert_eq!(up.rows_affected, 1);
    let r = c
        .execute("SELECT s, n FROM t WHERE id = ?", vec![Value::int(1)])
        .unwrap();
    assert_eq!(r.rows[0].values, [Value::text("bye"), Value::null()]);
    // A literal '?' and a cast are not parameters.
    let r = c
        .execute("SELECT '?'::text AS q, ?::int8 AS p", vec![Value::int(5)])
        .unwrap();
    assert_eq!(r.rows[0].values, [Value::text("?"), Value::int(5)]);
    let del = c
        .execute("DELETE FROM t WHERE id = $1", vec![Value::int(1)])
        .unwrap();
    assert_eq!(del.rows_affected, 1);
    assert_eq!(count(&mut c, "t"), 0);
}

fn step(sql: &str) -> BatchStep {
    BatchStep {
        stmt: Some(stmt(sql, vec![])),
        ..Default::default()
    }
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_batch_is_all_or_nothing_and_a_step_that_may_fail_does_not_take_it_down() {
    let Some(schema) = Schema::new("batch") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE k (id INT PRIMARY KEY, v TEXT)", vec![])
        .unwrap();
    let batch = |steps| req(data_request::Kind::Batch(Batch { steps }));
    let failing = batch(vec![
        step("INSERT INTO k VALUES (1, 'a')"),
        step("INSERT INTO k VALUES (2, 'b')"),
        step("INSERT INTO k VALUES (1, 'dup')"),
    ]);
    assert_eq!(code(c.data(&failing)), ErrorCode::Constraint);
    assert_eq!(count(&mut c, "k"), 0, "nothing of a failed batch stays");

    let cond = |c: batch_condition::Cond| Some(BatchCondition { cond: Some(c) });
    let mut dup = step("INSERT INTO k VALUES (10, 'again')");
    dup.may_fail = true;
    let mut fallback = step("INSERT INTO k VALUES (11, 'fallback')");
    fallback.condition = cond(batch_condition::Cond::Error(1));
    let mut never = step("INSERT INTO k VALUES (12, 'never')");
    never.condition = cond(batch_condition::Cond::Ok(1));
    let resp = c
        .data(&batch(vec![
            step("INSERT INTO k VALUES (10, 'first')"),
            dup,
            fallback,
            never,
        ]))
        .unwrap();
    let Some(data_response::Kind::Batch(b)) = resp.kind else {
        panic!("{resp:?}")
    };
    let kinds: Vec<&str> = b
        .steps
        .iter()
        .map(|s| match s.outcome {
            Some(step_outcome::Outcome::Ok(_)) => "ok",
            Some(step_outcome::Outcome::Error(_)) => "error",
            Some(step_outcome::Outcome::Skipped(_)) => "skipped",
            None => "none",
        })
        .collect();
    assert_eq!(kinds, ["ok", "error", "ok", "skipped"]);
    let rows = c
        .execute("SELECT id, v FROM k ORDER BY id", vec![])
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 2, "the failed step alone was undone");
    assert_eq!(rows[1].values, [Value::int(11), Value::text("fallback")]);
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_each_error_has_its_code_and_the_server_keeps_serving() {
    let Some(schema) = Schema::new("errors") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE s (id INT PRIMARY KEY, n INT NOT NULL)",
        vec![],
    )
    .unwrap();
    c.execute("INSERT INTO s VALUES (1, 1)", vec![]).unwrap();
    let e = |sql: &str| exec(sql, vec![]);
    let cases = [
        (e("SELEC 1"), ErrorCode::SqlError),
        (e("SELECT nope FROM s"), ErrorCode::SqlError),
        (e("SELECT 1; SELECT 2"), ErrorCode::SqlError),
        (e("SELECT * FROM missing"), ErrorCode::UnknownTable),
        (e("INSERT INTO missing VALUES (1)"), ErrorCode::UnknownTable),
        (e("INSERT INTO s VALUES (1, 2)"), ErrorCode::Constraint),
        (e("INSERT INTO s VALUES (2, NULL)"), ErrorCode::Constraint),
        (
            e("INSERT INTO s VALUES (3, 'text')"),
            ErrorCode::TypeMismatch,
        ),
        (
            exec("INSERT INTO s VALUES (4, ?)", vec![Value::text("a\0b")]),
            ErrorCode::TypeMismatch,
        ),
        (e(""), ErrorCode::BadRequest),
        (e("BEGIN"), ErrorCode::BadRequest),
        (e("  commit"), ErrorCode::BadRequest),
        (exec("SELECT 1", vec![Value::int(1)]), ErrorCode::SqlError),
        (
            DataRequest {
                max_result_bytes: 100,
                ..e("SELECT g FROM generate_series(1, 1000) g")
            },
            ErrorCode::TooLarge,
        ),
        (
            DataRequest {
                consistency: ReadConsistency::AfterIndex as i32,
                after_index: u64::MAX / 2,
                ..e("SELECT 1")
            },
            ErrorCode::Stale,
        ),
    ];
    for (r, want) in cases {
        assert_eq!(code(c.data(&r)), want, "for {r:?}");
        assert_eq!(count(&mut c, "s"), 1, "still serving, nothing changed");
    }
    let cut = result(
        &mut c,
        &DataRequest {
            max_result_bytes: 100,
            allow_truncation: true,
            ..e("SELECT g FROM generate_series(1, 1000) g")
        },
    )
    .0;
    assert!(cut.truncated && !cut.rows.is_empty() && cut.rows.len() < 1000);

    // A statement timeout answers TIMEOUT; a write in a read-only cursor answers READ_ONLY.
    let t = begin(&mut c, 5000);
    txn_exec(&mut c, t, 1, "SET LOCAL statement_timeout = 50").unwrap();
    assert_eq!(
        code(txn_exec(&mut c, t, 2, "SELECT pg_sleep(5)")),
        ErrorCode::Timeout
    );
    end(&mut c, data_request::Kind::Rollback, t, 3).unwrap();
    let cursor = c.data(&req(data_request::Kind::OpenCursor(CursorOpen {
        stmt: Some(stmt("INSERT INTO s VALUES (9, 9) RETURNING id", vec![])),
        ..Default::default()
    })));
    assert_eq!(code(cursor), ErrorCode::ReadOnly);
    assert_eq!(count(&mut c, "s"), 1);
}

fn begin(c: &mut FrameClient, timeout_ms: u32) -> u64 {
    match c
        .data(&req(data_request::Kind::Begin(TxnBegin {
            timeout_ms,
            idle_ms: timeout_ms,
        })))
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Txn(t)) => t.txn_id,
        other => panic!("{other:?}"),
    }
}

fn txn_exec(
    c: &mut FrameClient,
    txn_id: u64,
    seq: u64,
    sql: &str,
) -> Result<protocol::proto::DataResponse, ClientError> {
    c.data(&req(data_request::Kind::TxnExecute(TxnStatement {
        txn_id,
        seq,
        stmt: Some(stmt(sql, vec![])),
    })))
}

fn end(
    c: &mut FrameClient,
    kind: fn(TxnEnd) -> data_request::Kind,
    txn_id: u64,
    seq: u64,
) -> Result<protocol::proto::DataResponse, ClientError> {
    c.data(&req(kind(TxnEnd { txn_id, seq })))
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_transactions_commit_roll_back_isolate_and_expire() {
    let Some(schema) = Schema::new("txn") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut other = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE a (id INT PRIMARY KEY)", vec![])
        .unwrap();

    let t1 = begin(&mut c, 5000);
    let t2 = begin(&mut other, 5000);
    txn_exec(&mut c, t1, 1, "INSERT INTO a VALUES (1)").unwrap();
    txn_exec(&mut other, t2, 1, "INSERT INTO a VALUES (2)").unwrap();
    let seen = |c: &mut FrameClient, t: u64, seq: u64| -> usize {
        match txn_exec(c, t, seq, "SELECT id FROM a").unwrap().kind {
            Some(data_response::Kind::Result(r)) => r.rows.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(seen(&mut c, t1, 2), 1, "its own write only");
    assert_eq!(seen(&mut other, t2, 2), 1, "its own write only");
    assert_eq!(count(&mut c, "a"), 0, "nothing visible before commit");
    let committed = end(&mut c, data_request::Kind::Commit, t1, 3).unwrap();
    assert!(committed.commit_index > 0);
    end(&mut other, data_request::Kind::Rollback, t2, 3).unwrap();
    assert_eq!(count(&mut c, "a"), 1, "commit visible, rollback not");
    assert_eq!(
        code(end(&mut c, data_request::Kind::Commit, t1, 4)),
        ErrorCode::TxnNotFound
    );

    // A failed statement fails the transaction: it cannot commit.
    let t3 = begin(&mut c, 5000);
    txn_exec(&mut c, t3, 1, "INSERT INTO a VALUES (3)").unwrap();
    assert_eq!(
        code(txn_exec(&mut c, t3, 2, "INSERT INTO a VALUES (1)")),
        ErrorCode::Constraint
    );
    assert_eq!(
        code(end(&mut c, data_request::Kind::Commit, t3, 3)),
        ErrorCode::BadRequest
    );
    assert_eq!(count(&mut c, "a"), 1);

    // Abandoned: rolled back after its timeout, then reported expired.
    let t4 = begin(&mut c, 200);
    txn_exec(&mut c, t4, 1, "INSERT INTO a VALUES (4)").unwrap();
    common::eventually("transaction expired", || {
        txn_exec(&mut c, t4, 2, "SELECT 1").err().is_some_and(|e| {
            matches!(
                e,
                ClientError::Server {
                    code: ErrorCode::TxnExpired,
                    ..
                }
            )
        })
    });
    assert_eq!(count(&mut c, "a"), 1, "the abandoned write was rolled back");
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_cursor_pages_through_a_large_result_from_one_snapshot() {
    let Some(schema) = Schema::new("cursor") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE big AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 2500) g",
        vec![],
    )
    .unwrap();
    let open = req(data_request::Kind::OpenCursor(CursorOpen {
        stmt: Some(stmt("SELECT id, pad FROM big ORDER BY id", vec![])),
        page_rows: 1000,
        ..Default::default()
    }));
    let open = DataRequest {
        max_result_bytes: 300_000,
        ..open
    };
    let mut page = match c.data(&open).unwrap().kind {
        Some(data_response::Kind::Page(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(page.columns.len(), 2);
    let id = page.cursor_id;
    // A write after the cursor opened is not in its snapshot.
    c.execute("INSERT INTO big VALUES (9999, 'late')", vec![])
        .unwrap();
    let mut ids: Vec<i64> = Vec::new();
    let mut seq = 1;
    loop {
        assert!(page.rows.len() <= 1000);
        for r in &page.rows {
            match r.values[0].kind {
                Some(protocol::proto::value::Kind::Integer(i)) => ids.push(i),
                ref other => panic!("{other:?}"),
            }
        }
        if page.done {
            break;
        }
        page = match c
            .data(&req(data_request::Kind::Fetch(TxnEnd { txn_id: id, seq })))
            .unwrap()
            .kind
        {
            Some(data_response::Kind::Page(p)) => p,
            other => panic!("{other:?}"),
        };
        seq += 1;
    }
    assert_eq!(
        ids,
        (1..=2500).collect::<Vec<_>>(),
        "every row once, in order"
    );
    assert!(
        seq > 3,
        "pages were cut at the byte limit, not only at 1000 rows"
    );
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_concurrent_writes_fail_alone_and_are_counted() {
    let Some(schema) = Schema::new("group") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE g (id INT PRIMARY KEY, who INT)", vec![])
        .unwrap();
    let addr = srv.addr;
    let failed = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || {
                let mut c = FrameClient::connect(addr, WAIT).unwrap();
                for i in 0..50 {
                    // Writer 1's first row collides with writer 0's.
                    let id = if w == 1 && i == 0 { 0 } else { w * 1000 + i };
                    let r = c.execute(
                        "INSERT INTO g VALUES (?1, ?2)",
                        vec![Value::int(id), Value::int(w)],
                    );
                    if r.is_err() {
                        failed.lock().unwrap().push(w);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Writers 0 and 1 race for id 0: whichever comes second fails, and nothing else does.
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed == [0] || failed == [1],
        "only the colliding write fails: {failed:?}"
    );
    assert_eq!(count(&mut c, "g"), 8 * 50 - 1);
    let stats = match c
        .data(&req(data_request::Kind::Stats(Default::default())))
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Stats(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(stats.grouped_writes >= 8 * 50 - 1);
    let ins = stats
        .statements
        .iter()
        .find(|s| s.sql.starts_with("INSERT INTO g"))
        .expect("monitored");
    assert_eq!((ins.count, ins.errors), (400, 1));
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_write_retried_with_its_idempotency_key_is_applied_once_with_the_same_reply() {
    let Some(schema) = Schema::new("idem") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE i (id BIGSERIAL PRIMARY KEY, v TEXT)", vec![])
        .unwrap();
    let write = DataRequest {
        idempotency_key: "order-42".into(),
        ..exec(
            "INSERT INTO i (v) VALUES (?1) RETURNING id",
            vec![Value::text("x")],
        )
    };
    let first = c.data(&write).unwrap();
    let again = c.data(&write).unwrap();
    assert_eq!(first.kind, again.kind, "the stored reply");
    assert!(
        again.commit_index >= first.commit_index,
        "a retry's index is at or past the write's"
    );
    assert_eq!(count(&mut c, "i"), 1);
    let other = DataRequest {
        idempotency_key: "order-43".into(),
        ..write.clone()
    };
    c.data(&other).unwrap();
    assert_eq!(count(&mut c, "i"), 2);
    // A failed write stores nothing: its retry runs again.
    let bad = DataRequest {
        idempotency_key: "order-44".into(),
        ..exec("INSERT INTO i (id, v) VALUES (1, 'dup')", vec![])
    };
    assert_eq!(code(c.data(&bad)), ErrorCode::Constraint);
    assert_eq!(code(c.data(&bad)), ErrorCode::Constraint);
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_one_key_sent_at_once_on_several_connections_writes_once_and_answers_alike() {
    let Some(schema) = Schema::new("idem_race") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE i (id BIGSERIAL PRIMARY KEY, v TEXT)", vec![])
        .unwrap();
    let write = DataRequest {
        idempotency_key: "order-race".into(),
        ..exec("INSERT INTO i (v) VALUES ('x') RETURNING id", vec![])
    };
    let answers: Vec<StatementResult> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..4)
            .map(|_| {
                let write = write.clone();
                let addr = srv.addr;
                s.spawn(move || {
                    let mut c = FrameClient::connect(addr, WAIT).unwrap();
                    result(&mut c, &write).0
                })
            })
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(count(&mut c, "i"), 1);
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_records_of_a_build_whose_claim_answered_a_boolean_keep_working() {
    let Some(schema) = Schema::new("idem_upgrade") else {
        return;
    };
    let write = DataRequest {
        idempotency_key: "order-old".into(),
        ..exec("INSERT INTO i (v) VALUES ('x') RETURNING id", vec![])
    };
    let first = {
        let srv = schema.start();
        let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
        c.execute("CREATE TABLE i (id BIGSERIAL PRIMARY KEY, v TEXT)", vec![])
            .unwrap();
        result(&mut c, &write).0
    };
    // What an older build left: `_netmod_claim` answering a boolean.
    let mut pg = PgConn::connect(&schema.primary).unwrap();
    pg.exec(
        "DROP FUNCTION _netmod_claim(text, text, bigint);
         CREATE FUNCTION _netmod_claim(proof text, k text, now_s bigint) RETURNS boolean
         LANGUAGE sql AS 'SELECT true'",
    )
    .unwrap();
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    assert_eq!(result(&mut c, &write).0, first);
    assert_eq!(count(&mut c, "i"), 1);
}

fn on_standby(c: &mut FrameClient, consistency: ReadConsistency) -> bool {
    let r = DataRequest {
        consistency: consistency as i32,
        ..exec("SELECT pg_is_in_recovery()", vec![])
    };
    result(c, &r).0.rows[0].values == [Value::int(1)]
}

#[test]
#[cfg_attr(
    not(netmod_pg_replica),
    ignore = "needs PostgreSQL and a hot standby: set DATABASE_URL and DATABASE_REPLICA_URL (.ci/pg-cluster)"
)]
fn pg_reads_go_to_the_replica_and_after_index_reads_see_acknowledged_writes() {
    let Some(schema) = Schema::new("replica") else {
        return;
    };
    let Some(srv) = schema.start_with_replica() else {
        return;
    };
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    assert!(on_standby(&mut c, ReadConsistency::AnyReplica));
    assert!(!on_standby(&mut c, ReadConsistency::Primary));
    c.execute("CREATE TABLE r (id INT PRIMARY KEY)", vec![])
        .unwrap();
    for id in 0..50 {
        let (_, index) = result(
            &mut c,
            &exec("INSERT INTO r VALUES (?1)", vec![Value::int(id)]),
        );
        assert!(index > 0);
        let read = DataRequest {
            consistency: ReadConsistency::AfterIndex as i32,
            after_index: index,
            ..exec(
                "SELECT id, pg_is_in_recovery() FROM r WHERE id = ?1",
                vec![Value::int(id)],
            )
        };
        let (r, seen) = result(&mut c, &read);
        assert_eq!(r.rows.len(), 1, "write {id} visible");
        assert!(seen >= index);
        assert_eq!(
            r.rows[0].values[1],
            Value::int(1),
            "answered by the standby"
        );
    }
    // Inside a transaction everything stays on the primary.
    let t = begin(&mut c, 5000);
    match txn_exec(&mut c, t, 1, "SELECT pg_is_in_recovery()")
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Result(r)) => assert_eq!(r.rows[0].values, [Value::int(0)]),
        other => panic!("{other:?}"),
    }
    end(&mut c, data_request::Kind::Rollback, t, 2).unwrap();
    // A statement that looks like a read but writes is sent to the primary.
    let (_, index) = result(&mut c, &exec("CREATE SEQUENCE q", vec![]));
    let next = DataRequest {
        consistency: ReadConsistency::AfterIndex as i32,
        after_index: index,
        ..exec("SELECT nextval('q'), pg_is_in_recovery()", vec![])
    };
    let n = result(&mut c, &next).0;
    assert_eq!(n.rows[0].values, [Value::int(1), Value::int(0)]);
}

#[test]
#[cfg_attr(
    not(netmod_pg_replica),
    ignore = "needs PostgreSQL and a hot standby: set DATABASE_URL and DATABASE_REPLICA_URL (.ci/pg-cluster)"
)]
fn pg_a_replica_that_fails_is_skipped() {
    let Some(schema) = Schema::new("replica-down") else {
        return;
    };
    let Some(live) = schema.replica.clone() else {
        return;
    };
    // A replica nobody listens on, first in the rotation, then the real standby.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2")
    };
    let srv = start_db_pool(PoolConfig::Postgres(schema.config(vec![dead, live])));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut standby = 0;
    for _ in 0..10 {
        if on_standby(&mut c, ReadConsistency::AnyReplica) {
            standby += 1;
        }
    }
    assert!(
        standby >= 8,
        "reads went to the live replica ({standby}/10)"
    );
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_acknowledged_writes_survive_kill_9_of_the_server() {
    let Some(schema) = Schema::new("kill") else {
        return;
    };
    let url = schema.primary.clone();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--postgres",
        &url,
        "--workers",
        "2",
    ];
    let mut p = Proc::spawn("db-server", &args);
    let addr = p.listen_addr();
    let mut c = FrameClient::connect(addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE d (id INT PRIMARY KEY, payload TEXT NOT NULL)",
        vec![],
    )
    .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let Ok(mut c) = FrameClient::connect(addr, WAIT) else {
                    return;
                };
                for i in 0..100_000i64 {
                    let id = w * 1_000_000 + i;
                    let payload = format!("row {id} {}", "x".repeat(200));
                    match c.execute(
                        "INSERT INTO d VALUES (?1, ?2)",
                        vec![Value::int(id), Value::text(payload)],
                    ) {
                        Ok(_) => acked.lock().unwrap().push(id),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    common::eventually("writes flowing", || acked.lock().unwrap().len() >= 300);
    p.signal(libc::SIGKILL);
    p.wait_exit();
    for w in writers {
        w.join().unwrap();
    }
    let mut p = Proc::spawn("db-server", &args);
    let mut c = FrameClient::connect(p.listen_addr(), WAIT).unwrap();
    let rows = c.execute("SELECT id, payload FROM d", vec![]).unwrap().rows;
    let present: std::collections::HashSet<i64> = rows
        .iter()
        .map(|r| match (&r.values[0].kind, &r.values[1].kind) {
            (
                Some(protocol::proto::value::Kind::Integer(id)),
                Some(protocol::proto::value::Kind::Text(t)),
            ) => {
                assert_eq!(
                    *t,
                    format!("row {id} {}", "x".repeat(200)),
                    "no half-written row"
                );
                *id
            }
            other => panic!("bad row {other:?}"),
        })
        .collect();
    let lost: Vec<i64> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_queued_writes_commit_together_and_a_failing_one_fails_alone() {
    use prost::Message as _;
    use protocol::wire::{self, MessageType, Operation};
    let Some(schema) = Schema::new("group-commit") else {
        return;
    };
    // One writer configured (plus the reserved one), so that the writes queue behind a lock
    // and then leave in few groups.
    let cfg = PgConfig {
        writers: 1,
        ..schema.config(vec![])
    };
    let srv = start_db_pool(PoolConfig::Postgres(cfg));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE g (id INT PRIMARY KEY)", vec![])
        .unwrap();
    let stats = |c: &mut FrameClient| match c
        .data(&req(data_request::Kind::Stats(Default::default())))
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Stats(s)) => s,
        other => panic!("{other:?}"),
    };
    let before = stats(&mut c);
    let mut locker = FrameClient::connect(srv.addr, WAIT).unwrap();
    let t = begin(&mut locker, 10_000);
    txn_exec(&mut locker, t, 1, "LOCK TABLE g IN SHARE MODE").unwrap();

    // 100 inserts in flight on one connection; #50 repeats #10's id.
    let mut ids = Vec::new();
    for i in 0..100i64 {
        let id = c.next_id();
        let key = if i == 50 { 10 } else { i };
        let r = exec("INSERT INTO g VALUES (?1)", vec![Value::int(key)]);
        c.send(&wire::message(
            MessageType::Request,
            Operation::Data,
            id,
            &r,
        ))
        .unwrap();
        ids.push(id);
    }
    // The server reads requests in order: once this answer is back, all 100 are queued.
    let probe = stats(&mut c);
    assert_eq!(probe.grouped_writes, before.grouped_writes, "all blocked");
    end(&mut locker, data_request::Kind::Commit, t, 2).unwrap();

    let mut answers = std::collections::HashMap::new();
    while answers.len() < ids.len() {
        let m = c.next_message().unwrap();
        answers.insert(m.message_id, m.r#type());
    }
    let failed: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| answers[id] == MessageType::Error)
        .map(|(i, _)| i)
        .collect();
    // Two writers take these (see above), so either of the pair may commit first: the other
    // one, alone, fails.
    assert!(
        failed == [50] || failed == [10],
        "only one of the duplicates fails: {failed:?}"
    );
    assert_eq!(count(&mut c, "g"), 99);
    let after = stats(&mut c);
    let (writes, commits) = (
        after.grouped_writes - before.grouped_writes,
        after.commits - before.commits,
    );
    assert_eq!(writes, 99);
    // Two writers take these (the configured one and the one reserved for db-server's direct
    // callers' and the servers' work): each commits what it held when the lock went, then
    // what is left; the one with the duplicate once more without it.
    assert!(commits <= 6, "{writes} writes in {commits} commits");

    // Reads in flight together: the one that fails does not take the others with it.
    let mut reads = Vec::new();
    for i in 0..60i64 {
        let id = c.next_id();
        let sql = if i == 30 {
            "SELECT id FROM missing"
        } else {
            "SELECT id FROM g WHERE id = ?1"
        };
        let args = if i == 30 { vec![] } else { vec![Value::int(i)] };
        c.send(&wire::message(
            MessageType::Request,
            Operation::Data,
            id,
            &exec(sql, args),
        ))
        .unwrap();
        reads.push(id);
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < reads.len() {
        let m = c.next_message().unwrap();
        answers.insert(m.message_id, m);
    }
    for (i, id) in reads.iter().enumerate() {
        let m = &answers[id];
        if i == 30 {
            assert_eq!(m.r#type(), MessageType::Error);
            continue;
        }
        assert_eq!(m.r#type(), MessageType::Response, "read {i}");
        let resp = protocol::proto::DataResponse::decode(m.data.clone()).unwrap();
        let Some(data_response::Kind::Result(r)) = resp.kind else {
            panic!("{resp:?}")
        };
        let want = usize::from(i != 50);
        assert_eq!(r.rows.len(), want, "read {i}");
    }
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_lost_database_connection_answers_unavailable_then_reconnects() {
    let Some(schema) = Schema::new("reconnect") else {
        return;
    };
    // One writer, connected from the start: the connection the cut hits.
    let srv = start_db_pool(PoolConfig::Postgres(PgConfig {
        writers: 1,
        ..schema.config(vec![])
    }));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE u (id INT PRIMARY KEY)", vec![])
        .unwrap();
    c.execute("INSERT INTO u VALUES (1)", vec![]).unwrap();
    for _ in 0..4 {
        c.execute("SELECT id FROM u", vec![]).unwrap();
    }
    // Cut every connection db-server has (waiting until they are gone).
    let mut admin = PgConn::connect(&schema.admin).unwrap();
    let cut = admin
        .exec(&format!(
            "WITH v AS MATERIALIZED \
             (SELECT pid FROM pg_stat_activity WHERE application_name = '{}') \
             SELECT count(*) FROM v WHERE pg_terminate_backend(pid, 5000)",
            schema.name
        ))
        .unwrap();
    assert_ne!(cut.value(0, 0), Some(&b"0"[..]), "connections were cut");
    // A read is safe to repeat: db-server reconnects and answers.
    assert_eq!(c.execute("SELECT id FROM u", vec![]).unwrap().rows.len(), 1);
    // The next write finds its connection gone: UNAVAILABLE (retryable), not a hang or a crash.
    let r = c.execute("INSERT INTO u VALUES (2)", vec![]);
    match r {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::Unavailable),
        Ok(_) => panic!("a write on a cut connection cannot succeed"),
        Err(e) => panic!("{e:?}"),
    }
    // And the next ones reconnect. There are two writers (the configured one and the one
    // reserved for the servers' own work), both cut: whichever takes the next write may still
    // hold its cut connection and fail it once (UNAVAILABLE, nothing applied).
    let mut failed = 0;
    while let Err(e) = c.execute("INSERT INTO u VALUES (3)", vec![]) {
        match e {
            ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            } if failed < 1 => failed += 1,
            e => panic!("{e:?}"),
        }
    }
    let ids = c.execute("SELECT id FROM u ORDER BY id", vec![]).unwrap();
    assert_eq!(
        ids.rows
            .iter()
            .map(|r| r.values[0].clone())
            .collect::<Vec<_>>(),
        [Value::int(1), Value::int(3)]
    );
}

/// `r` as a sandboxed request (what test-server sends for its clients).
fn sandboxed(mut r: DataRequest) -> DataRequest {
    r.sandboxed = true;
    r
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_sandboxed_statements_cannot_reach_the_servers_tables_however_they_name_them() {
    let Some(schema) = Schema::new("sandbox") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    // What test-server's setup does, outside the sandbox.
    c.execute(
        "CREATE TABLE IF NOT EXISTS _netmod_users (name TEXT PRIMARY KEY, secret_hash TEXT)",
        vec![],
    )
    .unwrap();
    c.execute("INSERT INTO _netmod_users VALUES ('admin', 'h')", vec![])
        .unwrap();
    c.execute(
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT)",
        vec![],
    )
    .unwrap();
    c.execute("INSERT INTO notes VALUES (1, 'x')", vec![])
        .unwrap();
    let tries = [
        "SELECT * FROM _netmod_users",
        "SELECT * FROM \"_netmod_users\"",
        "SELECT * FROM U&\"\\005fnetmod_users\"",
        "SELECT * FROM _NETMOD_USERS",
        "UPDATE _netmod_users SET secret_hash = 'x'",
        "DELETE FROM _netmod_idempotency",
        "INSERT INTO _netmod_idempotency (key, created) VALUES ('k', 1)",
        "DROP TABLE _netmod_users",
        "ALTER TABLE _netmod_users RENAME TO stolen",
        "WITH u AS (SELECT * FROM _netmod_users) SELECT * FROM u",
        "SELECT (SELECT count(*) FROM _netmod_users)",
        "CREATE TRIGGER t AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION pg_catalog.now()",
        "SET ROLE postgres",
    ];
    for sql in tries {
        match c.data(&sandboxed(exec(sql, vec![]))) {
            Err(ClientError::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::Forbidden, "{sql}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // A view made by the sandbox reads with its owner's rights: refused too.
    let _ = c.data(&sandboxed(exec(
        "CREATE VIEW peek AS SELECT * FROM _netmod_users",
        vec![],
    )));
    let peek = code(c.data(&sandboxed(exec("SELECT * FROM peek", vec![]))));
    assert!(
        matches!(peek, ErrorCode::Forbidden | ErrorCode::UnknownTable),
        "{peek:?}"
    );
    // Batches, transactions and cursors are sandboxed too.
    let batch = sandboxed(req(data_request::Kind::Batch(Batch {
        steps: vec![step("SELECT * FROM _netmod_users")],
    })));
    assert_eq!(code(c.data(&batch)), ErrorCode::Forbidden);
    let cursor = sandboxed(req(data_request::Kind::OpenCursor(CursorOpen {
        stmt: Some(stmt("SELECT * FROM _netmod_users", vec![])),
        ..Default::default()
    })));
    assert_eq!(code(c.data(&cursor)), ErrorCode::Forbidden);
    // A transaction belongs to whoever began it: the server's is unknown to a client.
    let server_txn = begin(&mut c, 5000);
    let txn = match c
        .data(&sandboxed(req(data_request::Kind::Begin(TxnBegin {
            timeout_ms: 5000,
            idle_ms: 5000,
        }))))
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Txn(t)) => t.txn_id,
        other => panic!("{other:?}"),
    };
    let inside = |txn_id| {
        sandboxed(req(data_request::Kind::TxnExecute(TxnStatement {
            txn_id,
            seq: 1,
            stmt: Some(stmt("SELECT * FROM _netmod_users", vec![])),
        })))
    };
    assert_eq!(code(c.data(&inside(server_txn))), ErrorCode::TxnNotFound);
    assert_eq!(code(c.data(&inside(txn))), ErrorCode::Forbidden);
    let _ = end(&mut c, data_request::Kind::Rollback, server_txn, 1);
    // The client's own work goes on: the tables it may use, and ones it creates.
    let (r, _) = result(&mut c, &sandboxed(exec("SELECT body FROM notes", vec![])));
    assert_eq!(r.rows.len(), 1);
    for sql in [
        "CREATE TABLE mine (id BIGINT PRIMARY KEY)",
        "INSERT INTO mine VALUES (1)",
        "UPDATE notes SET body = 'y'",
    ] {
        c.data(&sandboxed(exec(sql, vec![]))).unwrap();
    }
    // A server table made after the start is protected as soon as it exists.
    c.execute("CREATE TABLE _netmod_later (x INT)", vec![])
        .unwrap();
    assert_eq!(
        code(c.data(&sandboxed(exec("SELECT * FROM _netmod_later", vec![])))),
        ErrorCode::Forbidden
    );
    // The role never outlives its statement: the server's own statements still work.
    assert_eq!(count(&mut c, "_netmod_users"), 1);
    c.execute("INSERT INTO _netmod_users VALUES ('b', 'h')", vec![])
        .unwrap();
    assert_eq!(count(&mut c, "_netmod_users"), 2);
}

/// A client login that may do more than its documented rights (or cannot log in, or does not
/// exist) is not used: db-server's own work goes on, and client statements are refused
/// FORBIDDEN saying why.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_client_login_with_rights_beyond_its_own_is_not_used() {
    let Some(schema) = Schema::new("login-refused") else {
        return;
    };
    let mut admin = PgConn::connect(&schema.admin).unwrap();
    let strong = format!("{}_strong", schema.name);
    let temp = format!("{}_temp", schema.name);
    let nologin = format!("{}_nologin", schema.name);
    admin
        .exec(&format!(
            "CREATE ROLE {strong} LOGIN; GRANT pg_read_server_files TO {strong};
             CREATE ROLE {temp} LOGIN; GRANT TEMP ON DATABASE netmod TO {temp};
             CREATE ROLE {nologin} NOLOGIN"
        ))
        .unwrap();
    let db_server_user = {
        let mut c = PgConn::connect(&schema.primary).unwrap();
        let r = c.query("SELECT current_user", &[]).unwrap();
        String::from_utf8(r.value(0, 0).unwrap().to_vec()).unwrap()
    };
    for (role, why) in [
        (strong.as_str(), "pg_read_server_files"),
        (temp.as_str(), "temporary tables"),
        (nologin.as_str(), "may not log in"),
        ("no_such_role_here", "does not exist"),
        (db_server_user.as_str(), "db-server's own login"),
        ("Bad-Name", "not a name"),
    ] {
        let srv = start_db_pool(PoolConfig::Postgres(PgConfig {
            client_role: role.into(),
            ..schema.config(vec![])
        }));
        let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
        c.execute("CREATE TABLE IF NOT EXISTS notes (id BIGINT)", vec![])
            .unwrap();
        for r in [
            sandboxed(exec("SELECT * FROM notes", vec![])),
            sandboxed(exec("INSERT INTO notes VALUES (1)", vec![])),
            sandboxed(req(data_request::Kind::Begin(TxnBegin {
                timeout_ms: 5000,
                idle_ms: 5000,
            }))),
        ] {
            match c.data(&r) {
                Err(ClientError::Server { code, message }) => {
                    assert_eq!(code, ErrorCode::Forbidden, "{role}: {message}");
                    assert!(message.contains(why), "{role}: {message}");
                }
                other => panic!("{role}: {other:?}"),
            }
        }
        assert_eq!(count(&mut c, "notes"), 0);
    }
    let _ = admin.exec(&format!(
        "REVOKE TEMP ON DATABASE netmod FROM {temp}; DROP OWNED BY {strong}, {temp}, {nologin};
         DROP ROLE {strong}, {temp}, {nologin}"
    ));
}

/// Issue 23's rights check: what the client login may do, read from PostgreSQL's catalogs,
/// is exactly what docs/operations.md documents — and nothing beyond it.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_the_client_role_holds_exactly_its_documented_rights() {
    let Some(schema) = Schema::new("rights") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS _netmod_users (name TEXT PRIMARY KEY, secret_hash TEXT)",
        "CREATE TABLE docs (name TEXT PRIMARY KEY, content TEXT, id BIGSERIAL)",
    ] {
        c.execute(sql, vec![]).unwrap();
    }
    // The client makes a table of its own: it lands in its schema.
    c.data(&sandboxed(exec("CREATE TABLE mine (id BIGINT)", vec![])))
        .unwrap();
    let mut admin = PgConn::connect(&schema.admin).unwrap();
    let one = |admin: &mut PgConn, sql: &str| -> String {
        let r = admin.query(sql, &[]).unwrap();
        String::from_utf8(r.value(0, 0).unwrap_or_default().to_vec()).unwrap()
    };
    let role = "netmod_client";
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT concat_ws(',', rolsuper, rolinherit, rolcreaterole, rolcreatedb,
                                  rolcanlogin, rolreplication, rolbypassrls)
                 FROM pg_roles WHERE rolname = '{role}'"
            )
        ),
        "f,t,f,f,t,f,f",
        "attributes: LOGIN only"
    );
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                 WHERE r.rolname = '{role}'"
            )
        ),
        "0",
        "a member of no role"
    );
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT concat_ws(',',
                    has_database_privilege('{role}', current_database(), 'CONNECT'),
                    has_database_privilege('{role}', current_database(), 'TEMP'),
                    has_database_privilege('{role}', current_database(), 'CREATE'))"
            )
        ),
        "t,f,f",
        "database: CONNECT only"
    );
    let s = &schema.name;
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT concat_ws(',',
                    has_schema_privilege('{role}', '{s}', 'USAGE'),
                    has_schema_privilege('{role}', '{s}', 'CREATE'),
                    has_schema_privilege('{role}', '{s}_client', 'USAGE'),
                    has_schema_privilege('{role}', '{s}_client', 'CREATE'),
                    (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{s}_client'))"
            )
        ),
        format!("t,f,t,t,{}", one(&mut admin, &format!("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{s}'"))),
        "schemas: the servers' to use, its own to create in (owned by db-server's role)"
    );
    // Every relation of the servers' schema, with every right the role holds on it.
    let rights = one(
        &mut admin,
        &format!(
            "SELECT string_agg(c.relname || ':' || (
                 SELECT coalesce(string_agg(p, ' ' ORDER BY p), '-')
                 FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES',
                                   'TRIGGER']) p
                 WHERE c.relkind <> 'S' AND has_table_privilege('{role}', c.oid, p)
                    OR c.relkind = 'S' AND p IN ('SELECT', 'UPDATE')
                       AND has_sequence_privilege('{role}', c.oid, p)), ';' ORDER BY c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{s}' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        ),
    );
    assert_eq!(
        rights,
        "_netmod_idempotency:-;_netmod_secret:-;_netmod_users:-;\
         docs:DELETE INSERT SELECT UPDATE;docs_id_seq:SELECT",
        "the servers' relations"
    );
    // Functions of the servers' schema it may run: the two that need db-server's proof, the
    // reset that runs as its caller after each of its statements, and the check that the
    // reset ran to its end.
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = '{s}' AND has_function_privilege('{role}', p.oid, 'EXECUTE')"
            )
        ),
        "_netmod_claim,_netmod_reset,_netmod_reset_done,_netmod_store"
    );
    // And the role's own objects live in its schema only.
    assert_eq!(
        one(
            &mut admin,
            &format!(
                "SELECT string_agg(n.nspname || '.' || c.relname, ',') FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relowner = '{role}'::regrole"
            )
        ),
        format!("{s}_client.mine")
    );
}

/// Issue 23, findings 3 and 6 on PostgreSQL: a client cannot take db-server's identity (a
/// role switch from inside a query), reach server files or programs, plant a trigger on a
/// table the servers write, or forge an idempotency record; afterwards the servers'
/// statements behave as before.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_client_cannot_act_as_db_server_or_the_database_os_user() {
    let Some(schema) = Schema::new("identity") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS _netmod_users (name TEXT PRIMARY KEY, secret_hash TEXT)",
        "INSERT INTO _netmod_users VALUES ('admin', 'argon2-hash')",
        "CREATE TABLE docs (name TEXT PRIMARY KEY, content TEXT)",
    ] {
        c.execute(sql, vec![]).unwrap();
    }
    let db_server_user = {
        let mut pg = PgConn::connect(&schema.primary).unwrap();
        let r = pg.query("SELECT current_user", &[]).unwrap();
        String::from_utf8(r.value(0, 0).unwrap().to_vec()).unwrap()
    };
    let client = |sql: &str| as_user(exec(sql, vec![]), "mallory");
    let s = &schema.name;
    let attacks = [
        // Finding 6: the role set back from inside a query.
        format!(
            "SELECT s, query_to_xml('select name, secret_hash from {s}._netmod_users', true, true, '')
             FROM (SELECT set_config('role', '{db_server_user}', false) s) x"
        ),
        "SELECT set_config('role', 'postgres', false)".to_string(),
        format!("SET ROLE {db_server_user}"),
        "SELECT pg_read_file('/etc/passwd')".to_string(),
        "COPY (SELECT 1) TO PROGRAM 'id'".to_string(),
        "COPY (SELECT 1) TO '/tmp/netmod-pwned'".to_string(),
        "SELECT lo_import('/etc/passwd')".to_string(),
        // Finding 3: a trigger where the servers write, a temporary table to hide theirs.
        "CREATE FUNCTION grab() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
            .to_string(),
        format!("CREATE TRIGGER t BEFORE INSERT ON {s}.docs FOR EACH ROW EXECUTE FUNCTION grab()"),
        "CREATE TEMP TABLE docs (name TEXT, content TEXT)".to_string(),
        format!("ALTER TABLE {s}.docs RENAME TO docs_real"),
        format!("CREATE TABLE {s}.sneaky (x INT)"),
        // Forging or reading an idempotency record without db-server's proof.
        format!("SELECT {s}._netmod_claim('guess', 'alice-k', 1)"),
        format!("SELECT {s}._netmod_store('guess', 'alice-k', '\\x00')"),
        format!("SELECT token FROM {s}._netmod_secret"),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename <> current_user"
            .to_string(),
    ];
    for sql in &attacks {
        match c.data(&client(sql)) {
            // The function a trigger would call may be made (in the client's own schema).
            Ok(_) if sql.starts_with("CREATE FUNCTION grab") => {}
            // Terminating others' backends is refused row by row: false, never true.
            Ok(r) if sql.starts_with("SELECT pg_terminate_backend") => {
                let Some(data_response::Kind::Result(res)) = r.kind else {
                    panic!("{sql}: {r:?}")
                };
                assert!(
                    res.rows.iter().all(|row| row.values[0] != Value::int(1)),
                    "{sql}: {res:?}"
                );
            }
            Err(ClientError::Server { code, message }) => assert!(
                matches!(code, ErrorCode::Forbidden | ErrorCode::UnknownTable),
                "{sql}: {code:?} {message}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/netmod-pwned").exists());
    // The servers' writes and reads as before: no trigger, no shadow, the real rows.
    c.execute("INSERT INTO docs VALUES ('a', 'x')", vec![])
        .unwrap();
    let (r, _) = result(&mut c, &exec("SELECT content FROM docs", vec![]));
    assert_eq!(r.rows.len(), 1);
    let mut admin = PgConn::connect(&schema.admin).unwrap();
    let triggers = admin
        .query(
            &format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{s}.docs'::regclass"),
            &[],
        )
        .unwrap();
    assert_eq!(triggers.value(0, 0), Some(&b"0"[..]));
    let (r, _) = result(
        &mut c,
        &exec("SELECT secret_hash FROM _netmod_users", vec![]),
    );
    assert_eq!(r.rows[0].values[0], Value::text("argon2-hash"));
    // Clients share docs' rows, as documented.
    c.data(&client("INSERT INTO docs VALUES ('b', 'client')"))
        .unwrap();
    assert_eq!(count(&mut c, "docs"), 2);
}

/// `host:port` of a `postgresql://user@host:port/db…` URL.
fn host_port(url: &str) -> &str {
    let rest = &url[url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |at| at + 1)..];
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// Every connection to PostgreSQL carries the configured bound as socket options (so a
/// server cut off by the network is given up within it, not after the kernel's 15-minute
/// retransmission timeout), and a URL's own settings win.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_connections_carry_the_timeout_as_tcp_user_timeout_and_keepalives() {
    use db::postgres::Endpoint;
    use std::os::fd::BorrowedFd;
    let Some((url, _)) = urls("socket-options") else {
        return;
    };
    let pg = Endpoint::new(url.clone(), Duration::from_secs(7))
        .connect()
        .unwrap();
    // SAFETY: the connection owns the socket and outlives the borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(pg.socket()) };
    let sock = socket2::SockRef::from(&fd);
    assert_eq!(
        sock.tcp_user_timeout().unwrap(),
        Some(Duration::from_secs(7))
    );
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(4));

    let sep = if url.contains('?') { '&' } else { '?' };
    let own = Endpoint::new(
        format!("{url}{sep}tcp_user_timeout=1500"),
        Duration::from_secs(7),
    )
    .connect()
    .unwrap();
    let fd = unsafe { BorrowedFd::borrow_raw(own.socket()) };
    assert_eq!(
        socket2::SockRef::from(&fd).tcp_user_timeout().unwrap(),
        Some(Duration::from_millis(1500))
    );
}

/// db-server (two writers, libpq `timeout`) on `schema`'s primary through a relay that can cut
/// it off.
fn primary_through_relay(
    schema: &Schema,
    timeout: Duration,
) -> (common::relay::Relay, common::Running) {
    let to: std::net::SocketAddr = host_port(&schema.primary).parse().unwrap();
    let relay = common::relay::Relay::start(to);
    let url = schema
        .primary
        .replacen(host_port(&schema.primary), &relay.addr.to_string(), 1);
    let srv = start_db_pool(PoolConfig::Postgres(PgConfig {
        url,
        writers: 2,
        timeout,
        ..schema.config(vec![])
    }));
    (relay, srv)
}

/// The primary cut off by the network (its connections lost, new ones accepted but never
/// answered): a connect gives up after the timeout instead of waiting for ever, requests that
/// need the primary then fail at once with UNAVAILABLE (not each after its own timeout),
/// writes resume after healing, and every acknowledged write is there.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_primary_cut_off_fails_requests_fast_and_loses_no_acknowledged_write() {
    let Some(schema) = Schema::new("primary-cut") else {
        return;
    };
    let (relay, srv) = primary_through_relay(&schema, Duration::from_secs(2));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE w (id INT PRIMARY KEY)", vec![])
        .unwrap();
    let mut acked = Vec::new();
    let mut id = 0;
    let mut write = |c: &mut FrameClient, acked: &mut Vec<i64>| {
        id += 1;
        let r = c.execute("INSERT INTO w VALUES (?1)", vec![Value::int(id)]);
        if r.is_ok() {
            acked.push(id);
        }
        r
    };
    for _ in 0..5 {
        write(&mut c, &mut acked).unwrap();
    }

    relay.cut(true);
    relay.break_connections();
    // The writes find their connections gone, then cannot connect: UNAVAILABLE, and soon from
    // the gate (its message says so) without trying again.
    let mut gated = false;
    for _ in 0..50 {
        match write(&mut c, &mut acked) {
            Err(ClientError::Server { code, message, .. }) => {
                assert_eq!(code, ErrorCode::Unavailable, "{message}");
                if message.contains("primary is unreachable") {
                    gated = true;
                    break;
                }
            }
            Ok(_) => panic!("a write went through a cut link"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(gated, "requests for an unreachable primary fail at once");
    // Reads that must see the primary fail the same way.
    let mut primary_read = exec("SELECT count(*) FROM w", vec![]);
    primary_read.consistency = ReadConsistency::Primary as i32;
    assert_eq!(code(c.data(&primary_read)), ErrorCode::Unavailable);

    relay.cut(false);
    common::eventually("writes go through again after healing", || {
        write(&mut c, &mut acked).is_ok()
    });
    let ids = c.execute("SELECT id FROM w ORDER BY id", vec![]).unwrap();
    let present: Vec<Value> = ids.rows.iter().map(|r| r.values[0].clone()).collect();
    for a in &acked {
        assert!(
            present.contains(&Value::int(*a)),
            "acknowledged write {a} missing"
        );
    }
}

/// The worker whose turn it is to try an unreachable primary again answers its requests
/// before it tries: the try can take the whole connect timeout (a host that swallows packets),
/// and no request may wait on it. The primary here first refuses connections (the gate closes
/// at once), then swallows them: a try waits out the 20 s timeout, longer than the client waits
/// for an answer, so the write whose turn started the try and every write during it must get
/// their UNAVAILABLE without waiting for it.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_no_request_waits_on_a_try_of_an_unreachable_primary() {
    let Some(schema) = Schema::new("primary-probe") else {
        return;
    };
    let (relay, srv) = primary_through_relay(&schema, Duration::from_secs(20));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE p (id INT)", vec![]).unwrap();

    relay.refuse(true);
    relay.break_connections();
    let mut write = || c.execute("INSERT INTO p VALUES (1)", vec![]);
    common::eventually("the gate closed", || {
        matches!(write(), Err(ClientError::Server { message, .. })
            if message.contains("primary is unreachable"))
    });
    // From now on a try connects and then hears nothing until its timeout.
    relay.cut(true);
    relay.refuse(false);
    let tried = relay.accepted();
    let mut unavailable = || match write() {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("a write while the primary is tried: {other:?}"),
    };
    common::eventually("a try of the primary under way", || {
        unavailable();
        relay.accepted() > tried
    });
    for _ in 0..20 {
        unavailable();
    }
    // Ends the try (its connection closed) rather than leave a worker waiting on it.
    relay.break_connections();
    drop(srv);
}

/// Several clients setting up tables at once (what three test-servers starting together do):
/// each CREATE outside the sandbox is followed by taking the server tables' rights from the
/// client role, and PostgreSQL fails concurrent REVOKEs on one table ("tuple concurrently
/// updated"), which aborted the whole setup batch. Every batch must go through.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_concurrent_table_setups_do_not_fail_each_other() {
    let Some(schema) = Schema::new("setup-race") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE _netmod_guarded (id INT)", vec![])
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = srv.addr;
            std::thread::spawn(move || {
                let mut c = FrameClient::connect(addr, WAIT).unwrap();
                for i in 0..10 {
                    let table = format!("race_{t}_{i}");
                    let r = c.data(&DataRequest::batch(vec![
                        BatchStep::new(
                            format!("CREATE TABLE IF NOT EXISTS {table} (id INT)"),
                            vec![],
                        ),
                        BatchStep::new(format!("INSERT INTO {table} VALUES (1)"), vec![]),
                    ]));
                    let resp = r.unwrap_or_else(|e| panic!("setup batch {table}: {e:?}"));
                    assert!(
                        matches!(resp.kind, Some(data_response::Kind::Batch(_))),
                        "{resp:?}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // And the server's table stays out of the sandbox's reach.
    assert_eq!(
        code(c.data(&sandboxed(exec("SELECT * FROM _netmod_guarded", vec![])))),
        ErrorCode::Forbidden
    );
}

/// The standby cut off by the network (its connections lost, new ones accepted but never
/// answered): reads keep answering from the primary, and once the standby answers again the
/// readers go back to it (one reader tries it again at a time, after answering its reads, so
/// no read waits on a connection attempt to a silent host).
#[test]
#[cfg_attr(
    not(netmod_pg_replica),
    ignore = "needs PostgreSQL and a hot standby: set DATABASE_URL and DATABASE_REPLICA_URL (.ci/pg-cluster)"
)]
fn pg_reads_survive_a_standby_cut_off_and_return_to_it_after_healing() {
    use common::relay::Relay;
    let Some(schema) = Schema::new("standby-cut") else {
        return;
    };
    let Some(live) = schema.replica.clone() else {
        return;
    };
    let relay = Relay::start(host_port(&live).parse().unwrap());
    let via_relay = live.replacen(host_port(&live), &relay.addr.to_string(), 1);
    let srv = start_db_pool(PoolConfig::Postgres(PgConfig {
        replica_retry: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        ..schema.config(vec![via_relay])
    }));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    common::eventually("reads on the standby", || {
        on_standby(&mut c, ReadConsistency::AnyReplica)
    });

    relay.cut(true);
    relay.break_connections();
    for _ in 0..20 {
        // Answered (by the primary), never an error.
        assert!(!on_standby(&mut c, ReadConsistency::AnyReplica));
    }

    relay.cut(false);
    common::eventually("reads return to the standby after healing", || {
        on_standby(&mut c, ReadConsistency::AnyReplica)
    });
}

/// A client's read that ends its own session on the replica, at once or after a while, fails
/// for that client alone: the replica stays in service for db-server's reads and every other
/// user's (a client connection that fails says nothing of the replica).
#[test]
#[cfg_attr(
    not(netmod_pg_replica),
    ignore = "needs PostgreSQL and a hot standby: set DATABASE_URL and DATABASE_REPLICA_URL (.ci/pg-cluster)"
)]
fn pg_a_client_ending_its_own_replica_session_leaves_the_replica_in_service() {
    let Some(schema) = Schema::new("replica-self-kill") else {
        return;
    };
    let Some(srv) = schema.start_with_replica() else {
        return;
    };
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    assert!(on_standby(&mut c, ReadConsistency::AnyReplica));
    let on_replica = |sql: &str, user: &str| DataRequest {
        consistency: ReadConsistency::AnyReplica as i32,
        ..as_user(exec(sql, vec![]), user)
    };
    for sql in [
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_sleep(0.6), pg_terminate_backend(pg_backend_pid())",
    ] {
        for _ in 0..3 {
            assert_eq!(
                code(c.data(&on_replica(sql, "mallory"))),
                ErrorCode::Unavailable,
                "{sql}"
            );
            // The servers' next read, and another user's, still on the standby.
            assert!(on_standby(&mut c, ReadConsistency::AnyReplica), "{sql}");
            let (r, _) = result(&mut c, &on_replica("SELECT pg_is_in_recovery()", "alice"));
            assert_eq!(r.rows[0].values, [Value::int(1)], "{sql}");
        }
    }
}

/// `r` as test-server sends it for `user`.
fn as_user(mut r: DataRequest, user: &str) -> DataRequest {
    r.sandboxed = true;
    r.user = user.into();
    r
}

/// Client connections keep their statements prepared between runs (parsed once, not with each
/// run); what a client does to the session's prepared statements — DEALLOCATE, alone or inside
/// a function, PREPARE under the names db-server uses — never makes another statement fail or
/// run something else, for that client or another.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_clients_deallocate_or_prepare_never_changes_what_a_statement_runs() {
    let Some(schema) = Schema::new("prepared") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    let as_ = |user: &str, sql: &str| as_user(exec(sql, vec![]), user);
    let one = |c: &mut FrameClient, user: &str| {
        let (r, _) = result(c, &as_(user, "SELECT 40 + 2 AS n"));
        assert_eq!(r.rows[0].values[0], Value::int(42), "{user}");
    };
    c.data(&as_(
        "mallory",
        "CREATE FUNCTION forget() RETURNS int LANGUAGE plpgsql AS $$
           BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN 1; END $$",
    ))
    .unwrap();
    // Names like db-server's, taken in mallory's session with other statements behind them.
    c.data(&as_(
        "mallory",
        "CREATE FUNCTION squat() RETURNS int LANGUAGE plpgsql AS $$
           BEGIN
             FOR i IN 1..3000 LOOP
               BEGIN
                 EXECUTE format('PREPARE netmod_s%s AS SELECT 666', i);
               EXCEPTION WHEN duplicate_prepared_statement THEN NULL;
               END;
             END LOOP;
             RETURN 1;
           END $$",
    ))
    .unwrap();
    for _ in 0..6 {
        one(&mut c, "mallory");
        one(&mut c, "mallory");
        c.data(&as_("mallory", "DEALLOCATE ALL")).unwrap();
        one(&mut c, "mallory");
        c.data(&as_("mallory", "SELECT forget()")).unwrap();
        one(&mut c, "mallory");
        one(&mut c, "bob");
        c.data(&as_("mallory", "SELECT squat()")).unwrap();
        one(&mut c, "mallory");
        one(&mut c, "bob");
        one(&mut c, "mallory");
    }
}

/// Issue 23, findings 2, 4, 5, 7 and 8 on PostgreSQL: what a client statement sets or creates
/// (settings through set_config in a function, temporary tables shadowing the servers') is
/// gone before the next statement, on readers and writers alike; the comment tricks of the
/// keyword filter fail; idempotency keys are the user's own.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_nothing_a_client_statement_sets_or_creates_outlives_it() {
    let Some(schema) = Schema::new("no-state") else {
        return;
    };
    let srv = schema.start();
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS _netmod_users (name TEXT PRIMARY KEY, secret_hash TEXT)",
        "INSERT INTO _netmod_users VALUES ('admin', 'h')",
        "CREATE TABLE notes (id BIGINT, body TEXT)",
    ] {
        c.execute(sql, vec![]).unwrap();
    }
    let client = |sql: &str| as_user(exec(sql, vec![]), "mallory");
    c.data(&client(
        "CREATE FUNCTION poison() RETURNS bigint LANGUAGE sql AS $$
           SELECT 1::bigint FROM (SELECT set_config('default_transaction_read_only', 'on', false),
                                         set_config('search_path', 'pg_catalog', false),
                                         set_config('statement_timeout', '1', false)) x $$",
    ))
    .unwrap();
    // On every reader and writer connection, more than once, each time after another user's
    // statement there (what mallory sets reaches her own next statements only: the first of
    // these may run, the next ones may not even find poison() on her search path).
    let other = |sql: &str| as_user(exec(sql, vec![]), "bob");
    for _ in 0..8 {
        let _ = c.data(&client("SELECT poison()"));
        c.data(&other("SELECT count(*) FROM notes")).unwrap();
        let _ = c.data(&client("INSERT INTO notes SELECT poison(), 'p'"));
        c.data(&other("INSERT INTO notes VALUES (4, 'bob')"))
            .unwrap();
    }
    let shadow = c.data(&client(
        "CREATE TEMP TABLE _netmod_users (name TEXT, secret_hash TEXT)",
    ));
    if shadow.is_ok() {
        let _ = c.data(&client(
            "INSERT INTO _netmod_users VALUES ('admin', 'planted')",
        ));
    }
    // A client statement's memory per sort or hash is db-server's bound, whatever mallory set.
    let (r, _) = result(&mut c, &other("SHOW work_mem"));
    assert_eq!(r.rows[0].values[0], Value::text("16MB"));
    // Every other user's writes and reads work as before, and the servers see their own
    // table.
    for _ in 0..8 {
        c.data(&other("INSERT INTO notes VALUES (2, 'after')"))
            .unwrap();
        c.execute("INSERT INTO notes VALUES (3, 'server')", vec![])
            .unwrap();
        let (r, _) = result(
            &mut c,
            &exec("SELECT secret_hash FROM _netmod_users", vec![]),
        );
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].values[0], Value::text("h"));
    }
    c.execute("DELETE FROM _netmod_users WHERE name = 'admin'", vec![])
        .unwrap();
    assert_eq!(count(&mut c, "_netmod_users"), 0);
    // No keyword filter stands in the way any more, and none is needed: the database refuses
    // a role switch (finding 7's comment tricks included), and DO runs as the client login.
    for sql in [
        "/* /* */ */ SET ROLE postgres",
        "/* /* */ */ SET ROLE netmod",
        "SET SESSION AUTHORIZATION postgres",
    ] {
        assert_eq!(code(c.data(&client(sql))), ErrorCode::Forbidden, "{sql}");
    }
    c.data(&client("-- x\rDO $$ BEGIN PERFORM 1; END $$"))
        .unwrap();
    c.data(&client("/* a /* b */ c */ RESET ROLE")).unwrap();
    // The same key from two users: two writes, each user's own answer.
    let keyed = |user: &str| {
        let mut r = as_user(
            exec(
                &format!("INSERT INTO notes VALUES (9, '{user}') RETURNING body"),
                vec![],
            ),
            user,
        );
        r.idempotency_key = "same-key".into();
        r
    };
    let (alice, _) = result(&mut c, &keyed("alice"));
    let (bob, _) = result(&mut c, &keyed("bob"));
    assert_eq!(alice.rows[0].values[0], Value::text("alice"));
    assert_eq!(bob.rows[0].values[0], Value::text("bob"));
    let (again, _) = result(&mut c, &keyed("alice"));
    assert_eq!(again, alice);
    let (n, _) = result(
        &mut c,
        &exec("SELECT count(*) FROM notes WHERE id = 9", vec![]),
    );
    assert_eq!(n.rows[0].values[0], Value::int(2));
}

/// A client that makes the reset of its session slow (thousands of prepared statements to
/// deallocate) after setting a 1 ms statement timeout, so that the reset before another
/// user's statement is cancelled part way: the other user's statement never runs in what is
/// left of that session — it runs on a clean one, with db-server's settings.
#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn pg_a_reset_cut_short_never_lets_another_users_statement_run_in_the_old_session() {
    let Some(schema) = Schema::new("reset-cut") else {
        return;
    };
    // One client reader and one writer: every statement of both users on the same sessions.
    let srv = start_db_pool(PoolConfig::Postgres(PgConfig {
        readers: 1,
        writers: 1,
        ..schema.config(vec![])
    }));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mallory = |sql: &str| as_user(exec(sql, vec![]), "mallory");
    c.data(&mallory(
        "CREATE FUNCTION slow_reset() RETURNS bigint LANGUAGE plpgsql AS $$
           BEGIN
             FOR i IN 1..20000 LOOP
               EXECUTE format('PREPARE mallory_p%s AS SELECT %s', i, i);
             END LOOP;
             PERFORM set_config('statement_timeout', '1', false);
             PERFORM set_config('mallory.mark', 'left by mallory', false);
             RETURN 1;
           END $$",
    ))
    .unwrap();
    let bob = |sql: &str| as_user(exec(sql, vec![]), "bob");
    c.data(&bob("CREATE TABLE bobs (id INT)")).unwrap();
    for round in 0..6 {
        // On a reader's connection, then on a writer's.
        let _ = c.data(&mallory("SELECT slow_reset()"));
        let (r, _) = result(
            &mut c,
            &bob("SELECT current_setting('statement_timeout'), current_setting('mallory.mark', true)"),
        );
        assert_ne!(r.rows[0].values[0], Value::text("1ms"), "round {round}");
        assert_ne!(
            r.rows[0].values[1],
            Value::text("left by mallory"),
            "round {round}"
        );
        let _ = c.data(&mallory("INSERT INTO bobs SELECT slow_reset()"));
        c.data(&bob(&format!("INSERT INTO bobs VALUES ({round})")))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
    }
}
