//! TLS in the engine: listeners and outbound connections with rustls, over real loopback sockets
//! and certificates made at test time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tls::{localhost, Certs};
use common::{eventually, start, start_tls, WAIT};
use engine::tls::TlsListener;
use engine::{CloseReason, ConnId, Context, ErrorKind, Handler};
use shared::tls::ClientStream;

type Reasons = Arc<Mutex<Vec<CloseReason>>>;

/// Echoes what it reads, recording why sessions closed.
struct Echo {
    reasons: Reasons,
}

impl Handler for Echo {
    type Message = ();
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        assert!(ctx.is_tls(conn));
        let _ = ctx.send(conn, data);
        data.len()
    }
    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        self.reasons.lock().unwrap().push(reason);
    }
}

fn echo_server(listener: TlsListener, reasons: &Reasons) -> common::Running {
    let r = Arc::clone(reasons);
    let cfg = engine::Config::builder()
        .threads(2)
        .tls_handshake_timeout(Duration::from_millis(300))
        .build()
        .expect("a valid engine config");
    start_tls(cfg, listener, move |_| Echo {
        reasons: Arc::clone(&r),
    })
}

fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> ClientStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    ClientStream::tls(tcp, config, localhost()).unwrap()
}

#[test]
fn a_tls_session_carries_large_and_small_messages_both_ways() {
    let certs = Certs::temp("echo");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(false)), &reasons);
    let mut c = tls_client(server.addr, certs.client_config());
    c.handshake().unwrap();
    // 4 MiB in 64 KiB pieces, each echoed before the next: every piece is more than rustls
    // buffers at once and reaches the high-water mark, so partial TLS writes, backpressure and
    // records split across reads are all exercised.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    for piece in data.chunks(64 << 10) {
        c.write_all(piece).unwrap();
        let mut back = vec![0u8; piece.len()];
        c.read_exact(&mut back).unwrap();
        assert!(back == piece, "echoed bytes differ");
    }
    // Then many small exchanges on the same session.
    for i in 0..200u32 {
        let msg = format!("message {i};");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    drop(c);
    eventually("the session closes", || !reasons.lock().unwrap().is_empty());
    let stats = server.handle.stats();
    assert_eq!(stats.error(ErrorKind::Tls), 0);
}

#[test]
fn plain_text_on_a_tls_port_gets_the_configured_reply_and_a_close() {
    let certs = Certs::temp("plain");
    let reasons = Reasons::default();
    let listener = TlsListener {
        config: certs.server_config(false),
        plaintext_reply: b"use TLS\n".to_vec(),
    };
    let server = echo_server(listener, &reasons);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got, b"use TLS\n");
    eventually("the close is recorded", || {
        reasons
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!(r, CloseReason::Tls(why) if why.contains("plain text")))
    });
    assert_eq!(server.handle.stats().error(ErrorKind::Tls), 1);
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_the_handshake_cleanly() {
    let certs = Certs::temp("untrusted");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(false)), &reasons);
    let mut c = tls_client(server.addr, certs.rogue_client_config());
    let err = c.handshake().unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer"),
        "unexpected error: {err}"
    );
    // The server saw the client's alert and closed with a TLS reason; it still serves others.
    eventually("the server closes the session", || {
        reasons
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!(r, CloseReason::Tls(_)))
    });
    let mut good = tls_client(server.addr, certs.client_config());
    good.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    good.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
}

#[test]
fn a_handshake_that_never_finishes_is_dropped_after_the_handshake_timeout() {
    let certs = Certs::temp("stall");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(false)), &reasons);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // The first byte of a handshake record, then nothing.
    s.write_all(&[0x16]).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes without answering");
    eventually("closed for the handshake timeout", || {
        reasons
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!(r, CloseReason::Tls(why) if why.contains("timed out")))
    });
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let certs = Certs::temp("mtls");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(true)), &reasons);
    // Without a client certificate: refused (TLS 1.3 reports it on the first read).
    let mut anon = tls_client(server.addr, certs.client_config());
    let _ = anon.write_all(b"hello");
    let mut buf = [0u8; 5];
    let err = anon.read_exact(&mut buf).unwrap_err();
    assert!(
        err.to_string().contains("CertificateRequired") || err.to_string().contains("alert"),
        "unexpected error: {err}"
    );
    // With one: served.
    let mut ok = tls_client(server.addr, certs.client_config_with_cert());
    ok.write_all(b"hello").unwrap();
    ok.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

/// Dials TLS servers on start and reports what happened.
struct Dialer {
    targets: Vec<(SocketAddr, Arc<rustls::ClientConfig>)>,
    events: mpsc::Sender<String>,
}

impl Handler for Dialer {
    type Message = ();
    type Timer = ();
    fn on_start(&mut self, ctx: &mut Context<'_, ()>) {
        for (addr, config) in &self.targets {
            ctx.connect_tls(*addr, Arc::clone(config), localhost())
                .unwrap();
        }
    }
    fn on_connect(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        self.events.send("connected".into()).unwrap();
        ctx.send(conn, b"ping").unwrap();
    }
    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        if data.len() < 4 {
            return 0;
        }
        self.events
            .send(format!("data {}", String::from_utf8_lossy(data)))
            .unwrap();
        ctx.close(conn);
        data.len()
    }
    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        let what = match reason {
            CloseReason::Tls(why) => format!("tls failed: {why}"),
            other => format!("closed {other:?}"),
        };
        self.events.send(what).unwrap();
    }
}

/// A one-loop engine that dials `addr` over TLS with `config` on start; what happens comes
/// back on the channel.
fn dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (common::Running, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let targets = vec![(addr, config)];
    let running = start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| Dialer {
            targets: targets.clone(),
            events: tx.clone(),
        },
    );
    (running, rx)
}

#[test]
fn outbound_tls_connections_verify_the_server_and_report_after_the_handshake() {
    let certs = Certs::temp("dial");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(false)), &reasons);
    let (_dialer, rx) = dial(server.addr, certs.client_config());
    let got: Vec<String> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, ["connected", "data ping", "closed Local"]);

    // A server whose certificate the dialer does not trust: no on_connect, a TLS close.
    let (_dialer, rx) = dial(server.addr, certs.rogue_client_config());
    let got = rx.recv_timeout(WAIT).unwrap();
    assert!(
        got.starts_with("tls failed") && got.contains("UnknownIssuer"),
        "{got}"
    );
}

// ---- The servers with TLS, as real child processes ----

const ADMIN: &str = "tls admin secret";

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// db-server requiring client certificates (mutual TLS).
fn spawn_tls_db(certs: &Certs, file: &std::path::Path) -> (common::Proc, SocketAddr) {
    let mut p = common::Proc::spawn(
        "db-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--sqlite",
            path(file),
            "--tls-cert",
            path(&certs.server_cert),
            "--tls-key",
            path(&certs.server_key),
            "--tls-client-ca",
            path(&certs.ca),
        ],
    );
    let addr = p.listen_addr();
    (p, addr)
}

/// test-server with `extra` flags: the process, its frame address and its HTTP address.
fn spawn_test_server(db: SocketAddr, extra: &[&str]) -> (common::Proc, SocketAddr, SocketAddr) {
    let db = db.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--threads",
        "1",
        "--admin-secret",
        ADMIN,
        "--reconnect-base",
        "0.05",
        "--reconnect-max",
        "0.2",
    ];
    args.extend_from_slice(extra);
    let mut p = common::Proc::spawn("test-server", &args);
    let line = p.wait_line("test-server listening on ");
    let addr_after = |after: &str| -> SocketAddr {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address after {after:?} in {line}"))
    };
    let (frames, http) = (addr_after("listening on "), addr_after(" and "));
    (p, frames, http)
}

/// One HTTP/1.1 exchange over TLS (the response is read to the close).
fn https(addr: SocketAddr, certs: &Certs, request: &str) -> (u16, String) {
    let mut s = tls_client(addr, certs.client_config());
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // Servers close after `Connection: close` without a close_notify sometimes; what came
        // before is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the response: {e}"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn ping_login_and_crud_run_over_tls_with_mutual_tls_to_db_server() {
    let certs = Certs::temp("stack");
    let dir = common::TempDir::new("tls-stack");
    let (_db, db) = spawn_tls_db(&certs, &dir.path("tls.db"));
    let (mut ts, frames, http) = spawn_test_server(
        db,
        &[
            "--tls-cert",
            path(&certs.server_cert),
            "--tls-key",
            path(&certs.server_key),
            "--db-tls-ca",
            path(&certs.ca),
            "--db-tls-cert",
            path(&certs.client_cert),
            "--db-tls-key",
            path(&certs.client_key),
        ],
    );
    let line = ts.wait_line("listening on");
    assert!(
        line.contains("(frames, TLS)") && line.contains("(HTTP, TLS)") && line.ends_with("(TLS)"),
        "{line}"
    );

    // Frames: ping, login, then create/read/update/delete.
    let mut c =
        tools::client::FrameClient::connect_tls(frames, WAIT, certs.client_config(), localhost())
            .unwrap();
    c.ping(b"over tls").unwrap();
    let mut token = None;
    eventually("admin logs in once the TLS db link is up", || {
        token = c.login("admin", ADMIN).ok();
        token.is_some()
    });
    let token = token.unwrap().token;
    use protocol::proto::Value;
    c.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        vec![],
    )
    .unwrap();
    c.execute(
        "INSERT INTO notes (body) VALUES (?1)",
        vec![Value::text("a")],
    )
    .unwrap();
    c.execute(
        "UPDATE notes SET body = ?1 WHERE id = 1",
        vec![Value::text("b")],
    )
    .unwrap();
    let r = c.execute("SELECT body FROM notes", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::text("b")]);
    c.execute("DELETE FROM notes WHERE id = 1", vec![]).unwrap();
    let r = c.execute("SELECT body FROM notes", vec![]).unwrap();
    assert!(r.rows.is_empty());

    // The HTTP front over TLS: write with the token, read back, health.
    let (status, _) = https(
        http,
        &certs,
        &format!(
            "PUT /docs/secure HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 22\r\nConnection: close\r\n\r\n{{\"content\": \"sealed!\"}}"
        ),
    );
    assert_eq!(status, 201);
    let (status, body) = https(
        http,
        &certs,
        "GET /docs/secure HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.contains("sealed!"), "{body}");
    let (status, _) = https(
        http,
        &certs,
        "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);

    // Plain clients on the TLS ports: told so, in the clear, and closed.
    let mut plain = tools::client::FrameClient::connect(frames, WAIT).unwrap();
    plain.send_raw(b"\0\0\0\x02hi").unwrap();
    let m = plain.next_message().expect("an ERROR frame in the clear");
    assert_eq!(m.r#type(), protocol::wire::MessageType::Error);
    let e = <protocol::wire::ErrorBody as prost::Message>::decode(m.data).unwrap();
    assert_eq!(e.code(), protocol::wire::ErrorCode::BadMessage);
    assert!(e.message.contains("TLS"), "{}", e.message);
    assert!(plain.recv().unwrap().is_none(), "then closed");
    let resp = common::http::call(http, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("TLS"), "{}", resp.body);
    // Both refusals are counted as TLS errors in /metrics.
    let (status, body) = https(
        http,
        &certs,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let tls_errors: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("netmod_errors_total{kind=\"tls\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TLS error count in\n{body}"));
    assert!(tls_errors >= 2, "{tls_errors}");
}

#[test]
fn a_db_link_without_a_client_certificate_or_with_the_wrong_ca_fails_cleanly() {
    let certs = Certs::temp("badlink");
    let dir = common::TempDir::new("tls-badlink");
    let (_db, db) = spawn_tls_db(&certs, &dir.path("tls.db"));
    let cases: [(&str, &[&str]); 2] = [
        ("no client certificate", &["--db-tls-ca", path(&certs.ca)]),
        (
            "db-server's CA not trusted",
            &[
                "--db-tls-ca",
                path(&certs.rogue_ca),
                "--db-tls-cert",
                path(&certs.client_cert),
                "--db-tls-key",
                path(&certs.client_key),
            ],
        ),
    ];
    for (what, flags) in cases {
        let (mut ts, frames, _) = spawn_test_server(db, flags);
        ts.wait_line("TLS failed");
        // Clients get a clear answer, not a hang: db-server is unavailable to this instance.
        let mut c = tools::client::FrameClient::connect(frames, WAIT).unwrap();
        match c.login("admin", ADMIN) {
            Err(tools::client::ClientError::Server { code, .. }) => {
                assert_eq!(code, protocol::wire::ErrorCode::Unavailable, "{what}")
            }
            other => panic!("{what}: expected UNAVAILABLE, got {other:?}"),
        }
    }
}

#[test]
fn the_proxy_terminates_tls_and_tells_backends_the_client_used_https() {
    let certs = Certs::temp("proxy");
    let backend = common::backend::TestBackend::start("b1");
    let (mut p, addr) = spawn_tls_proxy(&certs, backend.addr);
    assert!(p.wait_line("proxy listening on").contains("(https)"));
    let (status, body) = https(
        addr,
        &certs,
        "GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{body}");
    assert_eq!(seen["backend"], "b1");
    // ALPN: a client offering h2 and http/1.1 is given http/1.1.
    let mut alpn = rustls::ClientConfig::clone(&certs.client_config());
    alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut c = tls_client(addr, Arc::new(alpn));
    c.handshake().unwrap();
    match &c {
        ClientStream::Tls(s) => assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..])),
        ClientStream::Plain(_) => unreachable!(),
    }
    drop(c);
    // Plain HTTP to the TLS port: a 400 with a JSON body, nothing forwarded.
    let resp = common::http::call(addr, "GET /headers HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("TLS"), "{}", resp.body);
    assert_eq!(backend.hits(), 1);

    // loadgen's HTTP load over TLS: every answer good with the CA, none without it.
    let load = |ca: &std::path::Path| {
        let out = common::loadgen(&[
            "http",
            "--addr",
            &addr.to_string(),
            "--path",
            "/x",
            "--conns",
            "2",
            "--duration",
            "0.3",
            "--tls-ca",
            path(ca),
        ]);
        (out.status.success(), common::last_line(&out))
    };
    let (ok, last) = load(&certs.ca);
    assert!(
        ok && last.ends_with(" errors=0") && !last.starts_with("rps=0.0 "),
        "{last}"
    );
    assert!(backend.hits() > 1);
    let (ok, last) = load(&certs.rogue_ca);
    assert!(!ok && last.starts_with("rps=0.0 "), "{last}");
}

/// The proxy terminating TLS with the test certificate, in front of `backend`.
fn spawn_tls_proxy(certs: &Certs, backend: SocketAddr) -> (common::Proc, SocketAddr) {
    let tls = [
        "--tls-cert",
        path(&certs.server_cert),
        "--tls-key",
        path(&certs.server_key),
    ];
    let (p, addr, _) = common::spawn_proxy(&[backend], &tls);
    (p, addr)
}

/// test-server with TLS on its frame port only (no db-server behind it): the process and the
/// frame address.
fn spawn_tls_frames(cert: &std::path::Path, key: &std::path::Path) -> (common::Proc, SocketAddr) {
    let mut ts = common::Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--tls-cert",
            path(cert),
            "--tls-key",
            path(key),
            "--tls-on",
            "frames",
        ],
    );
    let addr = ts.listen_addr();
    (ts, addr)
}

#[test]
fn loadgen_and_the_client_speak_tls_and_refuse_an_untrusted_server() {
    let certs = Certs::temp("tools");
    let (_ts, addr) = spawn_tls_frames(&certs.server_cert, &certs.server_key);
    let addr = addr.to_string();
    let run = |ca: &std::path::Path| {
        let out = common::loadgen(&[
            "ping",
            "--addr",
            &addr,
            "--conns",
            "4",
            "--duration",
            "0.3",
            "--tls-ca",
            path(ca),
        ]);
        (out.status.success(), common::last_line(&out))
    };
    let (ok, last) = run(&certs.ca);
    assert!(ok, "{last}");
    assert!(last.starts_with("rps="), "{last}");
    assert!(last.ends_with(" errors=0"), "{last}");

    // Against a server it cannot verify, every connection is an error and the run fails.
    let (ok, last) = run(&certs.rogue_ca);
    assert!(!ok);
    assert!(
        last.starts_with("rps=0.0 ") && !last.ends_with(" errors=0"),
        "{last}"
    );

    let client = |ca: &std::path::Path| {
        std::process::Command::new(common::bin_path("client"))
            .args(["--addr", &addr, "--tls-ca", path(ca), "ping"])
            .output()
            .unwrap()
    };
    let ok = client(&certs.ca);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = client(&certs.rogue_ca);
    assert_eq!(
        bad.status.code(),
        Some(3),
        "a failed handshake is a failed connect"
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// Sends a large greeting the moment a connection is accepted, before its handshake is done.
struct Greeter;

impl Handler for Greeter {
    type Message = ();
    type Timer = ();
    fn on_accept(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, _: SocketAddr) {
        // More than rustls holds before the handshake (64 KiB): the rest must wait, not fail.
        let greeting: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        ctx.send(conn, &greeting).unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_, ()>, _: ConnId, data: &[u8]) -> usize {
        data.len()
    }
}

#[test]
fn output_queued_before_the_handshake_ends_is_sent_after_it_whole() {
    let certs = Certs::temp("greet");
    let server = start_tls(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        TlsListener::new(certs.server_config(false)),
        |_| Greeter,
    );
    let mut c = tls_client(server.addr, certs.client_config());
    let mut got = vec![0u8; 200_000];
    c.read_exact(&mut got).unwrap();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u32 % 253) as u8),
        "greeting corrupted"
    );
    assert_eq!(server.handle.stats().error(ErrorKind::Io), 0);
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let certs = Certs::temp("reload");
    let (cert, key) = (certs.dir.join("live.pem"), certs.dir.join("live.key"));
    std::fs::copy(&certs.server_cert, &cert).unwrap();
    std::fs::copy(&certs.server_key, &key).unwrap();
    let (mut ts, addr) = spawn_tls_frames(&cert, &key);
    let handshake = |config: Arc<rustls::ClientConfig>| tls_client(addr, config).handshake();
    handshake(certs.client_config()).unwrap();
    // A session opened before the reload keeps working after it.
    let mut before = tls_client(addr, certs.client_config());
    before.handshake().unwrap();

    // Rotate to the pair the rogue CA signed.
    std::fs::copy(&certs.rogue_cert, &cert).unwrap();
    std::fs::copy(&certs.rogue_key, &key).unwrap();
    ts.signal(libc::SIGHUP);
    ts.wait_line("TLS certificate reloaded");
    handshake(certs.rogue_client_config()).unwrap();
    assert!(handshake(certs.client_config()).is_err());
    tools::client::FrameClient::connect_tls(addr, WAIT, certs.client_config(), localhost())
        .unwrap_err();
    before.write_all(b"\0\0\0\0").unwrap(); // an empty frame: a BAD_MESSAGE answer, over TLS
    let mut answer = [0u8; 4];
    before.read_exact(&mut answer).unwrap();

    // A broken file: the reload fails, the current pair stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    ts.signal(libc::SIGHUP);
    ts.wait_line("TLS certificate not reloaded");
    handshake(certs.rogue_client_config()).unwrap();
}

/// `openssl s_client` against `addr` limited to one protocol version: whether the handshake
/// completed, and its output.
fn openssl_handshake(addr: SocketAddr, certs: &Certs, version: &str) -> (bool, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
            path(&certs.ca),
            version,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    drop(child.stdin.take()); // EOF: s_client ends after the handshake
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = text.contains("Verify return code: 0 (ok)") && !text.contains("alert");
    (done, text)
}

#[test]
#[cfg_attr(not(netmod_openssl), ignore = "needs openssl (the command)")]
fn tls_1_2_clients_are_refused_and_tls_1_3_ones_served() {
    if !common::prerequisite(
        "openssl",
        "NETMOD_REQUIRE_OPENSSL",
        common::runs("openssl", "version"),
    ) {
        return;
    }
    let certs = Certs::temp("versions");
    let (_ts, frames) = spawn_tls_frames(&certs.server_cert, &certs.server_key);
    let backend = common::backend::TestBackend::start("b");
    let (_p, proxy) = spawn_tls_proxy(&certs, backend.addr);
    for addr in [frames, proxy] {
        let (ok13, text13) = openssl_handshake(addr, &certs, "-tls1_3");
        assert!(
            ok13 && text13.contains("TLSv1.3"),
            "{addr}: TLS 1.3 refused:\n{text13}"
        );
        let (ok12, text12) = openssl_handshake(addr, &certs, "-tls1_2");
        assert!(!ok12, "{addr}: a TLS 1.2 handshake completed:\n{text12}");
        assert!(
            text12.contains("alert"),
            "{addr}: refused with an alert:\n{text12}"
        );
    }
}
