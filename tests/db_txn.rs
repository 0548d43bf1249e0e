//! db-server's interactive transactions: commit, rollback, isolation between two open
//! transactions, sequence numbers, expiry, and ids that do not survive a restart.

mod common;

use common::{start_db, TempDir, WAIT};
use protocol::proto::{
    data_request, data_response, DataRequest, DataResponse, Statement, StatementResult, TxnBegin,
    TxnEnd, TxnStatement, Value,
};
use protocol::wire::ErrorCode;
use tools::client::{ClientError, FrameClient};

fn req(kind: data_request::Kind) -> DataRequest {
    DataRequest {
        kind: Some(kind),
        ..Default::default()
    }
}

fn begin(c: &mut FrameClient, timeout_ms: u32, idle_ms: u32) -> u64 {
    match c
        .data(&req(data_request::Kind::Begin(TxnBegin {
            timeout_ms,
            idle_ms,
        })))
        .unwrap()
        .kind
    {
        Some(data_response::Kind::Txn(t)) => t.txn_id,
        other => panic!("{other:?}"),
    }
}

fn run(
    c: &mut FrameClient,
    txn_id: u64,
    seq: u64,
    sql: &str,
    args: Vec<Value>,
) -> Result<StatementResult, ClientError> {
    let stmt = Statement {
        keys: Vec::new(),
        sql: sql.into(),
        args,
        named_args: vec![],
    };
    match c
        .data(&req(data_request::Kind::TxnExecute(TxnStatement {
            txn_id,
            seq,
            stmt: Some(stmt),
        })))?
        .kind
    {
        Some(data_response::Kind::Result(r)) => Ok(r),
        other => panic!("{other:?}"),
    }
}

fn commit(c: &mut FrameClient, txn_id: u64, seq: u64) -> Result<DataResponse, ClientError> {
    c.data(&req(data_request::Kind::Commit(TxnEnd { txn_id, seq })))
}

fn rollback(c: &mut FrameClient, txn_id: u64, seq: u64) -> Result<DataResponse, ClientError> {
    c.data(&req(data_request::Kind::Rollback(TxnEnd { txn_id, seq })))
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn ids(c: &mut FrameClient) -> Vec<Value> {
    c.execute("SELECT id FROM a ORDER BY id", vec![])
        .unwrap()
        .rows
        .into_iter()
        .map(|r| r.values[0].clone())
        .collect()
}

fn setup(dir: &TempDir) -> (common::Running, FrameClient) {
    let srv = start_db(dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    (srv, c)
}

#[test]
fn a_committed_transaction_is_visible_and_a_rolled_back_one_is_not() {
    let dir = TempDir::new("txn-basic");
    let (_srv, mut c) = setup(&dir);
    let t = begin(&mut c, 0, 0);
    run(&mut c, t, 1, "INSERT INTO a VALUES (1)", vec![]).unwrap();
    let inside = run(&mut c, t, 2, "SELECT count(*) FROM a", vec![]).unwrap();
    assert_eq!(
        inside.rows[0].values,
        [Value::int(1)],
        "a transaction sees its own writes"
    );
    let before = c.execute("SELECT 1", vec![]).unwrap();
    let done = commit(&mut c, t, 3).unwrap();
    assert!(matches!(done.kind, Some(data_response::Kind::Ended(_))));
    assert!(done.commit_index > 0);
    assert_eq!(ids(&mut c), [Value::int(1)]);

    let t = begin(&mut c, 0, 0);
    run(&mut c, t, 1, "INSERT INTO a VALUES (2)", vec![]).unwrap();
    rollback(&mut c, t, 2).unwrap();
    assert_eq!(ids(&mut c), [Value::int(1)]);
    // The transaction is gone after commit or rollback.
    assert_eq!(
        code(run(&mut c, t, 3, "SELECT 1", vec![])),
        ErrorCode::TxnNotFound
    );
    drop(before);
}

#[test]
fn two_interleaved_transactions_do_not_see_each_others_uncommitted_writes() {
    let dir = TempDir::new("txn-interleave");
    let (srv, mut c1) = setup(&dir);
    let mut c2 = FrameClient::connect(srv.addr, WAIT).unwrap();
    let t1 = begin(&mut c1, 0, 0);
    let t2 = begin(&mut c2, 0, 0);
    // t2 reads first: its snapshot starts before t1 writes.
    let r = run(&mut c2, t2, 1, "SELECT count(*) FROM a", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::int(0)]);
    run(&mut c1, t1, 1, "INSERT INTO a VALUES (10)", vec![]).unwrap();
    let r = run(&mut c2, t2, 2, "SELECT count(*) FROM a", vec![]).unwrap();
    assert_eq!(
        r.rows[0].values,
        [Value::int(0)],
        "uncommitted write invisible"
    );
    commit(&mut c1, t1, 2).unwrap();
    let r = run(&mut c2, t2, 3, "SELECT count(*) FROM a", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::int(0)], "t2 keeps its snapshot");
    commit(&mut c2, t2, 4).unwrap();
    assert_eq!(ids(&mut c1), [Value::int(10)]);
}

#[test]
fn reordered_or_replayed_requests_are_refused_and_the_transaction_goes_on() {
    let dir = TempDir::new("txn-seq");
    let (_srv, mut c) = setup(&dir);
    let t = begin(&mut c, 0, 0);
    assert_eq!(
        code(run(&mut c, t, 2, "INSERT INTO a VALUES (1)", vec![])),
        ErrorCode::BadRequest
    );
    run(&mut c, t, 1, "INSERT INTO a VALUES (1)", vec![]).unwrap();
    assert_eq!(
        code(run(&mut c, t, 1, "INSERT INTO a VALUES (1)", vec![])),
        ErrorCode::BadRequest
    );
    assert_eq!(code(commit(&mut c, t, 5)), ErrorCode::BadRequest);
    commit(&mut c, t, 2).unwrap();
    assert_eq!(ids(&mut c), [Value::int(1)]);
    // Transaction control inside a transaction is refused too.
    let t = begin(&mut c, 0, 0);
    assert_eq!(
        code(run(&mut c, t, 1, "COMMIT", vec![])),
        ErrorCode::BadRequest
    );
    rollback(&mut c, t, 1).unwrap();
}

#[test]
fn an_abandoned_transaction_is_rolled_back_and_then_reported_expired() {
    let dir = TempDir::new("txn-expire");
    let (_srv, mut c) = setup(&dir);
    let idle = begin(&mut c, 5000, 100);
    run(&mut c, idle, 1, "INSERT INTO a VALUES (7)", vec![]).unwrap();
    // The transaction holds the write lock; this write waits for it (busy timeout 5 s), and gets
    // it when the idle transaction is rolled back. No request touches the transaction meanwhile.
    c.execute("INSERT INTO a VALUES (8)", vec![]).unwrap();
    assert_eq!(
        code(run(&mut c, idle, 2, "SELECT 1", vec![])),
        ErrorCode::TxnExpired
    );
    assert_eq!(ids(&mut c), [Value::int(8)], "the abandoned write is gone");

    // The overall timeout applies even to a busy transaction.
    let t = begin(&mut c, 150, 150);
    let mut seq = 0;
    common::eventually("the transaction times out", || {
        seq += 1;
        match run(&mut c, t, seq, "SELECT 1", vec![]) {
            Ok(_) => false,
            Err(ClientError::Server { code, .. }) => code == ErrorCode::TxnExpired,
            Err(e) => panic!("{e}"),
        }
    });
}

#[test]
fn a_transaction_id_from_before_a_restart_is_not_found() {
    let dir = TempDir::new("txn-restart");
    let (srv, mut c) = setup(&dir);
    let t = begin(&mut c, 0, 0);
    run(&mut c, t, 1, "INSERT INTO a VALUES (1)", vec![]).unwrap();
    drop(c);
    drop(srv);
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    assert_eq!(
        code(run(&mut c, t, 2, "SELECT 1", vec![])),
        ErrorCode::TxnNotFound
    );
    assert_eq!(code(commit(&mut c, 12345, 1)), ErrorCode::TxnNotFound);
    assert!(
        ids(&mut c).is_empty(),
        "the unfinished transaction left nothing"
    );
}

#[test]
fn a_writer_blocked_past_the_busy_timeout_gets_busy_and_a_full_queue_gets_overloaded() {
    let dir = TempDir::new("txn-busy");
    let srv = common::start_db_with(&dir, |cfg| {
        cfg.busy_timeout = std::time::Duration::from_millis(300);
        cfg.queue = 1;
    });
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    c.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    let holder = begin(&mut c, 20_000, 20_000);
    run(&mut c, holder, 1, "INSERT INTO a VALUES (1)", vec![]).unwrap(); // holds the write lock

    // Five writes at once: the blocked writer holds one (or two, if the second was queued before
    // it took its group), the queue one more, the rest are refused.
    let mut w = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut burst = Vec::new();
    for i in 0..5i64 {
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                keys: Vec::new(),
                sql: "INSERT INTO a VALUES (?1)".into(),
                args: vec![Value::int(100 + i)],
                named_args: vec![],
            })),
            ..Default::default()
        };
        let id = w.next_id();
        protocol::wire::encode(
            &protocol::wire::message(
                protocol::wire::MessageType::Request,
                protocol::wire::Operation::Data,
                id,
                &req,
            ),
            &mut burst,
        );
    }
    w.send_raw(&burst).unwrap();
    let mut codes: Vec<ErrorCode> = (0..5)
        .map(|_| {
            code(Err::<(), _>(tools::client::server_error(
                &w.next_message().unwrap(),
            )))
        })
        .collect();
    codes.sort_by_key(|c| *c as i32);
    let overloaded = codes
        .iter()
        .filter(|c| **c == ErrorCode::Overloaded)
        .count();
    assert!(overloaded >= 2, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, ErrorCode::Overloaded | ErrorCode::Busy)),
        "{codes:?}"
    );
    assert!(codes.contains(&ErrorCode::Busy), "{codes:?}");
    // Once the lock is released, writes go through again.
    rollback(&mut c, holder, 2).unwrap();
    c.execute("INSERT INTO a VALUES (2)", vec![]).unwrap();
    assert_eq!(ids(&mut c), [Value::int(2)]);
}
