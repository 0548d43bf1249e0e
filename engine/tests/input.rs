//! Input on the handler's terms: `Context::wait_for` (no call before the bytes a message needs
//! are here), the per-connection message limit and the `on_oversize` hook that lets a protocol
//! answer before the connection closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use engine::{CloseReason, Config, ConnId, Context, Handler, Server, ServerHandle};

/// 4-byte length-prefixed frames, each answered with its body's length (8 bytes, big-endian).
/// Records every `on_data` call's input length and every close reason.
struct Frames {
    calls: Arc<Mutex<Vec<usize>>>,
    closes: mpsc::Sender<CloseReason>,
    /// Per-connection limit set at accept, if any.
    limit: Option<usize>,
    /// Whether to say how many bytes a partial frame needs.
    hint: bool,
}

impl Handler for Frames {
    type Message = ();
    type Timer = ();

    fn on_accept(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, _: SocketAddr) {
        if let Some(limit) = self.limit {
            ctx.set_max_message(conn, limit);
        }
    }

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        self.calls.lock().unwrap().push(data.len());
        let mut used = 0;
        while let Some(head) = data[used..].first_chunk::<4>() {
            let len = 4 + u32::from_be_bytes(*head) as usize;
            if data.len() - used < len {
                if self.hint {
                    ctx.wait_for(conn, len);
                }
                break;
            }
            let _ = ctx.send(conn, &((len - 4) as u64).to_be_bytes());
            used += len;
        }
        used
    }

    fn on_oversize(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, _buffered: usize) {
        let _ = ctx.send(conn, b"too large\n");
    }

    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        let _ = self.closes.send(reason);
    }
}

struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
    calls: Arc<Mutex<Vec<usize>>>,
    closes: mpsc::Receiver<CloseReason>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            t.join().expect("the loop thread").expect("the server ran");
        }
    }
}

fn start(cfg: Config, limit: Option<usize>, hint: bool) -> Running {
    let server = Server::new(cfg)
        .unwrap()
        .listen("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (tx, closes) = mpsc::channel();
    let c = Arc::clone(&calls);
    let thread = thread::spawn(move || {
        server.run(move |_| Frames {
            calls: Arc::clone(&c),
            closes: tx.clone(),
            limit,
            hint,
        })
    });
    Running {
        addr,
        handle,
        thread: Some(thread),
        calls,
        closes,
    }
}

fn one_loop() -> Config {
    Config::builder().threads(1).build().unwrap()
}

#[test]
fn a_large_message_in_small_pieces_is_offered_once_it_is_whole() {
    let srv = start(one_loop(), None, true);
    let body = vec![7u8; 200_000];
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    // 200 writes of 1000 bytes; without the hint each could be a call that parses nothing.
    for piece in body.chunks(1000) {
        s.write_all(piece).unwrap();
    }
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(u64::from_be_bytes(answer), 200_000);
    let calls = srv.calls.lock().unwrap().clone();
    let partial = calls.iter().filter(|&&n| n < 4 + body.len()).count();
    // The first call (the header and what came with it) asks for the rest; the next one has it.
    assert!(
        partial <= 2,
        "calls before the message was whole: {calls:?}"
    );
    assert_eq!(calls.last(), Some(&(4 + body.len())), "{calls:?}");
}

#[test]
fn input_over_the_limit_is_answered_by_the_handler_then_closed() {
    let cfg = Config::builder()
        .threads(1)
        .max_message_size(16 * 1024)
        .build()
        .unwrap();
    // A handler that does not say what it waits for: the buffer fills to the limit.
    let srv = start(cfg, None, false);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            let _ = s.write_all(&(100u32 * 1024).to_be_bytes());
            // More than the limit; the server stops reading at it, then discards the rest.
            let _ = s.write_all(&[3u8; 40 * 1024]);
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got, b"too large\n");
    assert_eq!(srv.closes.recv().unwrap(), CloseReason::TooLarge);
}

#[test]
fn waiting_for_more_than_the_limit_ends_at_once() {
    let cfg = Config::builder()
        .threads(1)
        .max_message_size(16 * 1024)
        .build()
        .unwrap();
    let srv = start(cfg, None, true);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    // Only a header announcing 100 KiB: the handler waits for all of it, which is over the
    // limit the moment it asks, so the answer comes without a byte of the body.
    s.write_all(&(100u32 * 1024).to_be_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"too large\n");
    assert_eq!(srv.closes.recv().unwrap(), CloseReason::TooLarge);
}

#[test]
fn a_connection_limit_set_by_the_handler_overrides_the_config() {
    // Default config (1 MiB); the handler gives each connection 16 KiB.
    let srv = start(one_loop(), Some(16 * 1024), true);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            // A 15 KiB frame (within the limit), then one announcing 64 KiB (over it).
            let _ = s.write_all(&(15u32 * 1024).to_be_bytes());
            let _ = s.write_all(&[1u8; 15 * 1024]);
            let _ = s.write_all(&(64u32 * 1024).to_be_bytes());
            let _ = s.write_all(&[2u8; 64 * 1024]);
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(&got[..8], &(15u64 * 1024).to_be_bytes());
    assert_eq!(&got[8..], b"too large\n");
    assert_eq!(srv.closes.recv().unwrap(), CloseReason::TooLarge);
}
