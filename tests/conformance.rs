//! HTTP/1.1 conformance (RFC 9110/9112): a battery of single requests (framing, the smuggling
//! cases nginx and HAProxy refuse, Host rules, request-target forms), and the semantics of
//! HEAD, pipelining after a write, `Expect: 100-continue` and long heads, each run against
//! test-server's HTTP front, through the proxy, and against nginx, whose answers are asserted
//! too (nginx is required where `NETMOD_REQUIRE_NGINX=1`, as in CI).

mod common;

use std::io::Write;
use std::net::SocketAddr;

use common::http::{connect, read_head_resp, read_resp};
use common::{Proc, TempDir};

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Served normally: a 2xx (every target serves the battery's path).
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
        case(
            "HTTP/1.1 without Host",
            p("GET {path} HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Status(400),
        ),
        case(
            "two Host fields",
            p("GET {path} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Status(400),
        ),
        case(
            "two identical Host fields",
            p("GET {path} HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            Status(400),
        ),
        case(
            "Host with a list value",
            p("GET {path} HTTP/1.1\r\nHost: a,b\r\n\r\n"),
            Status(400),
        ),
        case("HTTP/1.0 without Host", p("GET {path} HTTP/1.0\r\n\r\n"), Served),
        case(
            "absolute-form target",
            p("GET http://127.0.0.1{path} HTTP/1.1\r\nHost: a\r\n\r\n"),
            Served,
        ),
        case(
            "Content-Length: 5, 5",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"),
            Status(400),
        ),
        case(
            "two identical Content-Length",
            p("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            Status(400),
        ),
        case("HEAD", p("HEAD {path} HTTP/1.1\r\nHost: a\r\n\r\n"), Served),
    ]
}

/// Where nginx (1.22, `return 200` locations, default limits) answers the battery otherwise,
/// each difference checked: it answers an oversized head with 400 rather than 431, has no
/// header-count limit, and answers a `Host` list with 200 (its host check allows commas).
const NGINX_DIFFERS: &[(&str, Expect)] = &[
    ("head over 8192 bytes", Expect::Status(400)),
    ("200 header fields", Expect::Served),
    ("Host with a list value", Expect::Served),
];

/// Sends each case on its own connection: the status answered (0: closed without one).
fn run(addr: SocketAddr, cases: &[Case]) -> Vec<u16> {
    cases
        .iter()
        .map(|c| {
            let mut s = connect(addr);
            let _ = s.write_all(&c.raw);
            let mut buf = Vec::new();
            let r = if c.raw.starts_with(b"HEAD ") {
                read_head_resp(&mut s, &mut buf)
            } else {
                read_resp(&mut s, &mut buf)
            };
            r.map_or(0, |r| r.status)
        })
        .collect()
}

fn verdicts(who: &str, cases: &[Case], got: &[u16], differs: &[(&str, Expect)]) -> Vec<String> {
    cases
        .iter()
        .zip(got)
        .filter_map(|(c, &g)| {
            let want = differs
                .iter()
                .find(|(name, _)| *name == c.name)
                .map_or(c.expect, |(_, e)| *e);
            let ok = match want {
                Expect::Status(s) => g == s,
                Expect::Served => (200..300).contains(&g),
            };
            (!ok).then(|| format!("{who}: {:?} expected {want:?}, got {g}", c.name))
        })
        .collect()
}

/// nginx, or `None` where it is not installed and not required.
fn nginx(name: &str) -> Option<common::nginx::Nginx> {
    common::nginx::Nginx::installed().then(|| common::nginx::Nginx::start(name, "64k"))
}

/// The nginx column of the tests above runs only where nginx does: this shows as ignored
/// where it did not.
#[test]
#[cfg_attr(
    not(netmod_nginx),
    ignore = "needs nginx: the nginx column of the conformance tests"
)]
fn the_nginx_column_ran() {
    assert!(common::nginx::Nginx::installed());
}

#[test]
fn the_http_front_the_proxy_and_nginx_pass_the_battery() {
    let dir = TempDir::new("conformance");
    let db_file = dir.path("c.db");
    let (_db, db_addr) = common::spawn_db(&db_file);
    let (_ts, front) = common::spawn_front(db_addr, &["--max-body", "65536"]);
    common::wait_front_ready(front);
    let backend = common::backend::TestBackend::start("b");
    let (_px, proxy, _) = common::spawn_proxy(&[backend.addr], &["--max-body", "65536"]);

    let mut wrong = Vec::new();
    let front_cases = battery("/health", 70_000);
    wrong.extend(verdicts(
        "front",
        &front_cases,
        &run(front, &front_cases),
        &[],
    ));
    let proxy_cases = battery("/anything", 70_000);
    let before = backend.hits();
    wrong.extend(verdicts(
        "proxy",
        &proxy_cases,
        &run(proxy, &proxy_cases),
        &[],
    ));
    // Only what the proxy served reached the backend: nothing it refused (no Host, two Hosts,
    // a Content-Length list, ...) was forwarded.
    let served = proxy_cases
        .iter()
        .filter(|c| c.expect == Expect::Served)
        .count();
    assert_eq!(
        backend.hits() - before,
        served,
        "requests forwarded by the proxy"
    );
    if let Some(nginx) = nginx("n") {
        let got = run(nginx.addr, &proxy_cases);
        wrong.extend(verdicts("nginx", &proxy_cases, &got, NGINX_DIFFERS));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// test-server's front on a fresh database, and the proxy in front of it: the two ways a
/// client meets the front.
struct Front {
    front: SocketAddr,
    proxy: SocketAddr,
    _procs: Vec<Proc>,
    _dir: TempDir,
}

impl Front {
    /// The front directly, through the proxy, and through nginx in front of the front (when
    /// installed): each client-facing way in, by name; keep the nginx while using them.
    fn targets_with_nginx(
        &self,
        tag: &str,
    ) -> (
        Vec<(&'static str, SocketAddr)>,
        Option<common::nginx::Nginx>,
    ) {
        let nginx =
            common::nginx::Nginx::installed().then(|| common::nginx::Nginx::proxy(tag, self.front));
        let mut targets = vec![("front", self.front), ("proxy", self.proxy)];
        if let Some(n) = &nginx {
            targets.push(("nginx", n.addr));
        }
        (targets, nginx)
    }
}

fn front_and_proxy(extra: &[&str]) -> Front {
    let dir = TempDir::new("conformance-front");
    let (db, db_addr) = common::spawn_db(&dir.path("f.db"));
    let (ts, front) = common::spawn_front(db_addr, extra);
    common::wait_front_ready(front);
    let (px, proxy, _) = common::spawn_proxy(&[front], &[]);
    Front {
        front,
        proxy,
        _procs: vec![db, ts, px],
        _dir: dir,
    }
}

fn put(name: &str, content: &str) -> String {
    let body = format!(r#"{{"content":"{content}"}}"#);
    format!(
        "PUT /docs/{name} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn head_is_answered_like_get_without_a_body_and_the_connection_stays_in_step() {
    let f = front_and_proxy(&[]);
    assert_eq!(common::http::call(f.front, &put("h", "hello")).status, 201);
    let nginx = nginx("head");
    let mut targets = vec![
        ("front", f.front, "/docs/h", "/docs/missing"),
        ("proxy", f.proxy, "/docs/h", "/docs/missing"),
    ];
    if let Some(n) = &nginx {
        targets.push(("nginx", n.addr, "/docs/h", "/health"));
    }
    for (who, addr, found, other) in targets {
        for path in [found, other, "/health", "/metrics"] {
            let get = common::http::call(addr, &format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
            // HEAD, then GET on the same connection: a body sent after the HEAD answer would be
            // read as the start of the next answer.
            let mut s = connect(addr);
            s.write_all(
                format!("HEAD {path} HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let mut buf = Vec::new();
            let head = read_head_resp(&mut s, &mut buf).expect("an answer to HEAD");
            assert_eq!(head.status, get.status, "{who}: HEAD {path}");
            if path != "/metrics" {
                assert_eq!(
                    head.header("content-length"),
                    Some(get.body.len().to_string().as_str()),
                    "{who}: HEAD {path} tells the GET body's length"
                );
            }
            let next = read_resp(&mut s, &mut buf).expect("the next answer");
            assert_eq!(next.status, 200, "{who}: after HEAD {path}: {next:?}");
            assert!(
                next.body.starts_with('{'),
                "{who}: after HEAD {path}: {}",
                next.body
            );
        }
    }
    // An error answer to HEAD has no body either: a method the front refuses.
    for addr in [f.front, f.proxy] {
        let mut s = connect(addr);
        s.write_all(
            b"HEAD /nowhere HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_head_resp(&mut s, &mut buf).unwrap().status, 404);
        assert_eq!(read_resp(&mut s, &mut buf).unwrap().status, 200);
    }
}

#[test]
fn pipelined_writes_and_reads_act_as_if_sent_one_by_one() {
    let f = front_and_proxy(&[]);
    // nginx as the reverse proxy in front of the same front: the column it is measured by.
    let (targets, _nginx) = f.targets_with_nginx("pipeline");
    for (who, addr) in targets {
        for i in 0..10 {
            let name = format!("{who}{i}");
            let get = format!("GET /docs/{name} HTTP/1.1\r\nHost: a\r\n\r\n");
            let delete = format!("DELETE /docs/{name} HTTP/1.1\r\nHost: a\r\n\r\n");
            let all = [
                put(&name, "one"),
                get.clone(),
                put(&name, "two"),
                get.clone(),
                delete,
                get,
            ]
            .concat();
            let mut s = connect(addr);
            s.write_all(all.as_bytes()).unwrap();
            let mut buf = Vec::new();
            let mut next = || read_resp(&mut s, &mut buf).expect("an answer");
            assert_eq!(next().status, 201, "{who} {i}");
            let r = next();
            assert_eq!(
                (r.status, r.body.contains(r#""content":"one""#)),
                (200, true),
                "{who} {i}: {r:?}"
            );
            assert_eq!(next().status, 200, "{who} {i}");
            let r = next();
            assert_eq!(
                (r.status, r.body.contains(r#""content":"two""#)),
                (200, true),
                "{who} {i}: {r:?}"
            );
            assert_eq!(next().status, 204, "{who} {i}");
            assert_eq!(
                next().status,
                404,
                "{who} {i}: read after the pipelined DELETE"
            );
        }
    }
}

#[test]
fn expect_100_continue_gets_100_before_the_body_or_the_refusal_at_once() {
    let f = front_and_proxy(&[]);
    let body = r#"{"content":"continued"}"#;
    let mut targets = vec![("front", f.front, "/docs/c"), ("proxy", f.proxy, "/docs/c")];
    let nginx = nginx("expect");
    if let Some(n) = &nginx {
        targets.push(("nginx", n.addr, "/anything"));
    }
    for (who, addr, path) in targets {
        let mut s = connect(addr);
        s.write_all(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let mut buf = Vec::new();
        // Without the 100 this read times out (the client would stall until its own timeout).
        let interim = read_resp(&mut s, &mut buf).expect("100 Continue before the body");
        assert_eq!(interim.status, 100, "{who}");
        s.write_all(body.as_bytes()).unwrap();
        let done = read_resp(&mut s, &mut buf).expect("the final answer");
        assert!((200..300).contains(&done.status), "{who}: {done:?}");
    }
    // Refused by its head alone: the final status comes at once, no 100, and the body is not
    // waited for.
    for (who, addr) in [("front", f.front), ("proxy", f.proxy)] {
        for (head, status) in [
            ("PUT /nowhere HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", 404),
            ("POST /docs/c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", 405),
            ("PUT /docs/c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n", 413),
        ] {
            let mut s = connect(addr);
            s.write_all(head.as_bytes()).unwrap();
            let r = read_resp(&mut s, &mut Vec::new()).expect("a final answer");
            assert_eq!(r.status, status, "{who}: {head:?}");
        }
    }
    // Writes without a token on a front that wants one: 401 before the body.
    let dir = TempDir::new("expect-auth");
    let (_db, db_addr) = common::spawn_db(&dir.path("e.db"));
    let mut ts = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--db", &db_addr.to_string()],
    );
    let [_, http] = ts.listen_addrs();
    common::wait_front_ready(http);
    let mut s = connect(http);
    s.write_all(
        b"PUT /docs/c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_resp(&mut s, &mut Vec::new()).unwrap().status, 401);
}

#[test]
fn a_head_the_front_takes_directly_also_passes_through_the_proxy() {
    let f = front_and_proxy(&[]);
    // And through nginx in front of the front, as users deploy it.
    let nginx = common::nginx::Nginx::installed()
        .then(|| common::nginx::Nginx::proxy("long-head", f.front));
    let base = "GET /health HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n".len();
    for size in [8000, 8100, 8150, 8190, 8192] {
        let raw = format!(
            "GET /health HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(size - base)
        );
        assert_eq!(raw.len(), size);
        for (who, addr) in [("front", f.front), ("proxy", f.proxy)] {
            assert_eq!(
                common::http::call(addr, &raw).status,
                200,
                "{who}: a head of {size} bytes"
            );
        }
        if let Some(n) = &nginx {
            // nginx forwards `Host` rewritten to the upstream's address (`127.0.0.1:PORT`
            // instead of `a`), so the longest heads no longer fit behind it.
            let growth = f.front.to_string().len() - "a".len();
            let want = if size + growth <= 8192 { 200 } else { 431 };
            let got = common::http::call(n.addr, &raw).status;
            assert_eq!(got, want, "nginx: {size} bytes");
        }
    }
    let over = format!(
        "GET /health HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(8193 - base)
    );
    for addr in [f.front, f.proxy] {
        assert_eq!(common::http::call(addr, &over).status, 431);
    }
}

#[test]
fn absolute_form_targets_are_routed_by_their_path() {
    let f = front_and_proxy(&[]);
    assert_eq!(
        common::http::call(f.front, &put("abs", "absolute")).status,
        201
    );
    let (targets, _nginx) = f.targets_with_nginx("absolute");
    for (who, addr) in targets {
        let r = common::http::call(
            addr,
            &format!(
                "GET http://{}/docs/abs HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
                f.front
            ),
        );
        assert_eq!(r.status, 200, "{who}: {r:?}");
        assert!(r.body.contains("absolute"), "{who}: {}", r.body);
    }
}
