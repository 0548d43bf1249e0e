//! db-server follows a PostgreSQL failover by itself: given every node in a multi-host URL with
//! `target_session_attrs=read-write` (libpq's own), it finds the primary, and after the primary
//! dies and a standby is promoted it finds the new one — no restart, no configuration change.
//! With synchronous replication every acknowledged write survives, and a keyed write retried
//! across the failover is applied once.
//!
//! The cluster is this test's own (`.ci/pg-cluster start` with `PG_SYNC=1`, on free ports): the
//! test kills its primary. The promotion stands in for the HA engine's (issue 28); what is
//! tested is db-server's side. Runs where PostgreSQL does (`netmod_pg`, as tests/db_pg.rs).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, TempDir, WAIT};
use protocol::proto::{data_request, DataRequest, Statement, StatsRequest, Value};
use protocol::wire::ErrorCode;
use tools::client::{ClientError, FrameClient};

/// `.ci/pg-cluster` with `args` (the repository's script), synchronous replication asked for.
fn pg_cluster(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-cluster"))
        .args(args)
        .env("PG_SYNC", "1")
        .output()
        .expect("bash runs")
}

/// [`pg_cluster`], which must succeed; its output.
fn cluster(args: &[&str]) -> String {
    let out = pg_cluster(args);
    assert!(
        out.status.success(),
        "pg-cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two free consecutive ports (the primary's and the standby's).
fn free_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The cluster, stopped when the test ends (however it ends).
struct Cluster {
    dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_cluster(&["stop", &self.dir.path("pg").display().to_string()]);
    }
}

fn keyed_insert(key: &str, id: i64) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Execute(Statement::new(
            "INSERT INTO acked (id) VALUES (?1)",
            vec![Value::int(id)],
        ))),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// Where db-server says its writes go (`StatsResult.primary`, asked briefly).
fn primary(c: &mut FrameClient) -> String {
    let r = c
        .data(&DataRequest {
            kind: Some(data_request::Kind::Stats(StatsRequest { brief: true })),
            ..Default::default()
        })
        .unwrap();
    match r.kind {
        Some(protocol::proto::data_response::Kind::Stats(s)) => {
            assert!(s.statements.is_empty(), "a brief answer has no statements");
            s.primary
        }
        other => panic!("not statistics: {other:?}"),
    }
}

fn count(c: &mut FrameClient, sql: &str) -> i64 {
    let r = c.execute(sql, vec![]).unwrap();
    match r.rows[0].values[0].kind {
        Some(protocol::proto::value::Kind::Integer(n)) => n,
        ref other => panic!("not a count: {other:?}"),
    }
}

#[test]
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
fn db_server_follows_a_promoted_standby_and_loses_no_acknowledged_write() {
    if common::pg::urls("failover").is_none() {
        return;
    }
    let dir = TempDir::new("failover");
    // postgres (the server's OS user) must reach the data directory.
    std::fs::create_dir_all(dir.path("")).unwrap();
    let _ = Command::new("chmod")
        .args(["755", &dir.path("").display().to_string()])
        .status();
    let port = free_pair();
    let cluster_dir = dir.path("pg").display().to_string();
    cluster(&["start", &cluster_dir, &port.to_string()]);
    let _cluster = Cluster { dir };
    let url = format!(
        "postgresql://netmod@127.0.0.1:{port},127.0.0.1:{}/netmod?target_session_attrs=read-write",
        port + 1
    );
    let mut p = Proc::spawn(
        "db-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--postgres",
            &url,
            "--postgres-timeout-secs",
            "2",
            "--workers",
            "2",
        ],
    );
    let addr = p.listen_addr();
    let mut c = FrameClient::connect(addr, WAIT).unwrap();
    c.execute("CREATE TABLE acked (id BIGINT PRIMARY KEY)", vec![])
        .unwrap();

    assert_eq!(
        primary(&mut c),
        format!("127.0.0.1:{port}"),
        "where db-server says writes go"
    );
    // Keyed writes acknowledged before the failover (synchronously replicated).
    let mut acked = Vec::new();
    for id in 0..200 {
        c.data(&keyed_insert(&format!("k{id}"), id)).unwrap();
        acked.push(id);
    }

    cluster(&["kill-primary", &cluster_dir]);
    // Writes while there is no primary fail with a retryable code, at once or when the dead
    // connection is noticed.
    let failed = c.data(&keyed_insert("during", 10_000));
    match failed {
        Err(ClientError::Server { code, .. }) => assert!(
            matches!(code, ErrorCode::Unavailable | ErrorCode::Timeout),
            "{code:?}"
        ),
        other => panic!("a write with no primary: {other:?}"),
    }
    cluster(&["promote", &cluster_dir]);

    // The same URL finds the new primary: writes resume without a restart.
    let start = Instant::now();
    loop {
        match c.data(&keyed_insert("k-after", 20_000)) {
            Ok(_) => break,
            Err(ClientError::Server {
                code: ErrorCode::Unavailable | ErrorCode::Timeout,
                ..
            }) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "writes did not resume on the promoted standby"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("after the promotion: {e}"),
        }
    }
    // db-server says so: its statistics name the new primary (test-server's status page
    // shows it).
    assert_eq!(primary(&mut c), format!("127.0.0.1:{}", port + 1));
    // Every write acknowledged before is there; a keyed write retried across the failover is
    // answered from its record, not applied again.
    c.data(&keyed_insert("k7", 7)).unwrap();
    c.data(&keyed_insert("k-after", 20_000)).unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM acked WHERE id < 200"),
        acked.len() as i64
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM acked WHERE id = 20000"),
        1
    );
    // The write that failed during the failover may or may not have been applied; retried
    // with its key it is applied exactly once.
    c.data(&keyed_insert("during", 10_000)).unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM acked WHERE id = 10000"),
        1
    );
    p.signal(libc::SIGTERM);
    p.wait_exit();
}
