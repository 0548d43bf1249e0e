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
#[cfg_attr(
    not(netmod_pg),
    ignore = "needs PostgreSQL: set DATABASE_URL (.ci/pg-cluster makes one)"
)]
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

/// CPU time (ticks) each `db-reader-N` thread of process `pid` has used, by thread name.
fn reader_ticks(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with("db-reader-") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // After the ")" that ends the name: state is field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        out.insert(comm.to_string(), ticks);
    }
    out
}

/// Sends `n` runaway statements as `user` (made with `secret`), one per connection, never
/// read: each holds a client reader until its deadline.
fn send_runaways(s: &Stack, user: &str, secret: &str, n: usize) -> Vec<FrameClient> {
    s.admin().change_user(user, secret, false).unwrap();
    (0..n)
        .map(|_| {
            let mut c = FrameClient::connect(s.frames, WAIT).unwrap();
            c.login(user, secret).unwrap();
            let id = c.next_id();
            c.send(&protocol::wire::message(
                protocol::wire::MessageType::Request,
                protocol::wire::Operation::Data,
                id,
                &exec(RUNAWAY_SQLITE, 0),
            ))
            .unwrap();
            c
        })
        .collect()
}

/// How many of `readers` burned CPU (30 ticks) since `before`.
fn busy(pid: u32, before: &std::collections::HashMap<String, u64>, readers: &[&str]) -> usize {
    let now = reader_ticks(pid);
    readers
        .iter()
        .filter(|r| {
            now.get(**r).copied().unwrap_or(0) >= before.get(**r).copied().unwrap_or(0) + 30
        })
        .count()
}

/// None of `runaways` has been answered: they are all still running (or waiting to).
fn none_answered(runaways: &mut [FrameClient]) {
    for c in runaways {
        c.stream().set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let r = std::io::Read::read(&mut c.stream(), &mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a runaway was answered already: {r:?}"
        );
    }
}

/// The client readers: db-reader-1 and db-reader-2 (db-reader-0 is the servers' own).
const CLIENT_READERS: [&str; 2] = ["db-reader-1", "db-reader-2"];

/// One user's statements run on at most all the clients' workers but one, and users are
/// served in turns: however many runaways mallory sends, bob's statements are answered
/// beside them, while all of hers are still running or waiting.
#[test]
fn one_users_statements_never_take_every_worker_from_the_others() {
    let s = Stack::start_with(
        "fs-turns",
        &["--statement-timeout-ms", "60000", "--workers", "2"],
    );
    let pid = s.db.child.id();
    let before = reader_ticks(pid);
    let mut runaways = send_runaways(&s, "mallory", "mallory-secret-1", 6);
    common::eventually("a client reader running mallory's runaway", || {
        busy(pid, &before, &CLIENT_READERS) >= 1
    });
    let mut bob = s.user("bob");
    for i in 0..5 {
        let r = bob
            .execute(&format!("SELECT {i} + 1 AS n"), vec![])
            .unwrap();
        assert_eq!(r.rows.len(), 1);
    }
    bob.execute("CREATE TABLE bobs (id INT)", vec![]).unwrap();
    bob.execute("INSERT INTO bobs VALUES (1)", vec![]).unwrap();
    assert_eq!(
        bob.execute("SELECT id FROM bobs", vec![])
            .unwrap()
            .rows
            .len(),
        1
    );
    none_answered(&mut runaways);
}

/// Issue 24: the servers' own work never queues behind clients'. Runaway client statements
/// of two users keep every client reader busy (seen as their threads burning CPU);
/// meanwhile logins, user management and the front's documents are served (by the reader
/// reserved for the servers' work), `/health` stays 200, and the runaways are still running
/// when all that is done.
#[test]
fn the_servers_own_work_never_waits_behind_runaway_client_statements() {
    let s = Stack::start_with(
        "fs-reserved",
        &["--statement-timeout-ms", "60000", "--workers", "2"],
    );
    let pid = s.db.child.id();
    let before = reader_ticks(pid);
    // One user's take at most one of the two client readers: two users take both.
    let mut runaways = send_runaways(&s, "mallory", "mallory-secret-1", 2);
    runaways.extend(send_runaways(&s, "oscar", "oscar-secret-1", 2));
    common::eventually("both client readers running a runaway", || {
        busy(pid, &before, &CLIENT_READERS) == 2
    });
    for i in 0..20 {
        let name = format!("u{i}");
        s.admin()
            .change_user(&name, "a-long-secret", false)
            .unwrap();
        let mut c = FrameClient::connect(s.frames, WAIT).unwrap();
        let token = c.login(&name, "a-long-secret").unwrap();
        // The token checked on a connection of its own.
        let mut d = FrameClient::connect(s.frames, WAIT).unwrap();
        d.authenticate(&token.token).unwrap();
    }
    let health = common::http::call(s.http, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(health.status, 200, "{health:?}");
    s.still_serves("beside-runaways");
    // The runaways were running all along: none has been answered.
    none_answered(&mut runaways);
}

fn begin(timeout_ms: u32, idle_ms: u32) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::Begin(protocol::proto::TxnBegin {
            timeout_ms,
            idle_ms,
        })),
        ..Default::default()
    }
}

fn txn_id(r: protocol::proto::DataResponse) -> u64 {
    match r.kind {
        Some(protocol::proto::data_response::Kind::Txn(t)) => t.txn_id,
        Some(protocol::proto::data_response::Kind::Page(p)) => p.cursor_id,
        other => panic!("{other:?}"),
    }
}

fn in_txn(txn_id: u64, seq: u64, sql: &str) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::TxnExecute(
            protocol::proto::TxnStatement {
                txn_id,
                seq,
                stmt: Some(Statement {
                    sql: sql.into(),
                    ..Default::default()
                }),
            },
        )),
        ..Default::default()
    }
}

fn cursor(sql: &str) -> DataRequest {
    DataRequest {
        kind: Some(data_request::Kind::OpenCursor(
            protocol::proto::CursorOpen {
                stmt: Some(Statement {
                    sql: sql.into(),
                    ..Default::default()
                }),
                page_rows: 1,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Issue 24, fair shares: one user at her cap of open transactions and cursors leaves room for
/// the others, and her transaction holding the write lock while idle is rolled back before
/// another user's write gives up waiting for it.
#[test]
fn one_user_cannot_take_every_transaction_or_hold_the_write_lock() {
    let s = Stack::start_with("fs-shares", &["--max-txns-per-user", "3"]);
    let mut alice = s.user("alice");
    let mut bob = s.user("bob");
    alice.execute("CREATE TABLE t (id INT)", vec![]).unwrap();
    alice
        .execute("INSERT INTO t VALUES (1), (2)", vec![])
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(txn_id(alice.data(&begin(30_000, 30_000)).unwrap()));
    }
    held.push(txn_id(alice.data(&cursor("SELECT id FROM t")).unwrap()));
    assert_eq!(code(alice.data(&begin(0, 0))), ErrorCode::Overloaded);
    assert_eq!(
        code(alice.data(&cursor("SELECT id FROM t"))),
        ErrorCode::Overloaded
    );
    // Bob's share is his own.
    let b = txn_id(bob.data(&begin(0, 0)).unwrap());
    bob.data(&in_txn(b, 1, "CREATE TABLE bobs (id INT)"))
        .unwrap();
    bob.data(&in_txn(b, 2, "INSERT INTO bobs VALUES (1)"))
        .unwrap();
    bob.data(&DataRequest {
        kind: Some(data_request::Kind::Commit(protocol::proto::TxnEnd {
            txn_id: b,
            seq: 3,
        })),
        ..Default::default()
    })
    .unwrap();
    txn_id(bob.data(&cursor("SELECT id FROM bobs")).unwrap());
    // Alice takes the write lock in a transaction that asks to idle for 30 s, and goes quiet:
    // bob's write still goes through (hers is rolled back first), and so do the servers'.
    let w = held[0];
    alice
        .data(&in_txn(w, 1, "INSERT INTO t VALUES (3)"))
        .unwrap();
    bob.execute("INSERT INTO bobs VALUES (2)", vec![]).unwrap();
    s.still_serves("beside-alice");
    assert_eq!(
        code(alice.data(&in_txn(w, 2, "SELECT 1"))),
        ErrorCode::TxnExpired
    );
    let n = bob.execute("SELECT count(*) FROM t", vec![]).unwrap();
    assert_eq!(
        n.rows[0].values[0],
        protocol::proto::Value::int(2),
        "rolled back"
    );
}

/// A connection to `to` from source address `from`.
fn connect_from(from: std::net::IpAddr, to: std::net::SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// Issue 24, before login: 1,000 connections from one address, each holding all but one byte
/// of the largest frame allowed before login, cost test-server under 64 MiB — past the per-IP
/// cap (256 by default) they are refused at once — and clients from other addresses are
/// served meanwhile; the address gets its places back as its connections close.
#[test]
fn one_address_cannot_hold_more_than_its_share_of_connections_before_login() {
    use std::io::{Read, Write};
    let s = Stack::start("fs-per-ip");
    s.admin().change_user("bob", "bob-secret-1", false).unwrap();
    let pid = s.ts.child.id();
    let before = peak_rss(pid);
    let attacker: std::net::IpAddr = [127, 0, 0, 7].into();
    let frame = 60_000u32;
    let mut body = frame.to_be_bytes().to_vec();
    body.resize(4 + frame as usize - 1, b'x');
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut c = connect_from(attacker, s.frames);
        // A refused connection may be closed before (or while) this is written.
        let _ = c.write_all(&body);
        conns.push(c);
    }
    // Another address logs in and reads meanwhile.
    let other = connect_from([127, 0, 0, 8].into(), s.frames);
    let mut bob = FrameClient::from_stream(other, WAIT).unwrap();
    bob.login("bob", "bob-secret-1").unwrap();
    bob.execute("SELECT 1", vec![]).unwrap();
    // Held: no answer yet. Refused: answered and closed. A connection test-server has not
    // accepted yet (still in the listen backlog) also has no answer: wait until test-server
    // has taken every one, i.e. until no more than 256 are without an answer.
    for c in &mut conns {
        c.set_read_timeout(Some(std::time::Duration::from_millis(1)))
            .unwrap();
    }
    let mut answered = vec![false; conns.len()];
    let mut held = conns.len();
    common::eventually("test-server answered every connection past the cap", || {
        for (c, done) in conns.iter_mut().zip(answered.iter_mut()) {
            if *done {
                continue;
            }
            let mut buf = [0u8; 64];
            *done = !matches!(
                c.read(&mut buf),
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            );
        }
        held = answered.iter().filter(|d| !**d).count();
        held <= 256
    });
    assert!(held <= 256, "{held} connections held from one address");
    assert!(held >= 200, "only {held} held: the cap is 256");
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "test-server's peak RSS grew by {} MiB",
        grown >> 20
    );
    // Closed, the address may connect and log in again.
    drop(conns);
    common::eventually("the attacker's address gets its places back", || {
        let mut c = FrameClient::from_stream(connect_from(attacker, s.frames), WAIT).unwrap();
        c.login("bob", "bob-secret-1").is_ok()
    });
}

/// A PUT of `/docs/{name}` with `token`: the status.
fn put_with(http: std::net::SocketAddr, name: &str, token: &str) -> u16 {
    let body = "{\"content\":\"x\"}";
    common::http::call(
        http,
        &format!(
            "PUT /docs/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .status
}

/// True once `c` was told its session is over (an UNAUTHENTICATED error) or closed.
fn session_ended(c: &mut FrameClient) -> bool {
    match c.data(&exec("SELECT 1", 0)) {
        Err(tools::client::ClientError::Server { code, .. }) => code == ErrorCode::Unauthenticated,
        Err(_) => true,
        Ok(_) => false,
    }
}

/// Issue 24, revocation: re-keying or removing a user refuses every older token of it on
/// every instance — its open sessions are told and closed, AUTH_TOKEN and HTTP writes with
/// it are refused — while a login with the new secret works at once, on any instance.
#[test]
fn a_rekeyed_or_removed_user_loses_its_tokens_on_every_instance() {
    let dir = common::TempDir::new("fs-revoke");
    let (_db, db) = common::spawn_db(&dir.path("r.db"));
    // Two instances sharing the token key; HTTP writes need a token (no --insecure-http-writes).
    let db = db.to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--threads",
        "1",
        "--admin-secret",
        "admin-secret",
        "--token-secret",
        "shared-key-1",
    ];
    let start = || {
        let mut p = common::Proc::spawn_logging("test-server", &args, Some("info"));
        let addrs = p.listen_addrs();
        (p, addrs)
    };
    let (_ts1, [f1, h1]) = start();
    let (_ts2, [f2, h2]) = start();
    common::wait_front_ready(h1);
    common::wait_front_ready(h2);
    let connect = |addr| FrameClient::connect(addr, WAIT).unwrap();
    let mut admin = connect(f1);
    common::eventually("admin can log in", || {
        admin.login("admin", "admin-secret").is_ok()
    });
    admin.change_user("bob", "bob-secret-1", false).unwrap();
    let mut on1 = connect(f1);
    let token = on1.login("bob", "bob-secret-1").unwrap().token;
    let mut on2 = connect(f2);
    on2.authenticate(&token).unwrap();
    on2.execute("SELECT 1", vec![]).unwrap();
    assert_eq!(put_with(h2, "bobs", &token), 201);

    admin.change_user("bob", "bob-secret-2", false).unwrap();
    // The session on the instance that made the change: told at once.
    assert!(session_ended(&mut on1));
    // On the other one, as soon as its watch tells it.
    common::eventually("bob's session on the other instance ends", || {
        session_ended(&mut on2)
    });
    assert_eq!(
        code(connect(f2).authenticate(&token)),
        ErrorCode::Unauthenticated
    );
    assert_eq!(put_with(h2, "bobs", &token), 401);
    assert_eq!(put_with(h1, "bobs", &token), 401);
    // The new secret works right away, on either instance.
    let mut again = connect(f2);
    let fresh = again.login("bob", "bob-secret-2").unwrap().token;
    again.execute("SELECT 1", vec![]).unwrap();
    connect(f1).authenticate(&fresh).unwrap();
    assert_eq!(put_with(h1, "bobs", &fresh), 200);

    // Removed, on the second instance: the token goes everywhere.
    let mut admin2 = connect(f2);
    admin2.login("admin", "admin-secret").unwrap();
    assert!(admin2.change_user("bob", "", true).unwrap().removed);
    common::eventually("bob's token refused on the first instance", || {
        connect(f1).authenticate(&fresh).is_err()
    });
    assert!(session_ended(&mut again));
    assert_eq!(put_with(h1, "bobs2", &fresh), 401);
    // Others are untouched.
    admin.execute("SELECT 1", vec![]).unwrap();
}

/// Issue 24: test-server sees a killed db-server at once, every time, also after its link has
/// reconnected: requests in flight at each kill are answered UNAVAILABLE ("connection to
/// db-server lost"), never left for the link's silence limit to notice ("nothing heard").
/// (A link connection closed by db-server was held open while requests were in flight, as if
/// answers could still come.)
#[test]
fn a_killed_db_server_is_noticed_at_once_every_time() {
    use protocol::wire::{self, MessageType, Operation};
    let dir = common::TempDir::new("fs-kill");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let db_addr = format!("127.0.0.1:{port}");
    let file = dir.path("k.db");
    let file = file.to_str().unwrap().to_string();
    let start_db = || {
        let mut p = common::Proc::spawn(
            "db-server",
            &["--listen", &db_addr, "--sqlite", &file, "--workers", "2"],
        );
        p.listen_addr();
        p
    };
    let mut db = start_db();
    let mut ts = common::Proc::spawn_logging(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db_addr,
            "--threads",
            "1",
            "--admin-secret",
            "admin-secret",
            "--reconnect-base",
            "0.05",
            "--reconnect-max",
            "0.1",
            // Long, so that only a noticed close can fail the requests in time.
            "--ping-interval",
            "30",
        ],
        Some("info"),
    );
    let [frames, _] = ts.listen_addrs();
    let login = || {
        let mut c = FrameClient::connect(frames, WAIT).unwrap();
        let mut ok = false;
        common::eventually("the link is up and admin logs in", || {
            ok = c.login("admin", "admin-secret").is_ok()
                && c.execute("CREATE TABLE IF NOT EXISTS k (id INT)", vec![])
                    .is_ok();
            ok
        });
        c
    };
    for round in 0..8 {
        let mut c = login();
        // A request in flight that db-server has read (a client reader running it), so that
        // its death closes the link cleanly (FIN) rather than with a reset.
        let before = reader_ticks(db.child.id());
        let ids: Vec<u32> = (0..1)
            .map(|_| {
                let id = c.next_id();
                c.send(&wire::message(
                    MessageType::Request,
                    Operation::Data,
                    id,
                    &exec(RUNAWAY_SQLITE, 0),
                ))
                .unwrap();
                id
            })
            .collect();
        common::eventually("a client reader running it", || {
            let now = reader_ticks(db.child.id());
            ["db-reader-1", "db-reader-2"]
                .iter()
                .any(|r| now.get(*r).copied().unwrap_or(0) > before.get(*r).copied().unwrap_or(0))
        });
        db.signal(libc::SIGKILL);
        let _ = db.wait_exit();
        // Answers come in any order: every one must, OK or UNAVAILABLE.
        let mut due: std::collections::HashSet<u32> = ids.into_iter().collect();
        while !due.is_empty() {
            let m = c
                .next_message()
                .unwrap_or_else(|e| panic!("round {round}: {} answers missing: {e:?}", due.len()));
            if !due.remove(&m.message_id) {
                continue;
            }
            if m.r#type() == MessageType::Error {
                let e = tools::client::server_error(&m);
                assert!(
                    matches!(&e, tools::client::ClientError::Server { code, .. } if *code == ErrorCode::Unavailable),
                    "round {round}: {e:?}"
                );
            }
        }
        db = start_db();
    }
    drop(db);
    assert!(
        !ts.seen.iter().any(|l| l.contains("nothing heard")),
        "a kill was noticed only by the silence limit"
    );
    // Drain what test-server logged meanwhile, too.
    while let Ok(l) = ts.lines.try_recv() {
        assert!(!l.contains("nothing heard"), "{l}");
    }
}

/// Issue 24: behind the proxy in TCP mode every client shares the proxy's address; with
/// `--send-proxy-v2` on the proxy and `--trusted-proxy` on test-server, the login lockout sees
/// each client's own address: one client's failures do not lock another out, even for the
/// same user.
#[test]
fn behind_the_proxy_the_login_limit_sees_each_clients_own_address() {
    let dir = common::TempDir::new("fs-proxy-v2");
    let (_db, db) = common::spawn_db(&dir.path("p.db"));
    let db = db.to_string();
    let mut ts = common::Proc::spawn_logging(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--threads",
            "1",
            "--admin-secret",
            "admin-secret",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        Some("info"),
    );
    let [frames, http] = ts.listen_addrs();
    common::wait_front_ready(http);
    let frames_s = frames.to_string();
    let mut proxy = common::Proc::spawn(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--mode",
            "tcp",
            "--send-proxy-v2",
            "--threads",
            "1",
            "--metrics-interval",
            "0",
            "--backend",
            &frames_s,
        ],
    );
    let [front, _] = proxy.listen_addrs();
    let via_proxy =
        |from: [u8; 4]| FrameClient::from_stream(connect_from(from.into(), front), WAIT).unwrap();
    common::eventually("admin logs in through the proxy", || {
        via_proxy([127, 0, 0, 20])
            .login("admin", "admin-secret")
            .is_ok()
    });
    let mut attacker = via_proxy([127, 0, 0, 21]);
    let codes: Vec<ErrorCode> = (0..12)
        .map(|_| code(attacker.login("admin", "wrong-guess")))
        .collect();
    assert_eq!(codes[11], ErrorCode::RateLimited, "{codes:?}");
    // Another client of the same proxy, the same user: its own address, its own bucket.
    let mut other = via_proxy([127, 0, 0, 22]);
    other.login("admin", "admin-secret").unwrap();
    other.execute("SELECT 1", vec![]).unwrap();
    ts.wait_line("User admin logged in from 127.0.0.22");
    // A direct connection from the trusted address must send the header: without it,
    // nothing it sends is believed.
    let mut direct = FrameClient::connect(frames, WAIT).unwrap();
    assert!(direct.login("admin", "admin-secret").is_err());
}
