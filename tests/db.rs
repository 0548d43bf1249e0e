//! db-server on embedded SQLite: CRUD with every value type, atomic batches, error codes,
//! group commit, idempotency, read-your-writes, and durability across `kill -9`.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::{start_db, Proc, TempDir, WAIT};
use protocol::proto::{
    batch_condition, data_request, data_response, step_outcome, Batch, BatchCondition, BatchStep,
    DataRequest, DataResponse, NamedArg, ReadConsistency, Statement, StatsRequest, Value,
};
use protocol::wire::{self, ErrorCode, MessageType, Operation};
use tools::client::{ClientError, FrameClient};

fn stmt(sql: &str, args: Vec<Value>) -> Statement {
    Statement {
        keys: Vec::new(),
        sql: sql.into(),
        args,
        named_args: Vec::new(),
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn batch(steps: Vec<BatchStep>) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Batch(Batch { steps })),
        ..Default::default()
    }
}

fn step(sql: &str, args: Vec<Value>) -> BatchStep {
    BatchStep {
        stmt: Some(stmt(sql, args)),
        condition: None,
        may_fail: false,
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
fn crud_round_trips_every_value_type_nulls_unicode_and_a_large_blob() {
    let dir = TempDir::new("db-crud");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)",
        vec![],
    )
    .unwrap();
    let blob: Vec<u8> = (0..900 * 1024).map(|i| (i % 253) as u8).collect();
    let ins = c
        .execute(
            "INSERT INTO t (i, r, s, b, n) VALUES (?1, ?2, ?3, ?4, ?5)",
            vec![
                Value::int(-9_007_199_254_740_993),
                Value::real(2.5),
                Value::text("héllo 世界 🦀"),
                Value::blob(blob.clone()),
                Value::null(),
            ],
        )
        .unwrap();
    assert_eq!((ins.rows_affected, ins.last_insert_id), (1, 1));
    let r = c
        .execute("SELECT id, i, r, s, b, n, i + 1 AS next FROM t", vec![])
        .unwrap();
    let names: Vec<_> = r
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.decltype.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("id", "INTEGER"),
            ("i", "INTEGER"),
            ("r", "REAL"),
            ("s", "TEXT"),
            ("b", "BLOB"),
            ("n", "TEXT"),
            ("next", "")
        ]
    );
    assert_eq!(
        r.rows[0].values,
        vec![
            Value::int(1),
            Value::int(-9_007_199_254_740_993),
            Value::real(2.5),
            Value::text("héllo 世界 🦀"),
            Value::blob(blob),
            Value::null(),
            Value::int(-9_007_199_254_740_992),
        ]
    );
    // Named arguments, update, delete.
    let upd = c
        .data(&DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                keys: Vec::new(),
                sql: "UPDATE t SET s = :s WHERE id = :id".into(),
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
                ],
            })),
            ..Default::default()
        })
        .unwrap();
    let Some(data_response::Kind::Result(upd)) = upd.kind else {
        panic!()
    };
    assert_eq!(upd.rows_affected, 1);
    assert_eq!(
        c.execute("SELECT s FROM t WHERE id = 1", vec![])
            .unwrap()
            .rows[0]
            .values,
        [Value::text("bye")]
    );
    assert_eq!(
        c.execute("DELETE FROM t WHERE id = ?1", vec![Value::int(1)])
            .unwrap()
            .rows_affected,
        1
    );
    assert_eq!(count(&mut c, "t"), 0);
}

#[test]
fn a_batch_is_all_or_nothing_and_conditions_see_earlier_steps() {
    let dir = TempDir::new("db-batch");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT)", vec![])
        .unwrap();
    let failing = batch(vec![
        step("INSERT INTO k VALUES (1, 'a')", vec![]),
        step("INSERT INTO k VALUES (2, 'b')", vec![]),
        step("INSERT INTO k VALUES (1, 'dup')", vec![]),
    ]);
    assert_eq!(code(c.data(&failing)), ErrorCode::Constraint);
    assert_eq!(count(&mut c, "k"), 0, "nothing of a failed batch stays");

    let cond = |c: batch_condition::Cond| Some(BatchCondition { cond: Some(c) });
    let mut dup = step("INSERT INTO k VALUES (10, 'again')", vec![]);
    dup.may_fail = true;
    let mut fallback = step("INSERT INTO k VALUES (11, 'fallback')", vec![]);
    fallback.condition = cond(batch_condition::Cond::Error(1));
    let mut never = step("INSERT INTO k VALUES (12, 'never')", vec![]);
    never.condition = cond(batch_condition::Cond::Ok(1));
    let resp = c
        .data(&batch(vec![
            step("INSERT INTO k VALUES (10, 'first')", vec![]),
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
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].values, [Value::int(11), Value::text("fallback")]);
}

#[test]
fn each_error_has_its_code_and_the_server_keeps_serving() {
    let dir = TempDir::new("db-errors");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT",
        vec![],
    )
    .unwrap();
    c.execute("INSERT INTO s VALUES (1, 1)", vec![]).unwrap();
    let cases: Vec<(DataRequest, ErrorCode)> = vec![
        (exec("SELEC 1"), ErrorCode::SqlError),
        (exec("SELECT nope FROM s"), ErrorCode::SqlError),
        (exec("SELECT 1; SELECT 2"), ErrorCode::SqlError),
        (exec("SELECT * FROM missing"), ErrorCode::UnknownTable),
        (exec("INSERT INTO missing VALUES (1)"), ErrorCode::UnknownTable),
        (exec("INSERT INTO s VALUES (1, 2)"), ErrorCode::Constraint),
        (exec("INSERT INTO s VALUES (2, NULL)"), ErrorCode::Constraint),
        (exec("INSERT INTO s VALUES (3, 'text')"), ErrorCode::TypeMismatch),
        (exec("INSERT INTO s (rowid, n) VALUES ('abc', 1)"), ErrorCode::TypeMismatch),
        (exec(""), ErrorCode::BadRequest),
        (exec("BEGIN"), ErrorCode::BadRequest),
        (exec("  commit"), ErrorCode::BadRequest),
        (DataRequest::default(), ErrorCode::BadRequest),
        (
            {
                let mut s = step("SELECT 1", vec![]);
                s.condition = Some(BatchCondition { cond: Some(batch_condition::Cond::Ok(5)) });
                batch(vec![s])
            },
            ErrorCode::BadRequest,
        ),
        (
            DataRequest {
                kind: Some(data_request::Kind::Execute(Statement {
                    keys: Vec::new(),
                    sql: "SELECT :a".into(),
                    args: vec![],
                    named_args: vec![NamedArg { name: ":b".into(), value: Some(Value::int(1)) }],
                })),
                ..Default::default()
            },
            ErrorCode::BadRequest,
        ),
        (
            DataRequest {
                max_result_bytes: 100,
                ..exec("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 1000) SELECT x FROM n")
            },
            ErrorCode::TooLarge,
        ),
        (
            DataRequest {
                consistency: ReadConsistency::AfterIndex as i32,
                after_index: 1_000_000,
                ..exec("SELECT 1")
            },
            ErrorCode::Stale,
        ),
    ];
    for (req, want) in cases {
        assert_eq!(code(c.data(&req)), want, "for {req:?}");
        assert_eq!(count(&mut c, "s"), 1, "still serving, nothing changed");
    }
    // Undecodable payloads and unknown operations get BAD_MESSAGE / UNSUPPORTED.
    let mut m = wire::message(
        MessageType::Request,
        Operation::Data,
        77,
        &protocol::wire::Ping::default(),
    );
    m.data = vec![0xFF, 0xFF, 0xFF].into();
    c.send(&m).unwrap();
    assert_eq!(
        code(Err::<(), _>(tools::client::server_error(
            &c.next_message().unwrap()
        ))),
        ErrorCode::BadMessage
    );
    let mut m = wire::message(
        MessageType::Request,
        Operation::AuthLogin,
        78,
        &protocol::wire::Ping::default(),
    );
    m.op = Operation::AuthLogin as i32;
    c.send(&m).unwrap();
    assert_eq!(
        code(Err::<(), _>(tools::client::server_error(
            &c.next_message().unwrap()
        ))),
        ErrorCode::Unsupported
    );
    // A read whose text is fine but whose argument is not a Value (the loop routes a read on
    // its text alone; the worker decodes the rest): BAD_MESSAGE under the request's id.
    // Statement { sql = "SELECT ?1" (field 1), args = [field 1 of 5 bytes, cut short] }.
    let sql = b"SELECT ?1";
    let mut st = vec![0x0a, sql.len() as u8];
    st.extend_from_slice(sql);
    st.extend_from_slice(&[0x12, 0x02, 0x0a, 0x05]);
    let mut payload = vec![0x0a, st.len() as u8];
    payload.extend_from_slice(&st);
    let mut m = wire::message(MessageType::Request, Operation::Data, 80, &exec("SELECT 1"));
    m.data = payload.into();
    c.send(&m).unwrap();
    let answer = c.next_message().unwrap();
    assert_eq!(answer.message_id, 80, "answered by its id");
    assert_eq!(
        code(Err::<(), _>(tools::client::server_error(&answer))),
        ErrorCode::BadMessage
    );
    assert_eq!(count(&mut c, "s"), 1, "still serving");
    // A DATA payload flagged GZIP that does not inflate: BAD_COMPRESSION under the request's
    // own id, so a client waiting on that id gets its answer.
    let mut m = wire::message(MessageType::Request, Operation::Data, 79, &exec("SELECT 1"));
    m.compression = shared::wire::Compression::Gzip as i32;
    c.send(&m).unwrap();
    let answer = c.next_message().unwrap();
    assert_eq!(
        (answer.message_id, answer.op()),
        (79, Operation::Data),
        "answered by its id"
    );
    assert_eq!(
        code(Err::<(), _>(tools::client::server_error(&answer))),
        ErrorCode::BadCompression
    );
    // Truncation instead of TOO_LARGE when allowed.
    let r = c
        .data(&DataRequest {
            max_result_bytes: 100,
            allow_truncation: true,
            ..exec("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 1000) SELECT x FROM n")
        })
        .unwrap();
    let Some(data_response::Kind::Result(r)) = r.kind else {
        panic!()
    };
    assert!(r.truncated && !r.rows.is_empty() && r.rows.len() < 1000);
}

fn exec(sql: &str) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Execute(stmt(sql, vec![]))),
        ..Default::default()
    }
}

#[test]
fn concurrent_writes_are_group_committed_and_a_failing_write_fails_alone() {
    const WRITERS: i64 = 16;
    let dir = TempDir::new("db-group");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE g (id INTEGER PRIMARY KEY, who INTEGER)",
        vec![],
    )
    .unwrap();
    let addr = srv.addr;
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = FrameClient::connect(addr, WAIT).unwrap();
                // 50 inserts written back to back; number 25 of thread 0 collides with a key.
                let mut ids = Vec::new();
                let mut burst = Vec::new();
                for i in 0..50i64 {
                    let key = if t == 0 && i == 25 { 1 } else { t * 1000 + i };
                    let id = c.next_id();
                    ids.push((id, key));
                    let req = exec_args(
                        "INSERT INTO g VALUES (?1, ?2)",
                        vec![Value::int(key), Value::int(t)],
                    );
                    wire::encode(
                        &wire::message(MessageType::Request, Operation::Data, id, &req),
                        &mut burst,
                    );
                }
                c.send_raw(&burst).unwrap();
                let mut failed = Vec::new();
                for _ in 0..50 {
                    let m = c.next_message().unwrap();
                    if m.r#type() == MessageType::Error {
                        failed.push(ids.iter().find(|(id, _)| *id == m.message_id).unwrap().1);
                    }
                }
                failed
            })
        })
        .collect();
    let failed: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(failed, [1], "only the colliding write fails");
    assert_eq!(count(&mut c, "g"), WRITERS * 50 - 1);
    let stats = match c
        .data(&DataRequest {
            kind: Some(data_request::Kind::Stats(StatsRequest::default())),
            ..Default::default()
        })
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Stats(s)) => s,
        other => panic!("{other:?}"),
    };
    // 1 CREATE + 799 inserts, grouped: at most one commit (one fsync) per 4 writes.
    assert_eq!(stats.grouped_writes, 800);
    assert!(
        stats.commits * 4 <= stats.grouped_writes,
        "{} commits for {} writes",
        stats.commits,
        stats.grouped_writes
    );
    let ins = stats
        .statements
        .iter()
        .find(|s| s.sql.starts_with("INSERT INTO g"))
        .unwrap();
    assert_eq!((ins.count, ins.errors), (800, 1));
    assert!(ins.p99_us >= 1.0, "every recorded latency is at least 1 µs");
}

fn exec_args(sql: &str, args: Vec<Value>) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Execute(stmt(sql, args))),
        ..Default::default()
    }
}

#[test]
fn a_write_retried_with_its_idempotency_key_is_applied_once_with_the_same_reply() {
    let dir = TempDir::new("db-idem");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute(
        "CREATE TABLE i (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)",
        vec![],
    )
    .unwrap();
    let req = DataRequest {
        idempotency_key: "order-42".into(),
        ..exec_args("INSERT INTO i (v) VALUES (?1)", vec![Value::text("x")])
    };
    let first = c.data(&req).unwrap();
    let again = c.data(&req).unwrap();
    assert_eq!(first.kind, again.kind, "the stored reply");
    assert!(
        again.commit_index >= first.commit_index,
        "a retry's index is at or past the write's"
    );
    assert_eq!(count(&mut c, "i"), 1);
    // Another key writes again.
    let other = c
        .data(&DataRequest {
            idempotency_key: "order-43".into(),
            ..req
        })
        .unwrap();
    assert!(other.commit_index > first.commit_index);
    assert_eq!(count(&mut c, "i"), 2);
}

#[test]
fn a_read_after_the_index_of_an_acknowledged_write_sees_it() {
    let dir = TempDir::new("db-ryw");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE r (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    let mut reader = FrameClient::connect(srv.addr, WAIT).unwrap();
    for id in 1..=50 {
        let w = c
            .data(&exec_args(
                "INSERT INTO r VALUES (?1)",
                vec![Value::int(id)],
            ))
            .unwrap();
        let read = reader
            .data(&DataRequest {
                consistency: ReadConsistency::AfterIndex as i32,
                after_index: w.commit_index,
                ..exec_args("SELECT id FROM r WHERE id = ?1", vec![Value::int(id)])
            })
            .unwrap();
        assert!(read.commit_index >= w.commit_index);
        let Some(data_response::Kind::Result(r)) = read.kind else {
            panic!()
        };
        assert_eq!(r.rows.len(), 1, "write {id} visible");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_server() {
    let dir = TempDir::new("db-kill");
    let db = dir.path("durable.db");
    let db_arg = db.to_str().unwrap().to_string();
    let mut p = Proc::spawn(
        "db-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--sqlite",
            &db_arg,
            "--workers",
            "1",
        ],
    );
    let addr = p.listen_addr();
    FrameClient::connect(addr, WAIT)
        .unwrap()
        .execute(
            "CREATE TABLE d (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
            vec![],
        )
        .unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let writers: Vec<_> = (0..6i64)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = FrameClient::connect(addr, WAIT) else {
                    return;
                };
                for i in 0.. {
                    let id = t * 1_000_000 + i;
                    let payload = format!("row {id} {}", "x".repeat(200));
                    match c.execute(
                        "INSERT INTO d VALUES (?1, ?2)",
                        vec![Value::int(id), Value::text(payload)],
                    ) {
                        Ok(_) => {
                            acked.lock().unwrap().insert(id);
                        }
                        Err(_) => return, // the server died mid-request: not acknowledged
                    }
                }
            })
        })
        .collect();
    common::eventually("writes flowing", || acked.lock().unwrap().len() >= 500);
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let mut p2 = Proc::spawn(
        "db-server",
        &["--listen", "127.0.0.1:0", "--sqlite", &db_arg],
    );
    let mut c = FrameClient::connect(p2.listen_addr(), WAIT).unwrap();
    let rows = c.execute("SELECT id, payload FROM d", vec![]).unwrap().rows;
    let present: HashSet<i64> = rows
        .iter()
        .map(|r| match (&r.values[0].kind, &r.values[1].kind) {
            (
                Some(protocol::proto::value::Kind::Integer(id)),
                Some(protocol::proto::value::Kind::Text(p)),
            ) => {
                assert_eq!(
                    *p,
                    format!("row {id} {}", "x".repeat(200)),
                    "no half-written row"
                );
                *id
            }
            other => panic!("bad row {other:?}"),
        })
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    let check = c.execute("PRAGMA integrity_check", vec![]).unwrap();
    assert_eq!(check.rows[0].values, [Value::text("ok")]);
    drop(p2);
}

fn watch(c: &mut FrameClient, tables: &[&str]) {
    let id = c.next_id();
    let w = protocol::proto::Watch {
        tables: tables.iter().map(|t| t.to_string()).collect(),
    };
    c.send(&wire::message(
        MessageType::Request,
        Operation::Watch,
        id,
        &w,
    ))
    .unwrap();
    let m = c.await_reply(id).unwrap();
    assert_eq!(m.op(), Operation::Watch);
}

/// The next message on a watching connection: a change notice.
fn notice(c: &mut FrameClient) -> protocol::proto::TablesChanged {
    use prost::Message as _;
    let m = c.next_message().unwrap();
    assert_eq!(
        (m.r#type(), m.op()),
        (MessageType::Notification, Operation::Watch)
    );
    protocol::proto::TablesChanged::decode(m.data).unwrap()
}

#[test]
fn watchers_hear_of_committed_writes_to_their_tables_on_every_loop() {
    let dir = TempDir::new("db-watch");
    let db = common::start_db_loops(db::PoolConfig::Sqlite(common::sqlite_config(&dir)), 2);
    let mut writer = FrameClient::connect(db.addr, WAIT).unwrap();
    writer
        .execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)",
            vec![],
        )
        .unwrap();
    writer
        .execute("CREATE TABLE other (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    // Several watchers, so that with two loops some sit on the writer's loop and some do not.
    let mut watchers: Vec<FrameClient> = (0..6)
        .map(|_| FrameClient::connect(db.addr, WAIT).unwrap())
        .collect();
    for w in &mut watchers {
        watch(w, &["Items"]);
    }
    writer.execute("SELECT * FROM items", vec![]).unwrap();
    writer
        .execute("INSERT INTO other (id) VALUES (1)", vec![])
        .unwrap();
    let insert = DataRequest {
        kind: Some(data_request::Kind::Execute(stmt(
            "INSERT INTO items (v) VALUES ('a')",
            vec![],
        ))),
        ..Default::default()
    };
    let index = writer.data(&insert).unwrap().commit_index;
    for w in &mut watchers {
        // Neither the read nor the write to `other` was announced: the first notice is this one.
        let n = notice(w);
        assert_eq!(n.tables, vec!["items".to_string()]);
        assert_eq!(n.commit_index, index);
    }
    let b = batch(vec![
        step("UPDATE items SET v = 'b'", vec![]),
        step("DELETE FROM other", vec![]),
    ]);
    writer.data(&b).unwrap();
    for w in &mut watchers {
        let n = notice(w);
        assert!(n.tables.contains(&"items".to_string()), "{n:?}");
        assert!(n.tables.contains(&"other".to_string()), "{n:?}");
    }
    // DDL cannot be told apart: it is announced as "*".
    writer.execute("CREATE TABLE third (x)", vec![]).unwrap();
    for w in &mut watchers {
        assert_eq!(notice(w).tables, vec!["*".to_string()]);
    }
    // An empty list ends the subscription: the next thing that arrives is the ping's answer.
    let (first, rest) = watchers.split_at_mut(1);
    watch(&mut first[0], &[]);
    writer
        .execute("INSERT INTO items (v) VALUES ('c')", vec![])
        .unwrap();
    for w in rest {
        assert_eq!(notice(w).tables, vec!["items".to_string()]);
    }
    let id = first[0].next_id();
    first[0]
        .send(&wire::message(
            MessageType::Request,
            Operation::Ping,
            id,
            &protocol::wire::Ping::default(),
        ))
        .unwrap();
    let m = first[0].next_message().unwrap();
    assert_eq!((m.r#type(), m.message_id), (MessageType::Response, id));
    // A malformed subscription is refused and the connection keeps serving.
    let id = first[0].next_id();
    let mut bad = wire::message(
        MessageType::Request,
        Operation::Watch,
        id,
        &protocol::wire::Ping::default(),
    );
    bad.data = vec![0xff, 0xff].into();
    first[0].send(&bad).unwrap();
    assert_eq!(code(first[0].await_reply(id)), ErrorCode::BadMessage);
    first[0].ping(b"still here").unwrap();
}

/// A pass's reads are handed to the workers together: those that do not fit the work queue are
/// answered OVERLOADED at once, the rest answered normally, none lost or answered twice.
#[test]
fn a_full_work_queue_answers_overloaded_and_loses_no_request() {
    let dir = TempDir::new("db-overload");
    let mut cfg = common::sqlite_config(&dir);
    cfg.queue = 2;
    let srv = common::start_db_pool(db::PoolConfig::Sqlite(cfg));
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    // 50 reads in one write: one read on the server, one pass, one hand-over.
    let mut bytes = Vec::new();
    for id in 1..=50u32 {
        let req = DataRequest::execute("SELECT count(*) FROM t", vec![]);
        let msg = wire::message(MessageType::Request, Operation::Data, 1000 + id, &req);
        bytes.extend_from_slice(&wire::to_frame(&msg));
    }
    c.send_raw(&bytes).unwrap();
    let (mut answered, mut overloaded) = (HashSet::new(), 0);
    while answered.len() < 50 {
        let m = c.recv().unwrap().expect("connection open");
        assert!(
            answered.insert(m.message_id),
            "answered twice: {}",
            m.message_id
        );
        match MessageType::try_from(m.r#type) {
            Ok(MessageType::Response) => {}
            Ok(MessageType::Error) => {
                match tools::client::server_error(&m) {
                    ClientError::Server { code, .. } => assert_eq!(code, ErrorCode::Overloaded),
                    other => panic!("{other:?}"),
                }
                overloaded += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        overloaded > 0 && overloaded < 50,
        "{overloaded} of 50 overloaded"
    );
    // The server carries on.
    assert_eq!(count(&mut c, "t"), 0);
}

/// A large answer goes uncompressed to a peer on this host (compression would cost db-server's
/// loop more than it saves), compressed when configured so; the bytes are the same either way.
#[test]
fn large_answers_are_compressed_only_where_it_pays() {
    use std::io::{Read, Write};
    let dir = TempDir::new("db-compress");
    let big = "netmod compresses well ".repeat(2000); // 46 KB
    let read_raw = |compress: shared::wire::Compress| -> wire::Message {
        let pool = Arc::new(
            db::PoolConfig::Sqlite(common::sqlite_config(&dir))
                .start(Arc::new(db::monitor::Monitor::new(None)))
                .unwrap(),
        );
        let srv = common::start(
            engine::Config::builder().threads(1).build().unwrap(),
            move |_| {
                db::DbService::new(
                    Arc::clone(&pool),
                    db::watch::Watchers::new(),
                    engine::DEFAULT_MAX_MESSAGE,
                )
                .with_compression(compress)
            },
        );
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let req = exec(&format!("SELECT '{big}'"));
        s.write_all(&wire::to_frame(&wire::message(
            MessageType::Request,
            Operation::Data,
            1,
            &req,
        )))
        .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let wire::Next::Frame(body, _) = wire::next_frame(&buf, 1 << 24) {
                return wire::decode(body).unwrap();
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before the answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let text = |mut m: wire::Message| {
        wire::decompress(&mut m, 1 << 24).unwrap();
        let resp = <DataResponse as prost::Message>::decode(m.data).unwrap();
        let Some(data_response::Kind::Result(r)) = resp.kind else {
            panic!("not a result")
        };
        format!("{:?}", r.rows[0].values[0])
    };
    let plain = read_raw(shared::wire::Compress::Remote);
    assert_eq!(plain.compression, shared::wire::Compression::None as i32);
    let packed = read_raw(shared::wire::Compress::Always);
    assert_eq!(packed.compression, shared::wire::Compression::Gzip as i32);
    assert!(packed.data.len() < plain.data.len() / 4);
    assert_eq!(text(plain), text(packed));
}
