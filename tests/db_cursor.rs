//! db-server cursors: results larger than a frame, read page by page from one snapshot.

mod common;

use common::{start_db, TempDir, WAIT};
use protocol::proto::{
    data_request, data_response, CursorOpen, CursorPage, DataRequest, Statement, TxnEnd, Value,
};
use protocol::wire::ErrorCode;
use tools::client::{ClientError, FrameClient};

fn req(kind: data_request::Kind) -> DataRequest {
    DataRequest {
        kind: Some(kind),
        ..Default::default()
    }
}

fn page(r: Result<protocol::proto::DataResponse, ClientError>) -> Result<CursorPage, ClientError> {
    match r?.kind {
        Some(data_response::Kind::Page(p)) => Ok(p),
        other => panic!("expected a page, got {other:?}"),
    }
}

fn open(
    c: &mut FrameClient,
    sql: &str,
    page_rows: u32,
    idle_ms: u32,
) -> Result<CursorPage, ClientError> {
    page(c.data(&req(data_request::Kind::OpenCursor(CursorOpen {
        stmt: Some(Statement {
            keys: Vec::new(),
            sql: sql.into(),
            args: vec![],
            named_args: vec![],
        }),
        page_rows,
        timeout_ms: 0,
        idle_ms,
    }))))
}

fn fetch(c: &mut FrameClient, id: u64, seq: u64) -> Result<CursorPage, ClientError> {
    page(c.data(&req(data_request::Kind::Fetch(TxnEnd { txn_id: id, seq }))))
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// 3,000 rows of ~1 KiB: about 3 MiB, three times the frame limit.
fn big_table(c: &mut FrameClient) {
    c.execute(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT)",
        vec![],
    )
    .unwrap();
    c.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000) \
         INSERT INTO big SELECT x, printf('%04d', x) || substr(hex(zeroblob(512)), 1, 1020) FROM n",
        vec![],
    )
    .unwrap();
}

#[test]
fn a_result_larger_than_a_frame_is_read_whole_through_a_cursor_from_one_snapshot() {
    let dir = TempDir::new("cursor-big");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    big_table(&mut c);
    // Too large for one answer...
    assert_eq!(
        code(c.execute("SELECT id, body FROM big ORDER BY id", vec![])),
        ErrorCode::TooLarge
    );
    // ...but fine through a cursor, even while another client writes.
    let first = open(&mut c, "SELECT id, body FROM big ORDER BY id", 0, 0).unwrap();
    assert_eq!(first.columns.len(), 2);
    let id = first.cursor_id;
    let mut writer = FrameClient::connect(srv.addr, WAIT).unwrap();
    writer
        .execute("INSERT INTO big VALUES (5000, 'late')", vec![])
        .unwrap();
    let mut rows = first.rows;
    let (mut done, mut seq, mut pages) = (first.done, 0, 1);
    while !done {
        seq += 1;
        let p = fetch(&mut c, id, seq).unwrap();
        assert!(
            p.columns.is_empty(),
            "columns come with the first page only"
        );
        rows.extend(p.rows);
        done = p.done;
        pages += 1;
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(
        rows.len(),
        3000,
        "the snapshot of the open, without the later insert"
    );
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.values[0], Value::int(i as i64 + 1));
    }
    // A finished cursor is gone.
    assert_eq!(code(fetch(&mut c, id, seq + 1)), ErrorCode::TxnNotFound);
}

#[test]
fn page_rows_bounds_each_page_and_close_ends_a_cursor_early() {
    let dir = TempDir::new("cursor-close");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    big_table(&mut c);
    let first = open(&mut c, "SELECT id FROM big ORDER BY id", 100, 0).unwrap();
    assert_eq!((first.rows.len(), first.done), (100, false));
    let second = fetch(&mut c, first.cursor_id, 1).unwrap();
    assert_eq!(second.rows[0].values, [Value::int(101)]);
    assert_eq!(
        code(fetch(&mut c, first.cursor_id, 1)),
        ErrorCode::BadRequest,
        "replayed seq"
    );
    c.data(&req(data_request::Kind::CloseCursor(TxnEnd {
        txn_id: first.cursor_id,
        seq: 2,
    })))
    .unwrap();
    assert_eq!(
        code(fetch(&mut c, first.cursor_id, 3)),
        ErrorCode::TxnNotFound
    );
    // Small results come in one page, done.
    let all = open(&mut c, "SELECT 1", 0, 0).unwrap();
    assert!(all.done && all.rows.len() == 1);
}

#[test]
fn cursors_only_read_and_an_abandoned_one_expires() {
    let dir = TempDir::new("cursor-misc");
    let srv = start_db(&dir);
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    big_table(&mut c);
    assert_eq!(
        code(open(&mut c, "DELETE FROM big", 0, 0)),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(open(&mut c, "SELECT * FROM nowhere", 0, 0)),
        ErrorCode::UnknownTable
    );
    let idle = open(&mut c, "SELECT id FROM big", 10, 50).unwrap();
    // A reading cursor does not block writers.
    c.execute("INSERT INTO big VALUES (9999, 'x')", vec![])
        .unwrap();
    // Poll with seq 1 only: at most one poll reaches the cursor (and resets its idle clock);
    // every later one is refused as a replay before reaching it, so the cursor expires on its
    // own and the answer turns to TXN_EXPIRED.
    common::eventually("the idle cursor expires", || {
        matches!(
            fetch(&mut c, idle.cursor_id, 1),
            Err(ClientError::Server {
                code: ErrorCode::TxnExpired,
                ..
            })
        )
    });
}
