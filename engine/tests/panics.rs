//! The engine's panic policy (crate docs, "Panics"): a handler that panics stops the whole
//! server with an error, closes the connections of every loop, and its loop's mailbox refuses
//! messages; nothing hangs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use engine::{Config, ConnId, Context, Handler, LoopHandle, Server};

/// Echoes, but panics on the byte `!`.
struct Fragile;

impl Handler for Fragile {
    type Message = ();
    type Timer = ();

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        assert!(!data.contains(&b'!'), "the handler met a '!'");
        let _ = ctx.send(conn, data);
        data.len()
    }
}

#[test]
fn a_panicking_handler_stops_the_server_with_an_error_and_closes_every_connection() {
    let server = Server::new(
        Config::builder()
            .threads(2)
            .build()
            .expect("a valid engine config"),
    )
    .unwrap()
    .listen("127.0.0.1:0".parse().unwrap())
    .unwrap();
    let addr = server.local_addrs()[0];
    let mailboxes: Vec<LoopHandle<()>> = (0..2).map(|i| server.loop_handle(i)).collect();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(server.run(|_| Fragile));
    });
    // Connections on both loops (SO_REUSEPORT spreads them), each answered.
    let mut conns: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"hi").unwrap();
            let mut echo = [0; 2];
            s.read_exact(&mut echo).unwrap();
            assert_eq!(&echo, b"hi");
            s
        })
        .collect();
    conns[0].write_all(b"!").unwrap();
    let ran = done
        .recv_timeout(Duration::from_secs(10))
        .expect("Server::run returned after the panic");
    let e = ran.expect_err("a panic is an error of Server::run");
    assert!(
        e.to_string()
            .contains("a handler panicked: the handler met a '!'"),
        "{e}"
    );
    // Every connection, on either loop, is closed: a read ends (EOF or reset), none hangs.
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0; 16];
        match c.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("connection {i} got {n} bytes after the panic"),
        }
    }
    // Messages to the loops are refused, not queued for nobody.
    assert!(mailboxes
        .iter()
        .all(|m| matches!(m.post(()), Err(engine::PostError::Closed(())))));
}
