//! One user cannot starve, outlast or outgrow the others (issue 24), on real db-server and
//! test-server processes: a client statement stops at its deadline, in the database itself,
//! and frees its worker; a client statement cannot make a value that eats the server's memory.

mod common;

use common::stack::{code, Stack};
use common::WAIT;
use protocol::proto::{data_request, DataRequest, Statement};
use protocol::wire::ErrorCode;
use tools::client::FrameClient;

/// Counts for ever (SQLite).
const RUNAWAY_SQLITE: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
/// Counts to ten billion (PostgreSQL: hours).
const RUNAWAY_PG: &str = "SELECT count(*) FROM generate_series(1, 10000000000)";

fn exec(sql: &str, timeout_ms: u32) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Execute(Statement {
            sql: sql.into(),
            ..Default::default()
        })),
        timeout_ms,
        ..Default::default()
    }
}

/// Runs `runaway` as `user` on `per_worker` connections per reader worker at once: every one
/// is answered TIMEOUT (the database stopped it), and the user's next statements run.
fn runaways_stop_at_their_deadline(s: &Stack, user: &str, runaway: &str, workers: usize) {
    let secret = format!("{user}-secret-1");
    s.admin().change_user(user, &secret, false).unwrap();
    let threads: Vec<_> = (0..workers * 2)
        .map(|_| {
            let frames = s.frames;
            let (user, secret, runaway) = (user.to_string(), secret.clone(), runaway.to_string());
            std::thread::spawn(move || {
                let mut c = FrameClient::connect(frames, WAIT).unwrap();
                c.login(&user, &secret).unwrap();
                code(c.data(&exec(&runaway, 0)))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), ErrorCode::Timeout);
    }
    let mut c = s.user(&format!("{user}2"));
    // A request may ask for less than the server's maximum.
    assert_eq!(code(c.data(&exec(runaway, 50))), ErrorCode::Timeout);
    c.execute("CREATE TABLE mine (id INT)", vec![]).unwrap();
    c.execute("INSERT INTO mine VALUES (1)", vec![]).unwrap();
    assert_eq!(
        c.execute("SELECT id FROM mine", vec![]).unwrap().rows.len(),
        1
    );
    s.still_serves("after-runaways");
}

#[test]
fn a_runaway_client_statement_stops_at_its_deadline_and_frees_its_worker() {
    let s = Stack::start_with(
        "fs-deadline",
        &["--statement-timeout-ms", "400", "--workers", "2"],
    );
    runaways_stop_at_their_deadline(&s, "mallory", RUNAWAY_SQLITE, 2);
}

#[test]
fn pg_a_runaway_client_statement_stops_at_its_deadline_in_the_database() {
    let Some(s) = Stack::start_pg_with(
        "fs-deadline-pg",
        &["--statement-timeout-ms", "400", "--workers", "2"],
    ) else {
        return;
    };
    runaways_stop_at_their_deadline(&s, "mallory", RUNAWAY_PG, 2);
    // And the backends are free again: nothing of the client login's is still running.
    let schema = s.schema.as_ref().unwrap();
    let mut admin = db::libpq::PgConn::connect(&schema.admin).unwrap();
    let running = admin
        .query(
            "SELECT count(*) FROM pg_stat_activity
             WHERE usename = 'netmod_client' AND state = 'active'
               AND query LIKE '%generate_series(1, 10000000000)%'",
            &[],
        )
        .unwrap();
    assert_eq!(running.value(0, 0), Some(&b"0"[..]));
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_client_statement_cannot_make_a_value_that_eats_the_servers_memory() {
    let s = Stack::start("fs-memory");
    let mut bob = s.user("bob");
    bob.execute("SELECT 1", vec![]).unwrap();
    let before = peak_rss(s.db.child.id());
    for sql in [
        "SELECT zeroblob(900000000)",
        "SELECT randomblob(900000000)",
        "SELECT length(hex(zeroblob(20000000)))",
        "SELECT group_concat(hex(randomblob(1000)), '') FROM (WITH RECURSIVE c(x) AS \
         (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT x FROM c)",
    ] {
        assert_eq!(code(bob.execute(sql, vec![])), ErrorCode::TooLarge, "{sql}");
    }
    let grown = peak_rss(s.db.child.id()).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "db-server's peak RSS grew by {} MiB",
        grown >> 20
    );
    // Values a client may have are still made and answered.
    let r = bob
        .execute("SELECT length(zeroblob(1000000))", vec![])
        .unwrap();
    assert_eq!(r.rows.len(), 1);
    s.still_serves("after-big-values");
}
