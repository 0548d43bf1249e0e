//! Requests per second of the whole system against its targets, in one table: the real binaries
//! (db-server on SQLite, test-server, the proxy in front of it), each with its default
//! settings, loaded by `loadgen` over many connections.
//!
//! ```text
//! cargo bench --bench rps              5 s per load, about a minute in all
//! cargo bench --bench rps -- --quick   2 s per load
//! ```
//!
//! Targets: the original design's (test-server 10,000+ RPS, db-server 5,000+ QPS, < 1 ms between
//! servers) and this project's own (docs/BENCHMARKS.md). Everything runs on this machine with
//! no pinning, so loadgen takes CPU from the servers: a floor, not a comparison. Comparisons
//! with nginx, HAProxy, Redis and hyper are the scripts in `benches/` (benches/peers/ starts
//! the peers), written up in docs/BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, args: &[&str], ports: &[SocketAddr]) -> Server {
    let child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let server = Server(child);
    for p in ports {
        assert!(
            support::wait_port(*p, Duration::from_secs(20)),
            "{} does not listen on {p}",
            bin.display()
        );
    }
    server
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

/// One line of loadgen's contract: `rps= p50_us= p99_us= errors=`.
#[derive(Debug, Default)]
struct Measured {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn loadgen(bin: &Path, args: &[String]) -> Measured {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .output()
        .expect("run loadgen");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let mut m = Measured::default();
    for kv in last.split_whitespace() {
        match kv.split_once('=') {
            Some(("rps", v)) => m.rps = v.parse().unwrap_or(0.0),
            Some(("p50_us", v)) => m.p50_us = v.parse().unwrap_or(0.0),
            Some(("p99_us", v)) => m.p99_us = v.parse().unwrap_or(0.0),
            Some(("errors", v)) => m.errors = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    m
}

/// What a row is held to.
#[derive(Clone, Copy)]
enum Target {
    /// At least this many answers per second (and whose target it is).
    Rps(f64, &'static str),
    /// The median round trip under this many µs.
    P50Under(f64, &'static str),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::Rps(n, whose) => format!("≥ {} rps ({whose})", thousands(n)),
            Target::P50Under(us, whose) => format!("p50 < {} ms ({whose})", us / 1000.0),
        }
    }

    fn met(self, m: &Measured) -> bool {
        m.errors == 0
            && match self {
                Target::Rps(n, _) => m.rps >= n,
                Target::P50Under(us, _) => m.p50_us > 0.0 && m.p50_us < us,
            }
    }
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const DESIGN: &str = "design";
const PROJECT: &str = "project";

fn main() {
    let quick = support::quick();
    let secs = if quick { "2" } else { "5" };
    support::raise_nofile();
    let bins: PathBuf = support::build_release(&[
        ("netmod-db", "db-server"),
        ("netmod-test-server", "test-server"),
        ("netmod-proxy", "proxy"),
        ("netmod-tools", "loadgen"),
    ]);
    let dir = std::env::temp_dir().join(format!("netmod-rps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (db, frames, http, lb, admin) = (addr(), addr(), addr(), addr(), addr());
    let db_s = db.to_string();
    let _db = start(
        &bins.join("db-server"),
        &["--listen", &db_s, "--sqlite", &support::arg(&dir, "rps.db")],
        &[db],
    );
    let (frames_s, http_s) = (frames.to_string(), http.to_string());
    let _ts = start(
        &bins.join("test-server"),
        &[
            "--listen",
            &frames_s,
            "--http-listen",
            &http_s,
            "--db",
            &db_s,
            "--insecure-http-writes",
        ],
        &[frames, http],
    );
    let (lb_s, admin_s) = (lb.to_string(), admin.to_string());
    let _proxy = start(
        &bins.join("proxy"),
        &[
            "--listen",
            &lb_s,
            "--admin",
            &admin_s,
            "--backend",
            &http_s,
            "--metrics-interval",
            "0",
        ],
        &[lb, admin],
    );
    // The document the HTTP rows read (test-server may still be reaching db-server).
    let body = r#"{"content": "the rps bench's page"}"#;
    let put = format!(
        "PUT /docs/example HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let stored = (0..100).any(|_| {
        use std::io::{Read, Write};
        let ok = std::net::TcpStream::connect(http).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(put.as_bytes())?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer.starts_with("HTTP/1.1 20"))
        });
        ok.unwrap_or(false) || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(stored, "test-server did not store the example document");

    let load = |mode: &str, addr: &str, extra: &[&str], pipeline: &str| -> Measured {
        let mut args: Vec<String> = [
            mode,
            "--addr",
            addr,
            "--conns",
            "50",
            "--pipeline",
            pipeline,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--duration".to_string(), secs.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        loadgen(&bins.join("loadgen"), &args)
    };
    let rows: Vec<(&str, Measured, Vec<Target>)> = vec![
        (
            "ping p1 (test-server frames)",
            load("ping", &frames_s, &[], "1"),
            vec![
                Target::Rps(10_000.0, DESIGN),
                Target::P50Under(1000.0, DESIGN),
            ],
        ),
        (
            "ping p16 (test-server frames)",
            load("ping", &frames_s, &[], "16"),
            vec![Target::Rps(10_000.0, DESIGN)],
        ),
        (
            "HTTP GET /docs/example (front)",
            load("http", &http_s, &[], "1"),
            vec![Target::Rps(10_000.0, DESIGN)],
        ),
        (
            "HTTP GET through the proxy",
            load("http", &lb_s, &[], "1"),
            vec![Target::Rps(10_000.0, DESIGN)],
        ),
        (
            "db point read p1 (SQLite)",
            load("db", &db_s, &["--mode", "read"], "1"),
            vec![
                Target::Rps(5_000.0, DESIGN),
                Target::Rps(100_000.0, PROJECT),
            ],
        ),
        (
            "db point read p16 (SQLite)",
            load("db", &db_s, &["--mode", "read"], "16"),
            vec![Target::Rps(100_000.0, PROJECT)],
        ),
        (
            "db durable write p1 (SQLite)",
            load("db", &db_s, &["--mode", "write"], "1"),
            vec![Target::Rps(5_000.0, DESIGN), Target::Rps(50_000.0, PROJECT)],
        ),
    ];
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nrps: 50 connections each, {secs} s per load, servers with their default settings, \
         loadgen on the same {}-core machine (not pinned)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| {:<32} | {:>10} | {:>9} | {:>9} | {:>6} | target |",
        "load", "rps", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "|{:-<34}|{:->12}|{:->11}|{:->11}|{:->8}|--------|",
        "", "", "", "", ""
    );
    for (name, m, targets) in &rows {
        let verdicts: Vec<String> = targets
            .iter()
            .map(|t| format!("{} {}", t.text(), if t.met(m) { "met" } else { "MISSED" }))
            .collect();
        println!(
            "| {:<32} | {:>10} | {:>9.3} | {:>9.3} | {:>6} | {} |",
            name,
            thousands(m.rps),
            m.p50_us / 1000.0,
            m.p99_us / 1000.0,
            m.errors,
            verdicts.join("; ")
        );
    }
    println!(
        "Comparisons with nginx, HAProxy, Redis and tokio + hyper, pinned and in one run: \
         benches/*.sh (peers in benches/peers/), results in docs/BENCHMARKS.md."
    );
}
