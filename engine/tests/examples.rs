//! The examples in `examples/` run as a user would run them: each is started as a process on
//! an ephemeral port, spoken to over a real socket, and stopped with SIGTERM (a graceful drain
//! and exit status 0).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// target/<profile>/examples/, with the examples built up to date (a `cargo test --test
/// examples` alone does not build them).
fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>/deps/");
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut build = Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--quiet",
                "--examples",
                "--package",
                "netmod-engine",
            ]);
            without_test_env(&mut build);
            if profile.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            assert!(build.status().expect("cargo build --examples").success());
        }
        profile.join("examples")
    })
}

/// Removes what Cargo set for this test run from a child `cargo build`'s environment: build
/// scripts that watch such a variable (ring's watches CARGO_MANIFEST_DIR and OUT_DIR) would
/// otherwise see it change and rebuild on every run.
fn without_test_env(build: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo_test = [
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_MANIFEST_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name);
        if set_by_cargo_test {
            build.env_remove(name);
        }
    }
}

/// A running example, stopped (SIGTERM) when the test ends.
struct Example {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Example {
    fn start(name: &str) -> Example {
        let mut child = Command::new(examples_dir().join(name))
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the example prints its address");
        let addr = first
            .split_whitespace()
            .last()
            .map(|a| a.trim_start_matches("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Example {
            child,
            addr,
            stdout,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to the example");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        s
    }

    /// SIGTERM, then the exit status: 0 after a graceful drain.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started and has not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().expect("wait for the example");
        assert!(status.success(), "the example exited with {status}");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn echo_sends_every_byte_back() {
    let ex = Example::start("echo");
    let mut s = ex.connect();
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = s.try_clone().expect("clone");
    let data = sent.clone();
    let w = std::thread::spawn(move || writer.write_all(&data));
    let mut got = vec![0; sent.len()];
    s.read_exact(&mut got).expect("the echo");
    w.join().expect("writer").expect("write");
    assert_eq!(got, sent);
    ex.stop();
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0; 4];
    s.read_exact(&mut len).expect("frame length");
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("frame body");
    body
}

#[test]
fn frames_answers_each_request_from_its_worker_thread_and_ticks() {
    let mut ex = Example::start("frames");
    let mut s = ex.connect();
    // Several requests in one write, one split across two writes: framing, not packets.
    let mut burst = frame(b"hello");
    burst.extend(frame(b"world"));
    s.write_all(&burst).expect("write");
    let split = frame(b"in two parts");
    s.write_all(&split[..6]).expect("write");
    assert_eq!(read_frame(&mut s), b"HELLO");
    assert_eq!(read_frame(&mut s), b"WORLD");
    s.write_all(&split[6..]).expect("write");
    assert_eq!(read_frame(&mut s), b"IN TWO PARTS");
    // The periodic timer reports what was answered.
    let mut line = String::new();
    ex.stdout.read_line(&mut line).expect("the rate line");
    assert!(line.contains("requests in the last second"), "{line:?}");
    // A frame over the limit closes the connection (before any allocation for it).
    s.write_all(&u32::MAX.to_be_bytes()).expect("write");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).expect("closed"), 0);
    ex.stop();
}

#[test]
fn http_hello_keeps_the_connection_alive_and_answers_pipelined_requests() {
    let ex = Example::start("http_hello");
    let mut s = ex.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let one =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
    let mut got = vec![0; one.len() * 2];
    s.read_exact(&mut got).expect("two answers");
    assert_eq!(&got[..one.len()], one);
    assert_eq!(&got[one.len()..], one);
    // Same connection, a last request that asks to close.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("answer, then close");
    assert_eq!(rest, one);
    let mut bad = ex.connect();
    bad.write_all(b"NOT HTTP\x00\r\n\r\n").expect("write");
    let mut answer = String::new();
    bad.read_to_string(&mut answer).expect("400, then close");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    ex.stop();
}
