//! TLS 1.3 on a listener and on an outbound connection, under the same buffers as plain TCP:
//! the handler sees plaintext both ways; plain text on a TLS port gets the configured reply.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};

use engine::tls::TlsListener;
use engine::{Config, ConnId, Context, Handler};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

#[path = "support/running.rs"]
mod running;
use running::WAIT;

/// A self-signed certificate for `localhost` and the configs that use it.
fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let server = engine::tls::server_config_builder()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = engine::tls::client_config_builder()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

struct Echo;

impl Handler for Echo {
    type Message = ();
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        let _ = ctx.send(conn, data);
        data.len()
    }
}

fn tls_echo(server: Arc<rustls::ServerConfig>) -> running::Running {
    let srv = engine::Server::new(Config::builder().threads(1).build().unwrap())
        .unwrap()
        .listen_tls(
            "127.0.0.1:0".parse().unwrap(),
            TlsListener {
                config: server,
                plaintext_reply: b"this port speaks TLS\n".to_vec(),
            },
        )
        .unwrap();
    running::run(srv, |_| Echo)
}

#[test]
fn a_tls_session_carries_small_and_large_messages_both_ways() {
    let (server, client) = configs();
    let srv = tls_echo(server);
    let tcp = TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn =
        rustls::ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    // Larger than a read, a write chunk and a TLS record.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tls.write_all(&big).unwrap();
    let mut got = vec![0u8; big.len()];
    tls.read_exact(&mut got).unwrap();
    assert!(got == big, "the large message came back changed");
}

#[test]
fn plain_text_on_a_tls_port_gets_the_configured_reply_and_a_close() {
    let (server, _) = configs();
    let srv = tls_echo(server);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got, b"this port speaks TLS\n");
}

/// Opens a TLS connection to `target` at start, sends a greeting, reports what comes back.
struct Dialer {
    target: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
    got: mpsc::Sender<Vec<u8>>,
}

impl Handler for Dialer {
    type Message = ();
    type Timer = ();
    fn on_start(&mut self, ctx: &mut Context<'_, ()>) {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ctx
            .connect_tls(self.target, Arc::clone(&self.client), name)
            .unwrap();
        // Queued before the handshake; written once it is done.
        let _ = ctx.send(conn, b"over tls");
    }
    fn on_data(&mut self, _: &mut Context<'_, ()>, _: ConnId, data: &[u8]) -> usize {
        let _ = self.got.send(data.to_vec());
        data.len()
    }
}

#[test]
fn an_outbound_tls_connection_verifies_the_server_and_carries_plaintext() {
    let (server, client) = configs();
    let echo = tls_echo(server);
    let (tx, rx) = mpsc::channel();
    let target = echo.addr;
    let _dialer = running::start(Config::builder().threads(1).build().unwrap(), move |_| {
        Dialer {
            target,
            client: Arc::clone(&client),
            got: tx.clone(),
        }
    });
    let mut got = Vec::new();
    while got.len() < 8 {
        got.extend(rx.recv_timeout(WAIT).expect("the echo came back"));
    }
    assert_eq!(got, b"over tls");
}
