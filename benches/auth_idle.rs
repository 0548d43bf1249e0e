//! Memory of authenticated idle frame clients (issue 14: 10,000 of them within 8 MiB of the
//! empty server): starts `target/release/test-server` (one loop), authenticates N connections
//! with a signed token (`AUTH_TOKEN`, no database needed), and prints the server's RSS growth.
//!
//! ```text
//! cargo bench --bench auth_idle [-- N]      (builds target/release/test-server first)
//! ```
//!
//! Prints one line: `auth_idle clients=… rss_before_kb=… rss_after_kb=… per_client_bytes=…
//! growth_mib=…`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use test_server::auth::TokenSigner;
use tools::client::FrameClient;

const SECRET: &str = "auth-idle bench secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (N client sockets).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `cargo build --release --bin test-server` (quick when up to date), without the variables
/// cargo set for this bench: a build script that watches them would rebuild for nothing.
fn build_test_server(root: &std::path::Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "netmod-test-server",
            "--bin",
            "test-server",
        ])
        .current_dir(root);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
            || name == "OUT_DIR"
        {
            build.env_remove(name);
        }
    }
    let ok = build.status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "cannot build test-server");
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    raise_nofile();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    build_test_server(root);
    let bin = root.join("target/release/test-server");
    let (port, http) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut child = Command::new(&bin)
        .args([
            "--threads",
            "1",
            "--token-secret",
            SECRET,
            "--db",
            "127.0.0.1:1",
        ])
        .args(["--listen", &addr.to_string()])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start test-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "test-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1)); // start-up allocations settle
    let before = rss_kb(child.id());
    let token = TokenSigner::new(SECRET.as_bytes(), Duration::from_secs(3600))
        .issue("bench", SystemTime::now())
        .expect("token")
        .token;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = FrameClient::connect(addr, Duration::from_secs(10)).expect("connect");
        c.authenticate(&token).expect("authenticate");
        clients.push(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb(child.id());
    println!(
        "auth_idle clients={n} rss_before_kb={before} rss_after_kb={after} per_client_bytes={} growth_mib={:.2}",
        after.saturating_sub(before) * 1024 / n.max(1) as u64,
        after.saturating_sub(before) as f64 / 1024.0
    );
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
}
