//! A small HTTP/1.1 backend for proxy tests: a thread per connection on a real loopback
//! socket, answering with its name so that tests see where each request went.
//!
//! ```text
//! GET /health            200 {"status":"ok"}
//! GET /slow/<ms>         waits, then 200 {"backend":…,"path":…}
//! GET /headers           200 {"backend":…,"headers":{lower-case name: value}}
//! GET /big/<bytes>       200, a chunked body of that many bytes
//! PUT|POST /count        200 {"backend":…,"received":<body bytes>} (the body is not kept)
//! GET /status/<code>     that status
//! GET /raw               200 with CR/LF, a NUL, invalid UTF-8 and an escape in its body
//! GET /close             closes the connection without answering
//! GET /ws (Upgrade)      101, then echoes every byte back
//! anything else          200 {"backend":…,"path":…}
//! ```
//!
//! Knobs: [`TestBackend::set_health`] makes `/health` answer another status (real traffic
//! unaffected); [`TestBackend::set_dropping`] makes it close every connection after reading a
//! request, before any response byte.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::http1::{self, BodyReader};

/// A running test backend; stopped (listener and connections closed) when dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    knobs: Arc<Knobs>,
}

/// How a backend misbehaves on purpose.
#[derive(Debug)]
struct Knobs {
    health: AtomicU16,
    dropping: AtomicBool,
}

impl TestBackend {
    /// Starts a backend named `name` on a free port.
    pub fn start(name: &str) -> TestBackend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts one on `addr` (e.g. the port of one stopped earlier).
    pub fn start_on(name: &str, addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).expect("bind test backend");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let knobs = Arc::new(Knobs {
            health: AtomicU16::new(200),
            dropping: AtomicBool::new(false),
        });
        let (h, s, o, n, k) = (
            Arc::clone(&hits),
            Arc::clone(&stop),
            Arc::clone(&open),
            name.to_string(),
            Arc::clone(&knobs),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(c) = stream.try_clone() {
                    o.lock().unwrap().push(c);
                }
                let (h, n, k) = (Arc::clone(&h), n.clone(), Arc::clone(&k));
                std::thread::spawn(move || {
                    // The clone kept for `kill` holds the socket open: shut it down here.
                    serve(&stream, &n, &h, &k);
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        TestBackend {
            addr,
            name: name.to_string(),
            hits,
            stop,
            open,
            knobs,
        }
    }

    /// `/health` answers `status` from now on.
    pub fn set_health(&self, status: u16) {
        self.knobs.health.store(status, Ordering::SeqCst);
    }

    /// Every request from now on is read and its connection closed without an answer.
    pub fn set_dropping(&self, on: bool) {
        self.knobs.dropping.store(on, Ordering::SeqCst);
    }

    /// Requests served, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection, like a killed process.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn respond(mut s: &TcpStream, status: u16, body: &str, close: bool) -> std::io::Result<()> {
    let head_only = HEAD_REQUEST.with(|h| h.get());
    let mut out = Vec::new();
    http1::write_response(
        &mut out,
        status,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        !close,
        head_only,
    );
    s.write_all(&out)
}

thread_local! {
    /// The request being answered is a HEAD (one connection per thread): no body goes out.
    static HEAD_REQUEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn serve(mut s: &TcpStream, name: &str, hits: &AtomicUsize, knobs: &Knobs) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // The head.
        let (head, n) = loop {
            match http1::parse_request_head(&buf, 64 * 1024) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return,
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        buf.drain(..n);
        HEAD_REQUEST.with(|h| h.set(head.method() == "HEAD"));
        if head.expectation() == http1::Expectation::Continue
            && buf.is_empty()
            && s.write_all(http1::CONTINUE).is_err()
        {
            return;
        }
        // The body, counted and dropped as it arrives.
        let mut reader = BodyReader::new(head.body, u64::MAX);
        loop {
            let used = match reader.advance(&buf, None) {
                Ok(u) => u,
                Err(_) => return,
            };
            buf.drain(..used);
            if reader.is_done() {
                break;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let path = head.path().to_string();
        if knobs.dropping.load(Ordering::SeqCst) {
            return;
        }
        if path != "/health" {
            hits.fetch_add(1, Ordering::SeqCst);
        }
        let close = !head.keep_alive();
        let plain = serde_json::json!({ "backend": name, "path": path }).to_string();
        let r = if path == "/health" {
            respond(
                s,
                knobs.health.load(Ordering::SeqCst),
                r#"{"status":"ok"}"#,
                close,
            )
        } else if let Some(ms) = path.strip_prefix("/slow/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            respond(s, 200, &plain, close)
        } else if path == "/headers" {
            let headers: serde_json::Map<String, serde_json::Value> = head
                .headers()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v).into_owned();
                    (k.to_ascii_lowercase(), v.into())
                })
                .collect();
            let body = serde_json::json!({ "backend": name, "headers": headers }).to_string();
            respond(s, 200, &body, close)
        } else if let Some(n) = path.strip_prefix("/big/") {
            let mut left: usize = n.parse().unwrap_or(0);
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let piece = vec![b'x'; 64 * 1024];
            let mut r = s.write_all(&std::mem::take(&mut out));
            while left > 0 && r.is_ok() {
                let k = left.min(piece.len());
                let mut part = format!("{k:x}\r\n").into_bytes();
                part.extend_from_slice(&piece[..k]);
                part.extend_from_slice(b"\r\n");
                r = s.write_all(&part);
                left -= k;
            }
            r.and_then(|()| s.write_all(b"0\r\n\r\n"))
        } else if path == "/count" {
            let body =
                serde_json::json!({ "backend": name, "received": reader.payload() }).to_string();
            respond(s, 200, &body, close)
        } else if let Some(code) = path.strip_prefix("/status/") {
            respond(s, code.parse().unwrap_or(500), &plain, close)
        } else if path == "/raw" {
            // Bytes a log must not copy as they are: CR/LF that would start a forged line,
            // a NUL, invalid UTF-8, a terminal escape.
            let body: &[u8] = b"ok\r\n[2024-01-01 00:00:00][INFO] forged line\x00\xff\x1b[31m";
            let mut out = Vec::new();
            http1::write_response(&mut out, 200, &[], body, !close, head.method() == "HEAD");
            s.write_all(&out)
        } else if path == "/close" {
            return;
        } else if path == "/ws" && head.has_token("connection", "upgrade") {
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            let _ = s.write_all(&buf);
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => {
                        if s.write_all(&chunk[..k]).is_err() {
                            return;
                        }
                    }
                }
            }
        } else {
            respond(s, 200, &plain, close)
        };
        if r.is_err() || close {
            return;
        }
    }
}
