//! Interactive transactions beside busy plain writers on SQLite (issue 14): commits per second
//! of 2 transaction clients (begin, one INSERT, commit) while 50 clients send single-row
//! INSERTs, against db-server in-process on a temporary file.
//!
//! ```text
//! cargo bench --bench txn_fairness [-- SECONDS]
//! ```
//!
//! Prints one line: `txn_fairness seconds=… plain_writers=50 plain_writes=… txn_clients=2
//! txn_commits=… txn_failed=…`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use db::monitor::Monitor;
use db::{DbService, PoolConfig, SqliteConfig};
use engine::Server;
use protocol::proto::{data_request, data_response, DataRequest, Statement, TxnBegin, TxnEnd};
use protocol::proto::{TxnStatement, Value};
use tools::client::FrameClient;

const WRITERS: usize = 50;
const TXN_CLIENTS: usize = 2;

fn req(kind: data_request::Kind) -> DataRequest {
    DataRequest {
        kind: Some(kind),
        ..Default::default()
    }
}

/// One transaction: begin, one INSERT, commit. False if any step failed.
fn transaction(c: &mut FrameClient, n: i64) -> bool {
    let Ok(r) = c.data(&req(data_request::Kind::Begin(TxnBegin::default()))) else {
        return false;
    };
    let Some(data_response::Kind::Txn(t)) = r.kind else {
        return false;
    };
    let stmt = Statement::new("INSERT INTO t (v) VALUES (?1)", vec![Value::int(n)]);
    let ran = c.data(&req(data_request::Kind::TxnExecute(TxnStatement {
        txn_id: t.txn_id,
        seq: 1,
        stmt: Some(stmt),
    })));
    if ran.is_err() {
        let _ = c.data(&req(data_request::Kind::Rollback(TxnEnd {
            txn_id: t.txn_id,
            seq: 2,
        })));
        return false;
    }
    c.data(&req(data_request::Kind::Commit(TxnEnd {
        txn_id: t.txn_id,
        seq: 2,
    })))
    .is_ok()
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("netmod-txn-fairness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pool = PoolConfig::Sqlite(SqliteConfig::new(dir.join("fair.db")))
        .start(Arc::new(Monitor::new(None)))
        .expect("database");
    let pool = Arc::new(pool);
    let watchers = db::watch::Watchers::new();
    let server = Server::new(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
    )
    .and_then(|s| s.listen("127.0.0.1:0".parse().expect("address")))
    .expect("listen");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let loop_thread = std::thread::spawn(move || {
        server.run(move |_| {
            DbService::new(
                Arc::clone(&pool),
                Arc::clone(&watchers),
                engine::DEFAULT_MAX_MESSAGE,
            )
        })
    });
    let connect = || FrameClient::connect(addr, Duration::from_secs(30)).expect("connect");
    connect()
        .execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)", vec![])
        .expect("table");

    let stop = Arc::new(AtomicBool::new(false));
    let (writes, commits, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (stop, writes, mut c) = (Arc::clone(&stop), Arc::clone(&writes), connect());
        threads.push(std::thread::spawn(move || {
            let mut n = 0i64;
            while !stop.load(Relaxed) {
                n += 1;
                let v = Value::int(w as i64 * 1_000_000_000 + n);
                if c.execute("INSERT INTO t (v) VALUES (?1)", vec![v]).is_ok() {
                    writes.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for _ in 0..TXN_CLIENTS {
        let (stop, commits, failed, mut c) = (
            Arc::clone(&stop),
            Arc::clone(&commits),
            Arc::clone(&failed),
            connect(),
        );
        threads.push(std::thread::spawn(move || {
            let mut n = -1i64;
            while !stop.load(Relaxed) {
                n -= 1;
                if transaction(&mut c, n) {
                    commits.fetch_add(1, Relaxed);
                } else {
                    failed.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let took = started.elapsed().as_secs_f64();
    handle.stop();
    let _ = loop_thread.join();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "txn_fairness seconds={took:.1} plain_writers={WRITERS} plain_writes={} txn_clients={TXN_CLIENTS} txn_commits={} txn_failed={}",
        writes.load(Relaxed),
        commits.load(Relaxed),
        failed.load(Relaxed)
    );
}
