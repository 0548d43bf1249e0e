//! `examples/mini_redis.rs` on real sockets: every exchange of `support/mini_redis_cases.rs`
//! (Redis 7's replies, byte for byte), the same bytes arriving one at a time, and the store
//! shared by every loop. The example runs in-process, included as a module.

#[path = "support/mini_redis_cases.rs"]
mod cases;
#[path = "../examples/mini_redis.rs"]
#[allow(dead_code)]
mod mini_redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// mini_redis on a free port with `threads` loops, stopped when dropped.
struct Running {
    addr: SocketAddr,
    handle: engine::ServerHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(threads: usize) -> Running {
        let server = mini_redis::server("127.0.0.1:0".parse().unwrap(), threads).unwrap();
        let addr = server.local_addrs()[0];
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run(mini_redis::loops())));
        Running {
            addr,
            handle,
            thread,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let ran = t.join();
            if !std::thread::panicking() {
                ran.expect("a loop panicked").expect("the server ran");
            }
        }
    }
}

/// Sends `case.send` (in pieces of `piece` bytes, each written on its own), then `QUIT` unless
/// the case ends the connection itself; everything the server sent until it closed.
fn exchange(addr: SocketAddr, case: &cases::Case, piece: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    for part in case.send.chunks(piece) {
        s.write_all(part).unwrap();
    }
    if !case.closes {
        s.write_all(b"QUIT\r\n").unwrap();
    }
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    if !case.closes {
        assert!(
            got.ends_with(b"+OK\r\n"),
            "{}: no answer to QUIT in {:?}",
            case.name,
            String::from_utf8_lossy(&got)
        );
        got.truncate(got.len() - b"+OK\r\n".len());
    }
    got
}

#[test]
fn every_exchange_gets_redis_reply_byte_for_byte() {
    let server = Running::start(2);
    for case in cases::CASES {
        let got = exchange(server.addr, case, usize::MAX);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(case.reply),
            "{}",
            case.name
        );
    }
}

#[test]
fn commands_split_over_many_reads_get_the_same_replies() {
    let server = Running::start(1);
    for case in cases::CASES {
        // Keys are the case's own: the second run sees what the first left, so only cases
        // whose replies do not depend on earlier state run twice here.
        if case.name.starts_with("incr") || case.name.starts_with("set nx") {
            continue;
        }
        for piece in [1, 3] {
            let got = exchange(server.addr, case, piece);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(case.reply),
                "{} in pieces of {piece}",
                case.name
            );
        }
    }
}

#[test]
fn every_loop_sees_one_store_and_a_large_value_arrives_whole() {
    let server = Running::start(2);
    // Connections spread over both loops (SO_REUSEPORT); each reads what the others wrote.
    let mut conns: Vec<TcpStream> = (0..8).map(|_| server.connect()).collect();
    let value: Vec<u8> = (0..700 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut set = format!("*3\r\n$3\r\nSET\r\n$5\r\nshare\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    conns[0].write_all(&set).unwrap();
    let mut ok = [0; 5];
    conns[0].read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let mut want = format!("${}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\n");
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(b"GET share\r\nINCR hits\r\n").unwrap();
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == want, "connection {i}: the value differs");
        let n = format!(":{}\r\n", i + 1);
        let mut hits = vec![0; n.len()];
        c.read_exact(&mut hits).unwrap();
        assert_eq!(String::from_utf8_lossy(&hits), n, "connection {i}");
    }
}
