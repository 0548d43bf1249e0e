//! What the benchmarks that run the real binaries share: building them, free ports, waiting
//! for a port, a process's memory, the open-file limit.
#![allow(dead_code)] // each bench uses its own part

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root (where `target/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo build --release` of `bins` (`(package, binary)`), quick when up to date, without the
/// variables cargo set for this bench (a build script that watches them would rebuild for
/// nothing). Returns `target/release`.
pub fn build_release(bins: &[(&str, &str)]) -> PathBuf {
    let root = root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--release", "-q"]).current_dir(&root);
    for (package, bin) in bins {
        build.args(["-p", package, "--bin", bin]);
    }
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
            || name == "OUT_DIR"
        {
            build.env_remove(name);
        }
    }
    let ok = build.status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "cannot build {bins:?}");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release")
}

/// A port free on 127.0.0.1 when this returns.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits up to `limit` for something to accept on `addr`.
pub fn wait_port(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit.
pub fn raise_nofile() {
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

/// True when `--quick` was given (`cargo bench -- --quick`): a short run.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The first argument that is not an option cargo or criterion passes (`--bench`, `--quick`…).
pub fn first_plain_arg() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with("--"))
}

/// A path under `dir`, as a string for a command line.
pub fn arg(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}
