//! The real binaries as child processes: signals, limits and their log lines, loadgen's output.

mod common;

use common::{Proc, WAIT};
use prost::Message as _;
use protocol::wire::{ErrorBody, ErrorCode, MessageType, Operation, ServerShutdown};
use tools::client::FrameClient;

/// Runs loadgen with `args`, expects success, and returns its last line.
fn loadgen_last_line(args: &[&str]) -> String {
    let out = common::loadgen(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::last_line(&out)
}

fn refused_with(cl: &mut FrameClient) -> ErrorCode {
    let m = cl.next_message().expect("an ERROR frame before the close");
    assert_eq!(m.r#type(), MessageType::Error);
    let code = ErrorBody::decode(m.data).unwrap().code();
    assert!(cl.recv().unwrap().is_none(), "closed after the refusal");
    code
}

#[test]
fn sigterm_sends_server_shutdown_to_clients_and_exits_zero() {
    let mut p = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "2"],
    );
    let addr = p.listen_addr();
    let mut clients: Vec<FrameClient> = (0..4)
        .map(|_| FrameClient::connect(addr, WAIT).unwrap())
        .collect();
    for c in &mut clients {
        c.ping(b"hi").unwrap();
    }
    p.signal(libc::SIGTERM);
    for c in &mut clients {
        let m = c.next_message().unwrap();
        assert_eq!(
            (m.r#type(), m.op()),
            (MessageType::Notification, Operation::ServerShutdown)
        );
        let notice = ServerShutdown::decode(m.data).unwrap();
        assert_eq!(notice.reconnect_after, 5);
        assert!(!notice.reason.is_empty());
        assert!(c.recv().unwrap().is_none(), "closed after the notice");
    }
    assert!(p.wait_exit().success());
    p.wait_line("Received SIGTERM: shutting down gracefully");
    p.wait_line("test-server stopped");
}

#[test]
fn the_connection_over_the_limit_is_refused_and_logged_while_others_keep_working() {
    let mut p = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--max-connections",
            "3",
        ],
    );
    let addr = p.listen_addr();
    let mut held: Vec<FrameClient> = (0..3)
        .map(|_| FrameClient::connect(addr, WAIT).unwrap())
        .collect();
    for c in &mut held {
        c.ping(b"in").unwrap();
    }
    let mut extra = FrameClient::connect(addr, WAIT).unwrap();
    assert_eq!(refused_with(&mut extra), ErrorCode::ServerBusy);
    p.wait_line("Refused connection from 127.0.0.1: connection limit of 3 reached");
    for c in &mut held {
        c.ping(b"still in").unwrap();
    }
    // A freed place is taken again.
    drop(held.pop());
    common::eventually("a new connection is accepted after one closed", || {
        let mut c = FrameClient::connect(addr, WAIT).unwrap();
        c.ping(b"again").is_ok()
    });
}

#[test]
fn the_per_ip_rate_limit_refuses_the_fourth_connection_from_one_address_only() {
    let mut p = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--rate-limit",
            "3",
        ],
    );
    let addr = p.listen_addr();
    let mut ok: Vec<FrameClient> = (0..3)
        .map(|_| common::connect_from("127.0.0.2", addr))
        .collect();
    for c in &mut ok {
        c.ping(b"x").unwrap();
    }
    let mut fourth = common::connect_from("127.0.0.2", addr);
    assert_eq!(refused_with(&mut fourth), ErrorCode::RateLimited);
    p.wait_line("Refused connection from 127.0.0.2: per-IP connection rate limit");
    // Another address has its own bucket, and loopback 127.0.0.1 is allow-listed by default.
    let mut other = common::connect_from("127.0.0.3", addr);
    other.ping(b"y").unwrap();
    for _ in 0..10 {
        let mut c = common::connect_from("127.0.0.1", addr);
        c.ping(b"z").unwrap();
    }
}

#[test]
fn loadgen_prints_the_contract_line_last() {
    let mut p = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let addr = p.listen_addr().to_string();
    let last = loadgen_last_line(&[
        "ping",
        "--addr",
        &addr,
        "--conns",
        "4",
        "--pipeline",
        "4",
        "--duration",
        "0.3",
    ]);
    let fields: Vec<(&str, &str)> = last
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["rps", "p50_us", "p99_us", "errors"]);
    assert!(fields[0].1.parse::<f64>().unwrap() > 0.0);
    assert!(fields[1].1.parse::<f64>().unwrap() > 0.0);
    assert!(fields[2].1.parse::<f64>().unwrap() >= fields[1].1.parse::<f64>().unwrap());
    assert_eq!(fields[3].1.parse::<u64>().unwrap(), 0);
}

/// Runs loadgen with `args` on a pseudo-terminal (`script` from util-linux): whether it
/// succeeded, and everything it wrote there.
fn on_a_terminal(args: &[&str]) -> (bool, String) {
    let cmd = format!(
        "{} {}",
        common::bin_path("loadgen").display(),
        args.join(" ")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// On a terminal loadgen rewrites one progress line each second and erases it before its
/// report; captured (as above) it writes no such line. `script` gives it a pseudo-terminal.
#[test]
fn loadgen_shows_progress_and_colour_on_a_terminal_only_and_keeps_its_last_line() {
    let mut p = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let addr = p.listen_addr().to_string();
    let (ok, text) = on_a_terminal(&["ping", "--addr", &addr, "--conns", "2", "--duration", "2.2"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("rps so far"),
        "no progress line on a terminal: {text:?}"
    );
    assert!(
        text.contains("\r\x1b[K"),
        "the line is not rewritten in place: {text:?}"
    );
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rps=") && last.contains(" errors=0"),
        "{last:?}"
    );
    // Captured output has no progress line.
    let captured = common::loadgen(&["ping", "--addr", &addr, "--conns", "2", "--duration", "1.2"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&captured.stdout),
        String::from_utf8_lossy(&captured.stderr)
    );
    assert!(
        !all.contains("rps so far") && !all.contains('\x1b'),
        "{all:?}"
    );
    // Log levels are coloured on a terminal, plain text otherwise.
    let (_, text) = on_a_terminal(&[
        "ping",
        "--addr",
        "127.0.0.1:1",
        "--conns",
        "1",
        "--duration",
        "0.2",
    ]);
    assert!(
        text.contains("[\x1b[33mWARN\x1b[0m] "),
        "no colour on a terminal: {text:?}"
    );
    let plain = common::loadgen(&[
        "ping",
        "--addr",
        "127.0.0.1:1",
        "--conns",
        "1",
        "--duration",
        "0.2",
    ]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("][WARN] ") && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn loadgen_cycles_connections_when_asked_and_counts_no_errors_for_them() {
    let mut p = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let addr = p.listen_addr().to_string();
    let out = common::loadgen(&[
        "ping",
        "--addr",
        &addr,
        "--conns",
        "4",
        "--pipeline",
        "2",
        "--duration",
        "0.3",
        "--requests-per-conn",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let cycled: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("connections_cycled="))
        .expect("a connections_cycled line")
        .parse()
        .unwrap();
    assert!(cycled > 0, "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" errors=0"), "{last}");
    // Every cycle answered all three of its requests before closing.
    let requests: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("requests="))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests >= cycled * 3, "{stdout}");
}

#[test]
fn loadgen_against_nothing_fails_with_errors_in_the_contract_line() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = common::loadgen(&[
        "ping",
        "--addr",
        &dead.to_string(),
        "--conns",
        "2",
        "--duration",
        "0.2",
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("rps=0.0 "), "{last}");
    assert!(!last.ends_with("errors=0"), "{last}");
}

#[test]
fn a_bad_config_file_is_refused_with_a_clear_message() {
    let dir = common::TempDir::new("cfg");
    let path = dir.path("bad.toml");
    std::fs::write(&path, "[engine]\nthreadz = 2\n").unwrap();
    let mut p = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ],
    );
    let line = p.wait_line("invalid configuration");
    assert!(line.contains("threadz"), "{line}");
    assert!(!p.wait_exit().success());
}

/// stack's flags for a run on free ports with cheap secret hashing.
const STACK_ON_FREE_PORTS: &[&str] = &[
    "--listen",
    "127.0.0.1:0",
    "--http-listen",
    "127.0.0.1:0",
    "--db-listen",
    "127.0.0.1:0",
    "--proxy-listen",
    "127.0.0.1:0",
    "--proxy-admin",
    "127.0.0.1:0",
    "--argon2-memory-kib",
    "64",
];

#[test]
fn stack_starts_the_servers_runs_a_load_and_stops_them() {
    let dir = common::TempDir::new("stack");
    let db = dir.path("stack.db");
    let out = std::process::Command::new(common::bin_path("stack"))
        .args(STACK_ON_FREE_PORTS)
        .args(["--sqlite", db.to_str().unwrap(), "--duration", "0.3"])
        .env_remove("NETMOD_ADMIN_SECRET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..2 {
        assert!(
            stdout.contains(&format!("test-server {i}: frames on 127.0.0.1:")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("user admin, secret "), "{stdout}");
    assert!(stdout.contains("proxy: HTTP on 127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains(
            "GET /docs/example through the proxy: HTTP/1.1 200 OK {\"docName\":\"example\""
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("rps=") && l.ends_with("errors=0")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("test-server stopped"), "{stderr}");
    // The example document was stored as a PUT stores one: `updated` is when, so the
    // README's `WHERE updated > ?1` 0 lists it.
    let updated: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT updated FROM docs WHERE name = 'example'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(updated > 1_700_000_000, "{updated}");
    // Without --keep the servers stop after the load: stack says so where it prints the
    // commands to try, and at the end.
    assert!(
        stdout.contains("`stack --keep` leaves them running until Ctrl-C"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("stopped (`stack --keep` leaves the servers running)")
    );
    // Stopped in order (the proxy, the test-servers, then db-server): no server logs a
    // backend vanishing, nothing above INFO on a clean run.
    for line in stderr.lines() {
        assert!(
            !line.contains("[WARN]") && !line.contains("[ERROR]"),
            "{line}\n{stderr}"
        );
    }
}

#[test]
fn loadgen_on_a_closed_port_reconnects_at_a_bounded_rate_and_sums_the_losses_up() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = common::loadgen(&[
        "ping",
        "--addr",
        &closed.to_string(),
        "--conns",
        "50",
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let last = common::last_line(&out);
    let errors: u64 = last.rsplit("errors=").next().unwrap().parse().unwrap();
    // 50 refused at once, then each loop tries at most a few times a second.
    assert!((50..=2_000).contains(&errors), "{last}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    // A few per loop, then the summary (an unthrottled loop printed tens of thousands).
    assert!(lines.len() <= 16, "{stderr}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with(&format!(
            "loadgen: {errors} connection(s) to the server lost or refused"
        ))),
        "{stderr}"
    );
}

#[test]
fn client_and_loadgen_end_quietly_when_their_reader_goes_away() {
    use std::io::BufRead;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // `loadgen … | head -1`: the reader takes the first line and leaves.
    let mut child = std::process::Command::new(common::bin_path("loadgen"))
        .args(["ping", "--addr", &closed.to_string(), "--duration", "0.2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("loadgen ping:"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // `client ping --count 1000 | head -1` on a real server.
    let dir = common::TempDir::new("closed-pipe");
    let (_db, db) = common::spawn_db(&dir.path("p.db"));
    let (mut ts, _) = common::spawn_front(db, &[]);
    let [frames, _] = ts.listen_addrs();
    let mut child = std::process::Command::new(common::bin_path("client"))
        .args(["--addr", &frames.to_string(), "ping", "--count", "100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("pong from"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn stack_keep_ends_with_a_clear_line_when_a_server_dies() {
    let mut s = Stack::spawn("stack-dies", &["--keep", "--duration", "0.2"], "info");
    let addrs = s.server_addrs();
    let pid = s.pid_of("test-server 1");
    s.wait_line("servers running");
    // SAFETY: signalling a process stack started for this test.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let st = s.wait_exit();
    assert_eq!(st.code(), Some(1), "{}", s.stderr());
    let stderr = s.stderr();
    assert!(
        stderr.contains(&format!(
            "stack: test-server 1 (pid {pid}) exited: exit status: 0; the others were stopped"
        )),
        "{stderr}"
    );
    all_closed(&addrs);
}

#[test]
fn loadgen_db_seeds_its_table_on_an_empty_database_and_prints_the_contract_line() {
    let dir = common::TempDir::new("lg-db");
    let db = dir.path("lg.db");
    let mut p = Proc::spawn(
        "db-server",
        &["--listen", "127.0.0.1:0", "--sqlite", db.to_str().unwrap()],
    );
    let addr = p.listen_addr().to_string();
    for mode in ["read", "write", "mixed"] {
        let last = loadgen_last_line(&[
            "db",
            "--addr",
            &addr,
            "--mode",
            mode,
            "--rows",
            "500",
            "--conns",
            "4",
            "--pipeline",
            "4",
            "--duration",
            "0.3",
        ]);
        assert!(
            last.starts_with("rps=") && last.ends_with(" errors=0"),
            "{mode}: {last}"
        );
    }
    let mut c = FrameClient::connect(p.listen_addr(), WAIT).unwrap();
    let r = c
        .execute(
            "SELECT count(*) >= 500 FROM loadgen_kv WHERE id <= 500",
            vec![],
        )
        .unwrap();
    assert_eq!(r.rows[0].values, [protocol::proto::Value::int(1)]);
}

#[test]
fn sigterm_right_after_a_burst_of_db_writes_answers_every_one_and_keeps_them() {
    use protocol::proto::{data_request, DataRequest, Statement, Value};
    let dir = common::TempDir::new("db-term");
    let db = dir.path("term.db");
    let db_arg = db.to_str().unwrap();
    let mut p = Proc::spawn(
        "db-server",
        &["--listen", "127.0.0.1:0", "--sqlite", db_arg],
    );
    let addr = p.listen_addr();
    let mut c = FrameClient::connect(addr, WAIT).unwrap();
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    let mut burst = Vec::new();
    for i in 0..200i64 {
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                keys: Vec::new(),
                sql: "INSERT INTO t VALUES (?1)".into(),
                args: vec![Value::int(i)],
                named_args: vec![],
            })),
            ..Default::default()
        };
        let id = c.next_id();
        protocol::wire::encode(
            &protocol::wire::message(MessageType::Request, Operation::Data, id, &req),
            &mut burst,
        );
    }
    c.send_raw(&burst).unwrap();
    p.signal(libc::SIGTERM);
    let mut answered = 0;
    while let Some(m) = c.recv().unwrap() {
        assert_eq!(m.r#type(), MessageType::Response, "{m:?}");
        answered += 1;
    }
    assert_eq!(
        answered, 200,
        "every request sent before the shutdown is answered"
    );
    assert!(p.wait_exit().success());
    let mut p2 = Proc::spawn(
        "db-server",
        &["--listen", "127.0.0.1:0", "--sqlite", db_arg],
    );
    let mut c = FrameClient::connect(p2.listen_addr(), WAIT).unwrap();
    let n = c.execute("SELECT count(*) FROM t", vec![]).unwrap();
    assert_eq!(n.rows[0].values, [Value::int(200)]);
}

#[test]
fn db_server_logs_statements_over_the_slow_query_threshold() {
    let dir = common::TempDir::new("db-slow");
    let db = dir.path("slow.db");
    let mut p = Proc::spawn(
        "db-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--sqlite",
            db.to_str().unwrap(),
            "--slow-query-ms",
            "1",
        ],
    );
    let mut c = FrameClient::connect(p.listen_addr(), WAIT).unwrap();
    let slow = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 300000) SELECT count(*) FROM n";
    c.execute(slow, vec![]).unwrap();
    let line = p.wait_line("Slow query (");
    assert!(
        line.contains("[WARN]") && line.contains("SELECT count(*) FROM n"),
        "{line}"
    );
}

#[test]
fn sigusr1_tells_every_client_to_migrate_to_the_configured_instance() {
    let mut p = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--migrate-to",
            "10.0.0.7:7001",
            "--migrate-after",
            "12",
        ],
    );
    let addr = p.listen_addr();
    let mut clients: Vec<FrameClient> = (0..4)
        .map(|_| FrameClient::connect(addr, WAIT).unwrap())
        .collect();
    for c in &mut clients {
        c.ping(b"here").unwrap();
    }
    p.signal(libc::SIGUSR1);
    for c in &mut clients {
        let m = c.next_message().unwrap();
        assert_eq!(
            (m.r#type(), m.op()),
            (MessageType::Notification, Operation::ServerMigration)
        );
        let note = protocol::wire::ServerMigration::decode(m.data).unwrap();
        assert_eq!(
            (note.new_host.as_str(), note.new_port, note.migrate_after),
            ("10.0.0.7", 7001, 12)
        );
        c.ping(b"still served until it moves").unwrap();
    }
    p.wait_line("SIGUSR1: clients of 2 loop(s) told to move to 10.0.0.7:7001 within 12 s");
}

/// Runs the `client` binary; returns its exit code and stdout.
fn client(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(common::bin_path("client"))
        .args(args)
        .env_remove("NETMOD_TOKEN")
        .env_remove("NETMOD_SECRET")
        .envs(env.iter().copied())
        .output()
        .expect("run client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// test-server on a free port, on db-server at `db`, with the admin secret `pw` and `extra`.
fn test_server_on(db: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--db",
        db,
        "--admin-secret",
        "pw",
    ];
    args.extend_from_slice(extra);
    Proc::spawn("test-server", &args)
}

#[test]
fn the_client_binary_logs_in_and_manages_documents_with_clear_exit_codes() {
    let dir = common::TempDir::new("client-cli");
    let db_file = dir.path("cli.db");
    let (_db, db_addr) = common::spawn_db(&db_file);
    let db_addr = db_addr.to_string();
    let mut ts = test_server_on(&db_addr, &["--threads", "1"]);
    let addr = ts.listen_addr().to_string();
    let a = addr.as_str();

    let (code, out) = client(&["--addr", a, "ping", "--count", "2"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("pong from ")).count(),
        2
    );

    let mut token = String::new();
    common::eventually("admin can log in", || {
        let (code, out) = client(
            &["--addr", a, "--user", "admin", "login"],
            &[("NETMOD_SECRET", "pw")],
        );
        token = out.trim().to_string();
        code == 0
    });
    assert!(token.starts_with("nm1."), "{token}");
    let (code, _) = client(
        &["--addr", a, "--user", "admin", "login"],
        &[("NETMOD_SECRET", "nope")],
    );
    assert_eq!(code, 1, "wrong secret");
    assert_eq!(
        client(&["--addr", a, "sql", "SELECT 1"], &[]).0,
        2,
        "no login given"
    );

    let t = [("NETMOD_TOKEN", token.as_str())];
    assert_eq!(
        client(&["--addr", a, "put", "readme", "hello, world"], &t).0,
        0
    );
    assert_eq!(
        client(&["--addr", a, "get", "readme"], &t),
        (0, "hello, world\n".to_string())
    );
    let (code, out) = client(
        &[
            "--addr",
            a,
            "sql",
            "SELECT name, ?1 + 1 AS n FROM docs",
            "41",
        ],
        &t,
    );
    assert_eq!((code, out.as_str()), (0, "name\tn\nreadme\t42\n"));
    // Read-your-writes: a write's commit index (stderr) passed to --after-index.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin_path("client"))
            .args(["--addr", a])
            .args(args)
            .env("NETMOD_TOKEN", &token)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        )
    };
    let (code, _, err) = run(&[
        "sql",
        "UPDATE docs SET content = 'v2' WHERE name = ?1",
        "readme",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let index: u64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("(commit index ")?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no commit index in {err:?}"));
    assert!(index > 0, "{err}");
    // A read says its index is one it is at least as new as.
    let (_, _, err) = run(&["sql", "SELECT 1"]);
    assert!(err.contains("(as of commit index "), "{err}");
    let at = index.to_string();
    let (code, out, err) = run(&[
        "sql",
        "--after-index",
        &at,
        "SELECT content FROM docs WHERE name = ?1",
        "readme",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "content\nv2\n"), "{err}");
    let (code, out, _) = run(&[
        "sql",
        "--primary",
        "SELECT content FROM docs WHERE name = ?1",
        "readme",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "content\nv2\n"));
    // An index no write produced was never acknowledged: STALE, not an old answer.
    let later = (index + 1_000_000).to_string();
    let (code, _, err) = run(&["sql", "--after-index", &later, "SELECT content FROM docs"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("STALE"), "{err}");
    assert_eq!(client(&["--addr", a, "delete", "readme"], &t).0, 0);
    assert_eq!(
        client(&["--addr", a, "get", "readme"], &t).0,
        4,
        "not found"
    );
    assert_eq!(
        client(&["--addr", a, "sql", "SELEC"], &t).0,
        1,
        "server refusal"
    );

    // Users: the admin adds one, who can then log in; nobody else may add users.
    let (code, out) = client(
        &["--addr", a, "user", "add", "carol"],
        &[
            ("NETMOD_TOKEN", token.as_str()),
            ("NETMOD_NEW_SECRET", "carol-secret"),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "user \"carol\" created\n"));
    let (code, carol) = client(
        &["--addr", a, "--user", "carol", "login"],
        &[("NETMOD_SECRET", "carol-secret")],
    );
    assert_eq!(code, 0);
    let (code, _) = client(
        &["--addr", a, "user", "add", "dave"],
        &[
            ("NETMOD_TOKEN", carol.trim()),
            ("NETMOD_NEW_SECRET", "dave-secret"),
        ],
    );
    assert_eq!(code, 1, "FORBIDDEN for a non-admin");
    let (code, out) = client(&["--addr", a, "user", "remove", "carol"], &t);
    assert_eq!((code, out.as_str()), (0, "user \"carol\" removed\n"));
    assert_eq!(client(&["--addr", a, "user", "remove", "carol"], &t).0, 4);

    // Nothing listening: exit 3.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _) = client(
        &["--addr", &dead.to_string(), "--timeout", "1", "ping"],
        &[],
    );
    assert_eq!(code, 3);
}

#[test]
fn client_watch_follows_a_migration_to_the_new_instance() {
    let mut b = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let b_addr = b.listen_addr();
    let target = b_addr.to_string();
    let mut a = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--migrate-to",
            &target,
        ],
    );
    let a_addr = a.listen_addr().to_string();
    let mut watch = std::process::Command::new(common::bin_path("client"))
        .args(["--addr", &a_addr, "watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        format!("connected to {a_addr}")
    );
    // The watcher's connection may not be registered with a loop yet when "connected" is
    // printed: signal until it hears (each signal tells every client; repeats are harmless).
    let heard = (0..50).find_map(|_| {
        a.signal(libc::SIGUSR1);
        rx.recv_timeout(std::time::Duration::from_millis(200)).ok()
    });
    assert_eq!(
        heard.as_deref(),
        Some(
            format!(
                "server asks to move to 127.0.0.1:{} within 5 s",
                b_addr.port()
            )
            .as_str()
        )
    );
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        format!("connected to {target}")
    );
    // The new instance stops: the notice, said once.
    let stopping = (0..50).find_map(|_| {
        b.signal(libc::SIGTERM);
        rx.recv_timeout(std::time::Duration::from_millis(200)).ok()
    });
    let stopping = stopping.unwrap_or_default();
    assert!(
        stopping.starts_with("server shutting down; reconnect after "),
        "{stopping}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn loadgen_frames_logs_in_and_loads_documents_through_test_server() {
    let dir = common::TempDir::new("lg-frames");
    let db_file = dir.path("frames.db");
    let (_db, db_addr) = common::spawn_db(&db_file);
    let db_addr = db_addr.to_string();
    let mut ts = test_server_on(&db_addr, &[]);
    let addr = ts.listen_addr().to_string();
    // The users table exists once test-server's link has set it up.
    common::eventually("admin can log in", || {
        FrameClient::connect(addr.parse().unwrap(), WAIT)
            .ok()
            .and_then(|mut c| c.login("admin", "pw").ok())
            .is_some()
    });
    for op in ["get", "put", "ping"] {
        let last = loadgen_last_line(&[
            "frames",
            "--addr",
            &addr,
            "--op",
            op,
            "--secret",
            "pw",
            "--docs",
            "20",
            "--conns",
            "4",
            "--pipeline",
            "8",
            "--duration",
            "0.3",
        ]);
        assert!(
            last.starts_with("rps=") && last.ends_with(" errors=0"),
            "{op}: {last}"
        );
    }
    // A wrong secret: loadgen says so and fails.
    let out = common::loadgen(&[
        "frames",
        "--addr",
        &addr,
        "--secret",
        "wrong",
        "--duration",
        "0.1",
    ]);
    assert!(!out.status.success());
}

#[test]
fn sigterm_lets_forwarded_requests_finish_then_exits_zero() {
    let dir = common::TempDir::new("ts-drain");
    let db_file = dir.path("drain.db");
    let (_db, db_addr) = common::spawn_db(&db_file);
    let db_addr = db_addr.to_string();
    let mut ts = test_server_on(&db_addr, &[]);
    let addr = ts.listen_addr();
    let mut c = None;
    common::eventually("admin can log in", || {
        c = FrameClient::connect(addr, WAIT)
            .ok()
            .filter(|c| c.stream().set_nodelay(true).is_ok())
            .and_then(|mut c| c.login("admin", "pw").ok().map(|_| c));
        c.is_some()
    });
    let mut c = c.unwrap();
    // Queries that keep db-server busy for a while, all sent before the signal.
    let slow = protocol::proto::DataRequest {
        kind: Some(protocol::proto::data_request::Kind::Execute(
            protocol::proto::Statement {
                keys: Vec::new(),
                sql: "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                      WHERE x < 200000) SELECT count(*) FROM n"
                    .into(),
                args: vec![],
                named_args: vec![],
            },
        )),
        ..Default::default()
    };
    let ids: Vec<u32> = (0..16)
        .map(|_| {
            let id = c.next_id();
            c.send(&protocol::wire::message(
                MessageType::Request,
                Operation::Data,
                id,
                &slow,
            ))
            .unwrap();
            id
        })
        .collect();
    // A ping answered means test-server has read (and forwarded) everything sent before it.
    let ping = c.next_id();
    c.send(&protocol::wire::message(
        MessageType::Request,
        Operation::Ping,
        ping,
        &protocol::wire::Ping::default(),
    ))
    .unwrap();
    let mut answered = Vec::new();
    loop {
        let m = c.next_message().unwrap();
        if m.message_id == ping && m.op() == Operation::Ping {
            break;
        }
        answered.push(m);
    }
    assert!(
        answered.len() < ids.len(),
        "requests still in flight at the signal"
    );
    ts.signal(libc::SIGTERM);
    let mut notices = 0;
    while let Some(m) = c.recv().unwrap() {
        match (m.r#type(), m.op()) {
            (MessageType::Notification, Operation::ServerShutdown) => notices += 1,
            _ => answered.push(m),
        }
    }
    assert_eq!(notices, 1, "one serverShutdown notice");
    let mut got: Vec<u32> = answered
        .iter()
        .map(|m| {
            assert_eq!(m.r#type(), MessageType::Response, "{m:?}");
            let r = protocol::proto::DataResponse::decode(m.data.clone()).unwrap();
            let Some(protocol::proto::data_response::Kind::Result(res)) = r.kind else {
                panic!("a result: {r:?}");
            };
            assert_eq!(
                res.rows[0].values[0].kind,
                Some(protocol::proto::value::Kind::Integer(200_000))
            );
            m.message_id
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, ids, "every request answered before the close");
    assert!(ts.wait_exit().success());
    ts.wait_line("test-server stopped");
}

/// Runs one of the binaries to its end and gives its exit status and standard error.
fn run_to_end(bin: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(common::bin_path(bin))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NETMOD_ADMIN_SECRET")
        .output()
        .expect("run");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_process_on_a_port_in_use_exits_with_a_clear_error_and_the_first_keeps_serving() {
    let dir = common::TempDir::new("ports");
    let (_db, db_addr) = common::spawn_db(&dir.path("first.db"));
    let mut ts = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db_addr.to_string(),
            "--threads",
            "2",
        ],
    );
    let [frames, http] = ts.listen_addrs().map(|a| a.to_string());
    let (_px, proxy_listen, proxy_admin) = common::spawn_proxy(&[http.parse().unwrap()], &[]);
    let proxy_addrs = [proxy_listen.to_string(), proxy_admin.to_string()];
    let other_db = dir.path("other.db");
    let other_db = other_db.to_str().unwrap();
    let db = db_addr.to_string();
    let attempts: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "db-server",
            vec!["--listen", &db, "--sqlite", other_db],
            db.as_str(),
        ),
        (
            "test-server",
            vec![
                "--listen",
                &frames,
                "--http-listen",
                "127.0.0.1:0",
                "--db",
                &db,
            ],
            frames.as_str(),
        ),
        (
            "test-server",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                &http,
                "--db",
                &db,
            ],
            http.as_str(),
        ),
        (
            "proxy",
            vec![
                "--listen",
                &proxy_addrs[0],
                "--admin",
                "127.0.0.1:0",
                "--backend",
                &http,
            ],
            proxy_addrs[0].as_str(),
        ),
        (
            "proxy",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--admin",
                &proxy_addrs[1],
                "--backend",
                &http,
            ],
            proxy_addrs[1].as_str(),
        ),
        (
            "stack",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--db-listen",
                &db,
                "--proxy-listen",
                "127.0.0.1:0",
                "--proxy-admin",
                "127.0.0.1:0",
                "--sqlite",
                other_db,
                "--duration",
                "0.1",
            ],
            db.as_str(),
        ),
    ];
    for (bin, args, taken) in attempts {
        let (status, stderr) = run_to_end(bin, &args);
        assert!(
            !status.success(),
            "{bin} {args:?} started on a port in use:\n{stderr}"
        );
        let want = format!("address {taken} is already in use");
        assert_eq!(
            stderr.matches(&want).count(),
            1,
            "{bin} {args:?}: {want:?} once in:\n{stderr}"
        );
    }
    // The port is checked before the database is opened: no file was left behind.
    for suffix in ["", "-wal", "-shm"] {
        let f = format!("{other_db}{suffix}");
        assert!(!std::path::Path::new(&f).exists(), "{f} was created");
    }
    // The servers that were there first still serve, on every port.
    let mut c = FrameClient::connect(frames.parse().unwrap(), WAIT).unwrap();
    assert_eq!(c.ping(b"still").unwrap().data.len(), 7);
    let mut d = FrameClient::connect(db_addr, WAIT).unwrap();
    d.execute("SELECT 1", vec![]).unwrap();
    for addr in [&http, &proxy_addrs[0]] {
        let r = common::http::call(
            addr.parse().unwrap(),
            "GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{addr}");
    }
    let r = common::http::call(
        proxy_addrs[1].parse().unwrap(),
        "GET /status HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

/// `stack` as a child with its standard output read line by line.
struct Stack {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: common::TempDir,
}

impl Stack {
    fn spawn(tag: &str, extra: &[&str], rust_log: &str) -> Stack {
        use std::io::BufRead;
        let dir = common::TempDir::new(tag);
        let db = dir.path("stack.db");
        let mut args = STACK_ON_FREE_PORTS.to_vec();
        args.push("--sqlite");
        args.push(db.to_str().unwrap());
        args.extend_from_slice(extra);
        let mut child = std::process::Command::new(common::bin_path("stack"))
            .args(&args)
            .env("RUST_LOG", rust_log)
            .env_remove("NETMOD_ADMIN_SECRET")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.path("stderr")).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Stack {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a line of standard output containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no {needle:?} from stack; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every address stack printed for its servers.
    fn server_addrs(&mut self) -> Vec<std::net::SocketAddr> {
        self.wait_line("proxy: HTTP on");
        self.seen
            .iter()
            .flat_map(|l| l.split([' ', ',', '(', ')']))
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    /// What stack and its servers wrote to standard error so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path("stderr")).unwrap_or_default()
    }

    /// The pid stack printed for a server (`"test-server 1"`, `"proxy"`, …).
    fn pid_of(&mut self, server: &str) -> i32 {
        let line = self.wait_line(&format!("{server}: "));
        line.rsplit("pid ")
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "stack did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until nothing accepts connections on any of `addrs` any more.
fn all_closed(addrs: &[std::net::SocketAddr]) {
    common::eventually("every server of the stack is gone", || {
        addrs
            .iter()
            .all(|a| std::net::TcpStream::connect(a).is_err())
    });
}

#[test]
fn stack_runs_whatever_the_log_level() {
    // It waits on ports, not on log lines a level may hide.
    for level in ["warn", "error", "off"] {
        let mut s = Stack::spawn("stack-level", &["--duration", "0.2"], level);
        let addrs = s.server_addrs();
        assert!(addrs.len() >= 5, "{addrs:?}");
        let st = s.wait_exit();
        assert!(
            st.success(),
            "RUST_LOG={level}: {st}\n{}",
            s.seen.join("\n")
        );
        all_closed(&addrs);
    }
}

#[test]
fn a_signal_to_stack_stops_every_server_it_started() {
    // SIGTERM and SIGHUP in the middle of the load run (loadgen included), SIGINT while
    // `--keep` holds the servers: every server goes, and the exit status says why.
    let cases = [
        (libc::SIGTERM, false, 128 + libc::SIGTERM),
        (libc::SIGHUP, false, 128 + libc::SIGHUP),
        (libc::SIGINT, true, 0),
    ];
    for (sig, keep, want) in cases {
        let extra: &[&str] = if keep {
            &["--keep", "--duration", "0.2"]
        } else {
            &["--duration", "30"]
        };
        let mut s = Stack::spawn("stack-signal", extra, "warn");
        let addrs = s.server_addrs();
        s.wait_line(if keep {
            "servers running"
        } else {
            "running: loadgen"
        });
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(s.child.id() as i32, sig);
        }
        let st = s.wait_exit();
        assert_eq!(st.code(), Some(want), "after signal {sig}");
        all_closed(&addrs);
    }
}

#[test]
fn servers_do_not_outlive_a_killed_stack() {
    let mut s = Stack::spawn("stack-kill", &["--keep", "--duration", "0.2"], "warn");
    s.wait_line("servers running");
    let addrs = s.server_addrs();
    s.child.kill().unwrap(); // SIGKILL: stack can do nothing; the kernel tells the children
    s.wait_exit();
    all_closed(&addrs);
}

#[test]
fn wrong_ports_and_missing_ports_get_errors_a_person_understands() {
    let dir = common::TempDir::new("wrong-ports");
    let (_db, db_addr) = common::spawn_db(&dir.path("w.db"));
    let (mut ts, http) = common::spawn_front(db_addr, &[]);
    let [frames, _] = ts.listen_addrs();
    // HTTP to a frame port (test-server's and db-server's): a 400 in HTTP, saying what it is.
    for addr in [frames, db_addr] {
        let r = common::http::call(addr, "GET /docs/x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 400, "{addr}");
        assert!(r.body.contains("frame protocol"), "{}", r.body);
        assert_eq!(r.header("connection"), Some("close"));
    }
    if common::prerequisite(
        "curl",
        "NETMOD_REQUIRE_CURL",
        common::runs("curl", "--version"),
    ) {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", &format!("http://{frames}/docs/x")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("not HTTP"), "{text}");
    }
    // The frame client on an HTTP port, and an address without its port.
    let run = |addr: &str| {
        let out = std::process::Command::new(common::bin_path("client"))
            .args(["--addr", addr, "ping"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&http.to_string());
    assert_ne!(code, Some(0));
    assert!(err.contains("looks like an HTTP port"), "{err}");
    assert!(!err.contains("exceeds the maximum"), "{err}");
    for bare in ["127.0.0.1", "localhost", "[::1]"] {
        let (code, err) = run(bare);
        assert_eq!(code, Some(2), "{bare}: {err}");
        assert!(err.contains("has no port"), "{bare}: {err}");
    }
}

#[test]
fn dash_v_names_the_binary_and_the_commit_it_was_built_from() {
    for name in common::BINARIES {
        let out = std::process::Command::new(common::bin_path(name))
            .arg("-V")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let want = format!("{name} {} (", env!("CARGO_PKG_VERSION"));
        assert!(text.starts_with(&want), "{name}: {text}");
        assert!(
            text.trim_end().ends_with(')') && !text.contains("()"),
            "{name}: {text}"
        );
    }
}

#[test]
fn tools_default_to_the_right_server_and_check_their_arguments() {
    use std::io::BufRead;
    // Each loadgen mode aims at the server it loads (the first line names it; no server needed).
    for (mode, want) in [("db", "-> 127.0.0.1:7100"), ("ping", "-> 127.0.0.1:7000")] {
        let mut child = std::process::Command::new(common::bin_path("loadgen"))
            .args([mode, "--conns", "1", "--duration", "0.1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(first.contains(want), "loadgen {mode}: {first}");
    }
    // client sql: placeholders and arguments must match, checked before connecting.
    let out = std::process::Command::new(common::bin_path("client"))
        .args([
            "--addr",
            "127.0.0.1:1",
            "sql",
            "SELECT name FROM docs WHERE updated > ?1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1 placeholder(s)") && err.contains("0 argument(s)"),
        "{err}"
    );
}

#[test]
fn stack_keeps_its_data_in_its_data_dir_and_prints_commands_that_work_anywhere() {
    let dir = common::TempDir::new("stack-data");
    let data = dir.path("data");
    let out = std::process::Command::new(common::bin_path("stack"))
        .args(STACK_ON_FREE_PORTS)
        .args(["--duration", "0.1", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path(""))
        .env("RUST_LOG", "warn")
        .env_remove("NETMOD_ADMIN_SECRET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let file = data.join("netmod.db");
    assert!(file.exists(), "no {}", file.display());
    assert!(
        stdout.contains(&format!("SQLite file {}", file.display())),
        "{stdout}"
    );
    assert!(
        !dir.path("netmod.db").exists(),
        "nothing in the current directory"
    );
    let ping = stdout
        .lines()
        .find(|l| l.trim_end().ends_with(" ping") && l.contains("--addr"))
        .unwrap_or_else(|| panic!("a ping command in:\n{stdout}"));
    let client = ping.split_whitespace().next().unwrap();
    assert!(
        std::path::Path::new(client).is_absolute() && std::path::Path::new(client).exists(),
        "{client}"
    );
}

/// `loadgen http` GETs over keep-alive connections (pipelined), prints the same contract line,
/// and counts non-2xx/3xx answers as errors (exit status 1 when nothing succeeded).
#[test]
fn loadgen_http_loads_the_front_and_counts_error_answers() {
    let dir = common::TempDir::new("loadgen-http");
    let (_db, db) = common::spawn_db(&dir.path("h.db"));
    let (_ts, http) = common::spawn_front(db, &[]);
    common::wait_front_ready(http);
    let addr = http.to_string();
    let ok = common::loadgen(&[
        "http",
        "--addr",
        &addr,
        "--path",
        "/health",
        "--conns",
        "4",
        "--pipeline",
        "4",
        "--duration",
        "0.5",
    ]);
    assert!(ok.status.success());
    let last = common::last_line(&ok);
    assert!(
        last.starts_with("rps=") && last.ends_with(" errors=0"),
        "{last}"
    );
    let rps: f64 = last["rps=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rps > 0.0, "{last}");
    let missing = common::loadgen(&[
        "http",
        "--addr",
        &addr,
        "--path",
        "/docs/absent",
        "--conns",
        "2",
        "--duration",
        "0.3",
    ]);
    assert!(!missing.status.success());
    let last = common::last_line(&missing);
    assert!(
        last.starts_with("rps=0.0 ") && !last.ends_with(" errors=0"),
        "{last}"
    );
}

/// Host names work wherever HOST:PORT is documented (resolved once, at start): test-server's
/// `--db`, loadgen's and the client's `--addr`, the proxy's `--backend`.
#[test]
fn host_names_are_accepted_where_host_port_is_documented() {
    let dir = common::TempDir::new("host-names");
    let (_db, db) = common::spawn_db(&dir.path("n.db"));
    let by_name = format!("localhost:{}", db.port());
    let mut ts = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--db",
            &by_name,
        ],
    );
    let [frames, http] = ts.listen_addrs();
    common::wait_front_ready(http);
    let last = loadgen_last_line(&[
        "ping",
        "--addr",
        &format!("localhost:{}", frames.port()),
        "--conns",
        "2",
        "--duration",
        "0.3",
    ]);
    assert!(last.ends_with(" errors=0"), "{last}");
    let (code, out) = client(
        &["--addr", &format!("localhost:{}", frames.port()), "ping"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let (_proxy, listen, _admin) =
        common::spawn_proxy(&[], &["--backend", &format!("localhost:{}", http.port())]);
    common::eventually("the proxy forwards to the backend named by host", || {
        common::http::call(listen, "GET /health HTTP/1.1\r\nHost: p\r\n\r\n").status == 200
    });
}

/// A table setup db-server refuses (here: a users table of the wrong shape; in the cluster
/// run, a conflict between instances setting up at once) is tried again with backoff, so the
/// instance serves once the cause is gone, without waiting for its db link to reconnect.
#[test]
fn a_refused_table_setup_is_tried_again_until_it_succeeds() {
    let dir = common::TempDir::new("setup-retry");
    let (_db, db_addr) = common::spawn_db(&dir.path("s.db"));
    let mut direct = FrameClient::connect(db_addr, WAIT).unwrap();
    direct
        .execute("CREATE TABLE _netmod_users (name TEXT PRIMARY KEY)", vec![])
        .unwrap();
    let db_addr = db_addr.to_string();
    let mut ts = test_server_on(&db_addr, &["--threads", "1"]);
    let addr = ts.listen_addr().to_string();
    let line = ts.wait_line("trying again in");
    assert!(line.contains("_netmod_users on db-server failed"), "{line}");
    direct.execute("DROP TABLE _netmod_users", vec![]).unwrap();
    common::eventually("the admin can log in once the setup went through", || {
        client(
            &["--addr", &addr, "--user", "admin", "login"],
            &[("NETMOD_SECRET", "pw")],
        )
        .0 == 0
    });
}
