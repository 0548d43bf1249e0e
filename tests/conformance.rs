//! HTTP/1.1 conformance battery (RFC 9110/9112 framing and the smuggling cases nginx and
//! HAProxy refuse), run against test-server's HTTP front and the proxy, and — when nginx is
//! installed — against nginx, printing where nginx answers differently.

mod common;

use std::io::Write;
use std::net::SocketAddr;

use common::http::{connect, read_resp};
use common::{Proc, TempDir};

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Served normally: any status but 400, 408, 413, 414, 431, 501 (the server's own answer to
    /// the resource, e.g. 200 or 404).
    Served,
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, raw: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        raw: raw.into(),
        expect,
    }
}

/// The battery, for a server whose body limit is below `over_body` bytes and whose head limit
/// is 8192 bytes. `path` is a resource the server serves.
fn battery(path: &str, over_body: usize) -> Vec<Case> {
    use Expect::{Served, Status};
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let long_head = format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let body = format!("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {over_body}\r\n\r\n");
    let mut many_headers = format!("GET {path} HTTP/1.1\r\nHost: a\r\n");
    for i in 0..200 {
        many_headers.push_str(&format!("X-H{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let p = |s: &str| s.replace("{path}", path);
    vec![
        case("plain GET", p("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"), Served),
        case("bare LF line endings", p("GET {path} HTTP/1.1\nHost: a\n\n"), Served),
        case(
            "Content-Length and Transfer-Encoding",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Status(400),
        ),
        case(
            "two different Content-Length",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Status(400),
        ),
        case(
            "Content-Length not a number",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"),
            Status(400),
        ),
        case(
            "negative Content-Length",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            Status(400),
        ),
        case(
            "Transfer-Encoding: chunked, chunked",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            Status(501),
        ),
        case(
            "Transfer-Encoding: gzip",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Status(501),
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            p("PUT {path} HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Status(400),
        ),
        case(
            "chunk size not hex",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            Status(400),
        ),
        case(
            "runaway chunk size",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"),
            Status(400),
        ),
        case(
            "NUL in a header value",
            p("GET {path} HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n"),
            Status(400),
        ),
        case(
            "CR in a header value",
            p("GET {path} HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"),
            Status(400),
        ),
        case(
            "whitespace before the colon",
            p("GET {path} HTTP/1.1\r\nHost : a\r\n\r\n"),
            Status(400),
        ),
        case(
            "obs-fold",
            p("GET {path} HTTP/1.1\r\nHost: a\r\nX-A: a\r\n  b\r\n\r\n"),
            Status(400),
        ),
        case("garbage", "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", Status(400)),
        case("request line over 8192 bytes", long_line, Status(414)),
        case("head over 8192 bytes", long_head, Status(431)),
        case("200 header fields", many_headers, Status(431)),
        case("body over the limit", body, Status(413)),
    ]
}

/// Sends each case on its own connection: the status answered (0: closed without one).
fn run(addr: SocketAddr, cases: &[Case]) -> Vec<u16> {
    cases
        .iter()
        .map(|c| {
            let mut s = connect(addr);
            let _ = s.write_all(&c.raw);
            read_resp(&mut s, &mut Vec::new()).map_or(0, |r| r.status)
        })
        .collect()
}

fn verdicts(who: &str, cases: &[Case], got: &[u16]) -> Vec<String> {
    cases
        .iter()
        .zip(got)
        .filter(|(c, &g)| match c.expect {
            Expect::Status(s) => g != s,
            Expect::Served => [0, 400, 408, 413, 414, 431, 501].contains(&g),
        })
        .map(|(c, g)| format!("{who}: {:?} expected {:?}, got {g}", c.name, c.expect))
        .collect()
}

#[test]
fn the_http_front_and_the_proxy_pass_the_battery() {
    let dir = TempDir::new("conformance");
    let db_file = dir.path("c.db");
    let (_db, db_addr) = common::spawn_db(&db_file);
    let (_ts, front) = common::spawn_front(db_addr, &["--max-body", "65536"]);
    common::eventually("the front is ready", || {
        common::http::call(front, "GET /health HTTP/1.1\r\nHost: a\r\n\r\n").status == 200
    });
    let backend = common::backend::TestBackend::start("b");
    let mut px = Proc::spawn(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--max-body",
            "65536",
            "--metrics-interval",
            "0",
            "--backend",
            &backend.addr.to_string(),
        ],
    );
    let proxy = px.listen_addr();

    let mut wrong = Vec::new();
    let front_cases = battery("/docs/x", 70_000);
    wrong.extend(verdicts("front", &front_cases, &run(front, &front_cases)));
    let proxy_cases = battery("/anything", 70_000);
    wrong.extend(verdicts("proxy", &proxy_cases, &run(proxy, &proxy_cases)));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    if common::nginx::Nginx::installed() {
        // The same cases against nginx (client_max_body_size 64k): print where it differs.
        let nginx = common::nginx::Nginx::start("n", "64k");
        let got = run(nginx.addr, &proxy_cases);
        let ours = run(proxy, &proxy_cases);
        for ((c, n), o) in proxy_cases.iter().zip(&got).zip(&ours) {
            if n != o {
                eprintln!("nginx differs: {:?}: nginx {n}, ours {o}", c.name);
            }
        }
    }
}
