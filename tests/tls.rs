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
use engine::tls::{rustls, TlsListener};
use engine::{CloseReason, ConnId, Context, ErrorKind, Handler};
use netmod::tls::ClientStream;

type Reasons = Arc<Mutex<Vec<CloseReason>>>;

/// Echoes what it reads, recording why sessions closed.
struct Echo {
    reasons: Reasons,
}

impl Handler for Echo {
    type Message = ();
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
    let cfg = engine::Config {
        threads: 2,
        tls_handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
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

#[test]
fn outbound_tls_connections_verify_the_server_and_report_after_the_handshake() {
    let certs = Certs::temp("dial");
    let reasons = Reasons::default();
    let server = echo_server(TlsListener::new(certs.server_config(false)), &reasons);
    let (tx, rx) = mpsc::channel();
    let good = certs.client_config();
    let targets = vec![(server.addr, good)];
    let _dialer = start(
        engine::Config {
            threads: 1,
            ..Default::default()
        },
        move |_| Dialer {
            targets: targets.clone(),
            events: tx.clone(),
        },
    );
    let got: Vec<String> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, ["connected", "data ping", "closed Local"]);

    // A server whose certificate the dialer does not trust: no on_connect, a TLS close.
    let (tx, rx) = mpsc::channel();
    let rogue = certs.rogue_client_config();
    let targets = vec![(server.addr, rogue)];
    let _dialer = start(
        engine::Config {
            threads: 1,
            ..Default::default()
        },
        move |_| Dialer {
            targets: targets.clone(),
            events: tx.clone(),
        },
    );
    let got = rx.recv_timeout(WAIT).unwrap();
    assert!(
        got.starts_with("tls failed") && got.contains("UnknownIssuer"),
        "{got}"
    );
}
