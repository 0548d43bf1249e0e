//! `engine/examples/mini_redis.rs` against a real `redis-server`: every exchange of the
//! engine's case list sent to both, the bytes compared; and `redis-cli` used against
//! mini_redis. Needs `redis-server` and `redis-cli` (ignored without them, required where
//! `NETMOD_REQUIRE_REDIS=1`, as in CI).

#[path = "../engine/tests/support/mini_redis_cases.rs"]
mod cases;
#[path = "../engine/examples/mini_redis.rs"]
#[allow(dead_code)]
mod mini_redis;

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Everything the server at `addr` sends for `case` (its `QUIT` answer taken off).
fn exchange(addr: SocketAddr, case: &cases::Case) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(case.send).unwrap();
    if !case.closes {
        s.write_all(b"QUIT\r\n").unwrap();
    }
    let mut got = Vec::new();
    // A server that closes with bytes of ours still unread (redis-server after a protocol
    // error or QUIT, when the rest arrived after its read) makes the kernel answer with a
    // reset; what it wrote before is still read first, and the comparison below judges it.
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{}: reading the reply from {addr}: {e}", case.name),
    }
    if !case.closes && got.ends_with(b"+OK\r\n") {
        got.truncate(got.len() - 5);
    }
    got
}

/// A redis-server of its own on a free port, without persistence; stopped when dropped.
struct Redis {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Redis {
    fn start(dir: &common::TempDir) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path(""))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        common::eventually("redis-server listens", || TcpStream::connect(addr).is_ok());
        Redis { child, addr }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mini_redis in-process on a free port.
fn mini_redis() -> (SocketAddr, engine::ServerHandle) {
    let server = mini_redis::server("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    std::thread::spawn(move || server.run(mini_redis::loops()));
    (addr, handle)
}

#[test]
#[cfg_attr(
    not(netmod_redis),
    ignore = "needs redis-server and redis-cli (Debian's redis-server, redis-tools)"
)]
fn mini_redis_answers_every_case_as_redis_server_does_byte_for_byte() {
    let dir = common::TempDir::new("redis");
    let redis = Redis::start(&dir);
    let (mini, handle) = mini_redis();
    for case in cases::CASES {
        let theirs = exchange(redis.addr, case);
        let ours = exchange(mini, case);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{}",
            case.name
        );
        assert_eq!(
            ours, case.reply,
            "{}: the case list says otherwise",
            case.name
        );
    }
    handle.shutdown();
}

#[test]
#[cfg_attr(
    not(netmod_redis),
    ignore = "needs redis-server and redis-cli (Debian's redis-server, redis-tools)"
)]
fn redis_cli_works_against_mini_redis() {
    let (mini, handle) = mini_redis();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &mini.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello world\n");
    assert_eq!(cli(&["INCR", "n"]), "1\n");
    assert_eq!(cli(&["DEL", "greeting", "n"]), "2\n");
    assert_eq!(cli(&["GET", "greeting"]), "\n");
    assert!(
        cli(&["NOPE"]).starts_with("ERR unknown command 'NOPE', with args beginning with: \n"),
        "redis-cli prints the error"
    );
    handle.shutdown();
}
