//! Memory of authenticated idle frame clients (issue 14: 10,000 of them within 8 MiB of the
//! empty server): starts `target/release/test-server` (one loop), authenticates N connections
//! with a signed token (`AUTH_TOKEN`, no database needed), and prints the server's RSS growth.
//!
//! ```text
//! cargo bench --bench auth_idle [-- N]      (builds target/release/test-server first;
//!                                            -- --quick: 2,000 clients)
//! ```
//!
//! Prints one line: `auth_idle clients=… rss_before_kb=… rss_after_kb=… per_client_bytes=…
//! growth_mib=…`.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use support::{free_port, raise_nofile, rss_kb};
use test_server::auth::TokenSigner;
use tools::client::FrameClient;

const SECRET: &str = "auth-idle bench secret";

fn main() {
    let n: usize = support::first_plain_arg()
        .and_then(|a| a.parse().ok())
        .unwrap_or(if support::quick() { 2_000 } else { 10_000 });
    raise_nofile();
    let bin = support::build_release(&[("netmod-test-server", "test-server")]).join("test-server");
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
    assert!(
        support::wait_port(addr, Duration::from_secs(10)),
        "test-server did not start"
    );
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
