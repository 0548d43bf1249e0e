//! The `proxy` binary against real backends on loopback: distribution under every strategy,
//! upgrades, forwarded headers, pipelining, streaming, errors, the admin API, health checks
//! with a backend killed and restarted, TCP mode in front of test-server, and nginx backends.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::backend::TestBackend;
use common::http::{call, connect, read_resp, Resp};
use common::{Proc, WAIT};

struct ProxyProc {
    p: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// Starts the proxy binary (one loop, checks every 100 ms, no metric lines) with `args` added.
fn proxy(args: &[&str]) -> ProxyProc {
    let mut all: Vec<&str> = args.to_vec();
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--admin", "127.0.0.1:0"),
        ("--threads", "1"),
        ("--check-interval", "0.1"),
        ("--metrics-interval", "0"),
    ] {
        if !args.contains(&flag) {
            all.extend([flag, value]);
        }
    }
    let mut p = Proc::spawn("proxy", &all);
    let line = p.wait_line("proxy listening on ");
    let word = |after: &str| -> SocketAddr {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address after {after:?} in {line}"))
    };
    ProxyProc {
        addr: word("listening on "),
        admin: word(" and "),
        p,
    }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

fn backend_of(r: &Resp) -> String {
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON body");
    v["backend"].as_str().unwrap_or_default().to_string()
}

fn admin(p: &ProxyProc, method: &str, path: &str, body: &str) -> Resp {
    call(
        p.admin,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Sends `n` GETs for `path` on one keep-alive connection; the backends that answered.
fn spread(addr: SocketAddr, path: &str, n: usize) -> HashMap<String, usize> {
    let mut s = connect(addr);
    let mut buf = Vec::new();
    let mut seen = HashMap::new();
    for _ in 0..n {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_resp(&mut s, &mut buf).expect("an answer");
        assert_eq!(r.status, 200, "{}", r.body);
        *seen.entry(backend_of(&r)).or_insert(0) += 1;
    }
    seen
}

fn addr_arg(b: &TestBackend) -> String {
    b.addr.to_string()
}

#[test]
fn round_robin_and_weights_spread_requests_as_configured() {
    let bs: Vec<TestBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| TestBackend::start(n))
        .collect();
    let args: Vec<String> = bs
        .iter()
        .flat_map(|b| ["--backend".into(), addr_arg(b)])
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = proxy(&refs);
    let seen = spread(p.addr, "/", 30);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");

    let w = [
        "--backend",
        &format!("{},weight=3", bs[0].addr),
        "--backend",
        &format!("{},weight=1", bs[1].addr),
        "--strategy",
        "weighted_round_robin",
    ]
    .map(str::to_string);
    let wrefs: Vec<&str> = w.iter().map(String::as_str).collect();
    let q = proxy(&wrefs);
    let seen = spread(q.addr, "/", 40);
    assert_eq!((seen["a"], seen["b"]), (30, 10), "{seen:?}");
}

#[test]
fn least_connections_sends_new_requests_away_from_a_busy_backend() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let p = proxy(&[
        "--backend",
        &addr_arg(&a),
        "--backend",
        &addr_arg(&b),
        "--strategy",
        "least_connections",
    ]);
    let addr = p.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow/1500"));
    common::eventually("the slow request reached a backend", || {
        a.hits() + b.hits() == 1
    });
    let (busy, free) = if a.hits() == 1 { (&a, &b) } else { (&b, &a) };
    let seen = spread(p.addr, "/", 12);
    assert_eq!(seen.get(&free.name), Some(&12), "{seen:?}");
    assert_eq!(busy.hits(), 1);
    assert_eq!(slow.join().unwrap().status, 200);
}

#[test]
fn consistent_hashing_keeps_each_key_on_one_backend_and_moves_few_when_one_joins() {
    let bs: Vec<TestBackend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| TestBackend::start(n))
        .collect();
    let p = proxy(&[
        "--backend",
        &addr_arg(&bs[0]),
        "--backend",
        &addr_arg(&bs[1]),
        "--backend",
        &addr_arg(&bs[2]),
        "--strategy",
        "consistent_hash",
        "--hash-key",
        "header:X-User",
    ]);
    let where_is = |user: usize| {
        backend_of(&call(
            p.addr,
            &format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: user-{user}\r\n\r\n"),
        ))
    };
    let before: Vec<String> = (0..90).map(where_is).collect();
    for (u, b) in before.iter().enumerate().take(20) {
        assert_eq!(&where_is(u), b, "user-{u} moved without a change");
    }
    let used: std::collections::HashSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 3, "keys spread over every backend");
    let added = admin(
        &p,
        "POST",
        "/backends",
        &format!(r#"{{"address":"{}"}}"#, bs[3].addr),
    );
    assert_eq!(added.status, 201, "{}", added.body);
    let after: Vec<String> = (0..90).map(where_is).collect();
    let moved: Vec<usize> = (0..90).filter(|&u| before[u] != after[u]).collect();
    // About a quarter should move, and only to the newcomer.
    assert!(
        (8..=40).contains(&moved.len()),
        "{} of 90 moved",
        moved.len()
    );
    assert!(moved.iter().all(|&u| after[u] == "d"));
}

#[test]
fn an_upgraded_connection_is_tunnelled_both_ways() {
    let a = TestBackend::start("a");
    let p = proxy(&["--backend", &addr_arg(&a)]);
    let mut s = connect(p.addr);
    // Bytes sent right behind the handshake, before the 101, go through the tunnel too.
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly",
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the 101");
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut early = buf.split_off(end);
    while early.len() < 5 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the early bytes came back");
        early.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(early, b"early");
    let head = String::from_utf8_lossy(&buf).to_string();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [
        &b"hello"[..],
        &[0u8, 1, 2, 255][..],
        &vec![7u8; 100_000][..],
    ] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn forwarding_headers_are_added_and_hop_by_hop_ones_dropped() {
    let a = TestBackend::start("a");
    let p = proxy(&["--backend", &addr_arg(&a)]);
    let r = call(
        p.addr,
        "GET /headers HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.2.3\r\nX-Request-Id: req-42\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["accept"], "*/*");
    for gone in ["x-secret", "keep-alive", "connection"] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    assert_eq!(r.header("x-request-id"), Some("req-42"), "propagated back");
    let made = get(p.addr, "/headers");
    let v: serde_json::Value = serde_json::from_str(&made.body).unwrap();
    let id = v["headers"]["x-request-id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert_eq!(made.header("x-request-id"), Some(id.as_str()));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let p = proxy(&["--backend", &addr_arg(&a), "--backend", &addr_arg(&b)]);
    let mut s = connect(p.addr);
    s.write_all(
        b"GET /slow/100 HTTP/1.1\r\nHost: t\r\n\r\nGET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let paths: Vec<String> = (0..3)
        .map(|_| {
            let r = read_resp(&mut s, &mut buf).unwrap();
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(paths, ["/slow/100", "/one", "/two"]);
    // A chunked upload on the same connection, then one more request behind it.
    s.write_all(
        b"PUT /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let up = read_resp(&mut s, &mut buf).unwrap();
    let v: serde_json::Value = serde_json::from_str(&up.body).unwrap();
    assert_eq!(v["received"], 11, "{}", up.body);
    let last = read_resp(&mut s, &mut buf).unwrap();
    assert!(last.body.contains("/three"), "{}", last.body);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(
        read_resp(&mut s, &mut buf).is_none(),
        "closed after Connection: close"
    );
}

/// The process's resident memory; a reading that cannot be had fails the test (a 0 would make
/// every "memory stayed flat" assertion pass).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"));
    assert!(kb > 0, "process {pid} reports no resident memory");
    kb
}

#[test]
fn hundred_megabyte_bodies_stream_both_ways_in_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let a = TestBackend::start("a");
    let p = proxy(&["--backend", &addr_arg(&a)]);
    let pid = p.p.child.id();
    let before = rss_kb(pid);

    // Up: a Content-Length body, written while the answer is awaited.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(
            format!("PUT /count HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let piece = vec![b'u'; 1 << 20];
        for _ in 0..SIZE / piece.len() {
            w.write_all(&piece).unwrap();
        }
    });
    let mut peak = 0;
    let mut buf = Vec::new();
    let r = read_resp(&mut s, &mut buf).expect("an answer to the upload");
    writer.join().unwrap();
    peak = peak.max(rss_kb(pid));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["received"], SIZE);

    // Down: a chunked body, read slowly at first so that backpressure has to act.
    s.write_all(format!("GET /big/{SIZE} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    peak = peak.max(rss_kb(pid));
    let mut total = 0usize;
    let mut tail = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut reads = 0;
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed mid-body");
        total += n;
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 16 {
            tail.drain(..tail.len() - 16);
        }
        reads += 1;
        if reads % 20 == 0 {
            peak = peak.max(rss_kb(pid));
        }
        if tail.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    assert!(total > SIZE, "{total} bytes");
    // The proxy holds at most a few high-water marks of data, never the body.
    assert!(
        peak < before + 48 * 1024,
        "proxy RSS went from {before} kB to {peak} kB"
    );
}

#[test]
fn failures_get_json_502_503_504_and_bad_admin_input_400() {
    let a = TestBackend::start("a");
    let p = proxy(&[
        "--backend",
        &addr_arg(&a),
        "--response-timeout",
        "0.3",
        "--client-timeout",
        "0.3",
    ]);
    let json = |r: &Resp| {
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(v["error"].is_string(), "{}", r.body);
    };
    let slow = get(p.addr, "/slow/2000");
    assert_eq!(slow.status, 504);
    json(&slow);
    // A head that stops arriving: 408, then the connection closes.
    let mut s = connect(p.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut buf = Vec::new();
    let late = read_resp(&mut s, &mut buf).expect("a 408");
    assert_eq!(late.status, 408);
    json(&late);
    assert!(read_resp(&mut s, &mut buf).is_none());
    let cut = call(
        p.addr,
        "POST /close HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(cut.status, 502);
    json(&cut);
    for (body, path) in [
        ("{not json", "/backends"),
        (r#"{"address":"nowhere"}"#, "/backends"),
        (r#"{"strategy":"random"}"#, "/strategy"),
    ] {
        let r = admin(&p, "POST", path, body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        json(&r);
    }
    assert_eq!(
        admin(&p, "DELETE", "/backends", r#"{"address":"10.9.9.9:1"}"#).status,
        404
    );
    let drained = admin(
        &p,
        "DELETE",
        "/backends",
        &format!(r#"{{"address":"{}"}}"#, a.addr),
    );
    assert_eq!(drained.status, 200, "{}", drained.body);
    let none = get(p.addr, "/");
    assert_eq!(none.status, 503);
    json(&none);
}

#[test]
fn the_admin_api_adds_drains_and_switches_strategy_at_runtime() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let p = proxy(&["--backend", &addr_arg(&a)]);
    assert_eq!(spread(p.addr, "/", 4).get("a"), Some(&4));
    let r = admin(
        &p,
        "POST",
        "/backends",
        &format!(r#"{{"address":"{}","weight":2}}"#, b.addr),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let seen = spread(p.addr, "/", 10);
    assert_eq!(seen.get("b"), Some(&5), "new backend in rotation: {seen:?}");
    assert_eq!(
        admin(
            &p,
            "POST",
            "/backends",
            &format!(r#"{{"address":"{}"}}"#, b.addr)
        )
        .status,
        409
    );

    // A slow request on a, then a is removed: that request finishes, nothing new reaches a.
    let slow = {
        let addr = p.addr;
        let before = a.hits();
        let t = std::thread::spawn(move || {
            // Round-robin: one of two consecutive requests lands on a.
            let x = get(addr, "/slow/800");
            let y = get(addr, "/slow/800");
            (x, y)
        });
        common::eventually("a slow request on a", || a.hits() > before);
        t
    };
    let r = admin(
        &p,
        "DELETE",
        "/backends",
        &format!(r#"{{"address":"{}"}}"#, a.addr),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let hits_a = a.hits();
    let (x, y) = slow.join().unwrap();
    assert_eq!((x.status, y.status), (200, 200));
    let seen = spread(p.addr, "/", 6);
    assert_eq!(seen.get("b"), Some(&6), "{seen:?}");
    assert_eq!(
        a.hits(),
        hits_a,
        "no new request reached the drained backend"
    );

    let r = admin(
        &p,
        "POST",
        "/strategy",
        r#"{"strategy":"least_connections"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    common::eventually("a leaves the pool once drained", || {
        let st = admin(&p, "GET", "/status", "");
        let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
        v["strategy"] == "least_connections" && v["backends"].as_array().unwrap().len() == 1
    });
    let st: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    let only = &st["backends"][0];
    assert_eq!(only["address"], b.addr.to_string());
    assert_eq!(only["healthy"], true);
    assert!(only["total"].as_u64().unwrap() >= 11, "{only}");
    let m = admin(&p, "GET", "/metrics", "");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for needle in [
        format!(
            "netmod_proxy_backend_requests_total{{backend=\"{}\"}}",
            b.addr
        ),
        format!(
            "netmod_proxy_backend_response_seconds_bucket{{backend=\"{}\",le=\"+Inf\"}}",
            b.addr
        ),
        "netmod_proxy_requests_total ".to_string(),
    ] {
        assert!(m.body.contains(&needle), "{needle} in\n{}", m.body);
    }
}

#[test]
fn a_killed_backend_is_taken_out_and_comes_back_without_failed_requests() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let b_addr = b.addr;
    let mut p = proxy(&[
        "--backend",
        &addr_arg(&a),
        "--backend",
        &addr_arg(&b),
        "--fall",
        "2",
        "--rise",
        "2",
    ]);
    let addr = p.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && ok < 200_000 {
                let r = get(addr, "/");
                if r.status == 200 {
                    ok += 1;
                } else {
                    failed.push(r.status);
                }
            }
            (ok, failed)
        })
    };
    common::eventually("load reaches b", || b.hits() > 20);
    b.kill();
    p.p.wait_line(&format!("[STATUS] Server {b_addr} marked as unhealthy"));
    let b2 = TestBackend::start_on("b", b_addr);
    p.p.wait_line(&format!("[STATUS] Server {b_addr} marked as healthy"));
    common::eventually("load reaches b again", || b2.hits() > 20);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 40, "{ok} requests");
    assert!(failed.is_empty(), "failed answers: {failed:?}");
}

#[test]
fn tcp_mode_spreads_frame_clients_and_skips_a_killed_instance() {
    let mut one = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let mut two = Proc::spawn(
        "test-server",
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let (a1, a2) = (one.listen_addr(), two.listen_addr());
    let p = proxy(&[
        "--mode",
        "tcp",
        "--backend",
        &a1.to_string(),
        "--backend",
        &a2.to_string(),
        "--check-interval",
        "60",
        "--fall",
        "1",
    ]);
    let mut clients: Vec<tools::client::FrameClient> = (0..4)
        .map(|_| tools::client::FrameClient::connect(p.addr, WAIT).unwrap())
        .collect();
    for c in &mut clients {
        c.ping(b"through the proxy").unwrap();
    }
    let st: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    let active: Vec<u64> = st["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["active"].as_u64().unwrap())
        .collect();
    assert_eq!(active, vec![2, 2], "{st}");
    two.signal(libc::SIGKILL);
    two.wait_exit();
    // New connections: one may try the dead instance first; it is retried on the live one.
    for _ in 0..4 {
        let mut c = tools::client::FrameClient::connect(p.addr, WAIT).unwrap();
        c.ping(b"after the kill").unwrap();
    }
    let st: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    assert_eq!(st["mode"], "tcp");
    assert_eq!(st["backends"][1]["healthy"], false, "{st}");
    drop(one.wait_line("listening on"));
}

#[test]
#[cfg_attr(not(netmod_nginx), ignore = "needs nginx")]
fn nginx_backends_serve_through_the_proxy() {
    if !common::nginx::Nginx::installed() {
        return; // only where NETMOD_REQUIRE_NGINX is unset: see the ignore attribute
    }
    let n0 = common::nginx::Nginx::start("nginx0", "1m");
    let n1 = common::nginx::Nginx::start("nginx1", "1m");
    let p = proxy(&[
        "--backend",
        &n0.addr.to_string(),
        "--backend",
        &n1.addr.to_string(),
    ]);
    common::eventually("nginx answers through the proxy", || {
        get(p.addr, "/").status == 200
    });
    let seen = spread(p.addr, "/docs/example", 10);
    assert_eq!(
        (seen.get("nginx0"), seen.get("nginx1")),
        (Some(&5), Some(&5)),
        "{seen:?}"
    );
}

#[test]
fn several_loop_threads_share_one_pool_and_the_logs_keep_the_original_format() {
    let bs: Vec<TestBackend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| TestBackend::start(n))
        .collect();
    let mut args: Vec<String> = bs
        .iter()
        .flat_map(|b| ["--backend".into(), addr_arg(b)])
        .collect();
    args.extend(["--threads", "2", "--metrics-interval", "0.2"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = proxy(&refs);
    // A new connection per request: the kernel spreads them over both loops, the shared
    // round-robin counter still gives each backend its turn.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen.entry(backend_of(&get(p.addr, "/"))).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");
    for line in [
        "[INFO] Backend server pool initialized with 4 servers",
        // Per-request lines name the program that wrote them.
        "[INFO][proxy] New connection from 127.0.0.1",
        "[INFO][proxy] Selected backend server 127.0.0.1:",
        "[INFO][proxy] Client IP: 127.0.0.1, Status: 200, Response: {\"backend\":",
        "[INFO] [METRIC][SERVER 127.0.0.1:",
        "[INFO] [METRIC][SYSTEM] Total Requests: ",
    ] {
        let l = p.p.wait_line(line);
        assert!(l.starts_with('[') && l.as_bytes()[20] == b']', "{l}");
    }
    let m = p.p.wait_line("[METRIC][SERVER ");
    assert!(
        m.contains("] Active: ")
            && m.contains(", Total: ")
            && m.contains(", Failures: ")
            && m.ends_with("ms"),
        "{m}"
    );
}

/// test-server's HTTP front on HTTP address `http` (port 0: any), in front of `db`.
fn front(db: SocketAddr, http: &str) -> (Proc, SocketAddr) {
    common::spawn_front(db, &["--http-listen", http])
}

#[test]
fn a_test_server_killed_under_load_is_taken_out_and_comes_back_without_failed_requests() {
    let dir = common::TempDir::new("proxy-kill");
    let db_file = dir.path("kill.db");
    let (mut db, db_addr) = common::spawn_db(&db_file);
    let (_one, h1) = front(db_addr, "127.0.0.1:0");
    let (mut two, h2) = front(db_addr, "127.0.0.1:0");
    let mut p = proxy(&[
        "--backend",
        &h1.to_string(),
        "--backend",
        &h2.to_string(),
        "--fall",
        "2",
        "--rise",
        "2",
    ]);
    let body = r#"{"content":"hi"}"#;
    let put = format!(
        "PUT /docs/k HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::eventually("both instances ready behind the proxy", || {
        let st: serde_json::Value =
            serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
        st["healthy"] == 2 && [200, 201].contains(&call(p.addr, &put).status)
    });
    let addr = p.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut s = connect(addr);
            let mut buf = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && ok < 1_000_000 {
                s.write_all(b"GET /docs/k HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                match read_resp(&mut s, &mut buf) {
                    Some(r) if r.status == 200 => ok += 1,
                    Some(r) => failed.push(r.status),
                    None => {
                        failed.push(0);
                        s = connect(addr);
                        buf.clear();
                    }
                }
            }
            (ok, failed)
        })
    };
    let admin_addr = p.admin;
    let total = |i: usize| -> u64 {
        let st: serde_json::Value = serde_json::from_str(&get(admin_addr, "/status").body).unwrap();
        st["backends"][i]["total"].as_u64().unwrap()
    };
    common::eventually("load on both instances", || total(0) > 50 && total(1) > 50);
    two.signal(libc::SIGKILL);
    two.wait_exit();
    p.p.wait_line(&format!("[STATUS] Server {h2} marked as unhealthy"));
    let (_two_again, back) = front(db_addr, &h2.to_string());
    assert_eq!(back, h2);
    p.p.wait_line(&format!("[STATUS] Server {h2} marked as healthy"));
    let served_before = total(1);
    common::eventually("traffic reaches the restarted instance", || {
        total(1) > served_before + 20
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 100, "{ok} requests");
    assert!(failed.is_empty(), "failed answers: {failed:?}");
    drop(db.wait_line("listening on"));
}

#[test]
fn a_request_that_trickles_in_gets_408_from_the_proxy() {
    let a = TestBackend::start("a");
    let p = proxy(&["--backend", &addr_arg(&a), "--client-timeout", "0.3"]);
    let mut loris = connect(p.addr);
    let mut dribble = loris.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: "
            .iter()
            .chain([b'a'; 100].iter())
        {
            if dribble.write_all(&[*b]).is_err() {
                break;
            }
            // Pacing a slow client, not synchronisation: nothing waits on it.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut buf = Vec::new();
    let r = read_resp(&mut loris, &mut buf).expect("a 408");
    assert_eq!(r.status, 408);
    assert_eq!(a.hits(), 0, "nothing reached the backend");
    assert_eq!(get(p.addr, "/").status, 200, "others are served");
    feeder.join().unwrap();
}

#[test]
fn retries_stop_when_the_retry_budget_is_spent() {
    // One backend closes every connection before answering: each GET sent there is retried on
    // the other, until retries pass a fifth of the requests (plus 10); then the client gets
    // the 502. `--fall` high and checks slow, so the broken backend stays in rotation.
    let good = TestBackend::start("good");
    let bad = TestBackend::start("bad");
    bad.set_dropping(true);
    let p = proxy(&[
        "--backend",
        &addr_arg(&good),
        "--backend",
        &addr_arg(&bad),
        "--fall",
        "100000",
        "--check-interval",
        "3600",
    ]);
    const N: usize = 200;
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..N {
        match get(p.addr, "/x").status {
            200 => ok += 1,
            502 => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + failed, N);
    assert_eq!(
        good.hits(),
        ok,
        "every success was served by the good backend"
    );
    assert!(failed > 0, "the budget ran out: some clients got the 502");
    // The budget: 10 + requests / 5 retries, i.e. at most 50 for 200 requests, and once
    // exhausted it is used up to its edge.
    let status: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    let retries = status["retries"].as_u64().unwrap();
    assert!(
        (40..=50).contains(&retries),
        "{retries} retries, {failed} failed, {ok} ok"
    );
    assert_eq!(status["failures"].as_u64(), Some(failed as u64));
}

#[test]
fn active_checks_alone_take_a_backend_out_after_fall_failures_and_back_after_rise() {
    // Real traffic to `a` always succeeds, so passive detection has nothing to count: only its
    // failing /health can take it out.
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let mut p = proxy(&[
        "--backend",
        &addr_arg(&a),
        "--backend",
        &addr_arg(&b),
        "--fall",
        "3",
        "--rise",
        "2",
    ]);
    let seen = spread(p.addr, "/x", 10);
    assert_eq!(seen.len(), 2, "{seen:?}");
    a.set_health(503);
    let out =
        p.p.wait_line(&format!("Server {} marked as unhealthy", a.addr));
    assert!(out.contains("[ERROR] [STATUS]"), "{out}");
    let status: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    let entry = |addr: SocketAddr| {
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr.to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(a.addr)["healthy"], false);
    assert_eq!(entry(a.addr)["failures"], 0, "no real request to a failed");
    assert_eq!(entry(b.addr)["healthy"], true);
    let before = a.hits();
    let seen = spread(p.addr, "/x", 20);
    assert_eq!(
        seen.get("b"),
        Some(&20),
        "all to b while a is out: {seen:?}"
    );
    assert_eq!(a.hits(), before);
    a.set_health(200);
    p.p.wait_line(&format!("Server {} marked as healthy", a.addr));
    common::eventually("a serves again", || {
        spread(p.addr, "/x", 4).contains_key("a")
    });
}

/// When every backend fails its checks but some still answer them (degraded, as a test-server
/// cut off from db-server is while it serves its cached documents), requests go to those: their
/// answer beats the proxy's own 503. A backend that does not answer at all gets none, and one
/// healthy backend ends it (Envoy's panic routing at a 0 % threshold).
#[test]
fn with_every_backend_unhealthy_requests_go_to_those_still_answering() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let mut p = proxy(&[
        "--backend",
        &addr_arg(&a),
        "--backend",
        &addr_arg(&b),
        "--fall",
        "1",
        "--rise",
        "1",
    ]);
    a.set_health(503);
    b.kill();
    p.p.wait_line(&format!("Server {} marked as unhealthy", a.addr));
    p.p.wait_line(&format!("Server {} marked as unhealthy", b.addr));
    let seen = spread(p.addr, "/x", 10);
    assert_eq!(
        seen.get("a"),
        Some(&10),
        "all to the one still answering: {seen:?}"
    );
    let line = p.p.wait_line("no healthy backend");
    assert!(line.contains("[WARN]"), "{line}");
    let status: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    assert!(
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["healthy"] == false),
        "{status}"
    );

    a.set_health(200);
    p.p.wait_line(&format!("Server {} marked as healthy", a.addr));
    assert_eq!(spread(p.addr, "/x", 2).get("a"), Some(&2));
    p.p.wait_line("requests go to healthy backends again");
}

#[test]
fn the_access_log_escapes_what_a_backend_sends() {
    let b = TestBackend::start("raw");
    let mut p = proxy(&["--backend", &addr_arg(&b)]);
    assert_eq!(get(p.addr, "/raw").status, 200);
    let line = p.p.wait_line("Status: 200, Response: ok");
    assert!(
        line.ends_with(
            r"Response: ok\x0d\x0a[2024-01-01 00:00:00][INFO] forged line\x00\xff\x1b[31m"
        ),
        "{line}"
    );
    // One more request, so that every line of the first one has been written.
    assert_eq!(get(p.addr, "/x").status, 200);
    p.p.wait_line(r#"Response: {"backend":"raw""#);
    assert!(
        !p.p.seen
            .iter()
            .any(|l| l.starts_with("[2024-01-01 00:00:00]")),
        "a forged line reached the log: {:?}",
        p.p.seen
    );
}

#[test]
fn a_backend_may_be_named_by_host_name() {
    let b = TestBackend::start("named");
    let p = proxy(&[
        "--backend",
        &format!("localhost:{},weight=2", b.addr.port()),
    ]);
    let r = get(p.addr, "/x");
    assert_eq!((r.status, backend_of(&r)), (200, "named".to_string()));
}

#[test]
fn the_config_files_proxy_table_sets_what_flags_leave_unset_and_flags_win() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let dir = common::TempDir::new("proxy-config");
    let file = dir.path("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "[proxy]\n\
             backends = [\"{}\", {{ address = \"{}\", weight = 3 }}]\n\
             strategy = \"weighted_round_robin\"\n\
             check_interval_secs = 0.05\n\
             check_path = \"/raw\"\n\
             max_body = 10\n",
            a.addr, b.addr
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // The file's backends and settings (the health-check keys must parse too: unknown keys are
    // refused), the strategy overridden by its flag.
    let (_proxy, listen, admin_addr) =
        common::spawn_proxy(&[], &["--config", file, "--strategy", "least_connections"]);
    let st = call(admin_addr, "GET /status HTTP/1.1\r\nHost: a\r\n\r\n");
    let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
    assert_eq!(v["strategy"], "least_connections", "{}", st.body);
    let backends = v["backends"].as_array().unwrap();
    let weight_of = |addr: SocketAddr| {
        backends
            .iter()
            .find(|x| x["address"] == addr.to_string())
            .map(|x| x["weight"].clone())
    };
    assert_eq!(weight_of(a.addr), Some(serde_json::json!(1)), "{}", st.body);
    assert_eq!(weight_of(b.addr), Some(serde_json::json!(3)), "{}", st.body);
    // max_body from the file: 11 bytes are refused before any backend sees them.
    let r = call(
        listen,
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(r.status, 413, "{}", r.body);
    // A key the table does not know is refused at start, naming it.
    std::fs::write(dir.path("bad.toml"), "[proxy]\nstrategi = \"random\"\n").unwrap();
    let bad = dir.path("bad.toml");
    let out = std::process::Command::new(common::bin_path("proxy"))
        .args(["--config", bad.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("strategi"), "{err}");
}

/// With `--admin-token`, changes to the pool need it as a Bearer token (401 with
/// `WWW-Authenticate` otherwise); reading does not. The dashboard is served at `/` and
/// `/dashboard`; a backend added through the API is `unknown` until its first check answers.
#[test]
fn admin_changes_need_the_token_and_a_new_backend_is_unknown_until_checked() {
    let a = TestBackend::start("a");
    let addr_a = a.addr.to_string();
    let p = proxy(&[
        "--backend",
        &addr_a,
        "--admin-token",
        "t0ken",
        "--check-interval",
        "3600",
    ]);
    let b = TestBackend::start("b");
    let add = format!("{{\"address\":\"{}\"}}", b.addr);
    let refused = admin(&p, "POST", "/backends", &add);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert!(refused.body.contains("admin token"), "{}", refused.body);
    let wrong = call(
        p.admin,
        &format!(
            "POST /backends HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0kem\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{add}",
            add.len()
        ),
    );
    assert_eq!(wrong.status, 401);
    let ok = call(
        p.admin,
        &format!(
            "POST /backends HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{add}",
            add.len()
        ),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let st = admin(&p, "GET", "/status", "");
    assert_eq!(st.status, 200);
    let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
    let added = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["address"] == b.addr.to_string())
        .expect("the added backend");
    assert_eq!(added["state"], "unknown", "{added}");
    assert_eq!(
        added["healthy"], true,
        "it takes traffic before its first check"
    );
    assert_eq!(
        v["bucket_bounds_ms"].as_array().unwrap().len() + 1,
        added["response_buckets"].as_array().unwrap().len()
    );
    for path in ["/", "/dashboard"] {
        let page = admin(&p, "GET", path, "");
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            page.body.contains("<title>proxy · netmod</title>") && !page.body.contains("/*SHARED")
        );
    }
}

/// Issue 24: a page of another site open in an operator's browser cannot change the pool
/// through the admin port, even without a token: browsers send such a page's POST without a
/// preflight only as text/plain (or a form), and name its site in Origin and Sec-Fetch-Site.
#[test]
fn a_web_page_cannot_change_the_pool_through_an_operators_browser() {
    let a = TestBackend::start("a");
    let addr_a = a.addr.to_string();
    let p = proxy(&["--backend", &addr_a, "--check-interval", "3600"]);
    let b = TestBackend::start("b");
    let add = format!("{{\"address\":\"{}\"}}", b.addr);
    let host = p.admin.to_string();
    for (headers, status) in [
        ("Content-Type: text/plain\r\n".to_string(), 415),
        (String::new(), 415),
        (
            "Content-Type: application/x-www-form-urlencoded\r\n".to_string(),
            415,
        ),
        (
            "Content-Type: application/json\r\nOrigin: http://evil.example\r\n".to_string(),
            403,
        ),
        (
            "Content-Type: application/json\r\nSec-Fetch-Site: cross-site\r\n".to_string(),
            403,
        ),
    ] {
        let r = call(
            p.admin,
            &format!(
                "POST /backends HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\n\r\n{add}",
                add.len()
            ),
        );
        assert_eq!(r.status, status, "{headers}: {}", r.body);
        assert!(r.body.contains("\"error\""), "{}", r.body);
    }
    let st: serde_json::Value =
        serde_json::from_str(&admin(&p, "GET", "/status", "").body).unwrap();
    assert_eq!(st["backends"].as_array().unwrap().len(), 1, "nothing added");
    // The dashboard's own requests: same origin, JSON.
    let ok = call(
        p.admin,
        &format!(
            "POST /backends HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{add}",
            add.len()
        ),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
}

/// A proxy started without a backend says so, and answers 503 (issue 25).
#[test]
fn a_proxy_without_backends_says_so_at_start_and_answers_503() {
    let mut p = proxy(&[]);
    p.p.wait_line("no backend configured");
    let r = call(p.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503, "{}", r.body);
}
