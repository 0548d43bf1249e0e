//! Shared helpers for the integration tests: servers on ephemeral loopback ports, in-process or
//! as real child processes, and waiting on events instead of sleeping.
#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod http;
pub mod nginx;
pub mod pg;
pub mod relay;
pub mod stack;
pub mod tls;

// The in-process server and the waiting helpers are the engine's tests' own.
#[path = "../../engine/tests/support/running.rs"]
mod running;
pub use running::{eventually, run, start, Running, WAIT};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use engine::{Handler, Server};

/// Starts `factory`'s handler on 127.0.0.1:0 with TLS.
pub fn start_tls<H, F>(cfg: engine::Config, tls: engine::tls::TlsListener, factory: F) -> Running
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let server = Server::new(cfg)
        .unwrap()
        .listen_tls(any_port(), tls)
        .unwrap();
    run(server, factory)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs loadgen with `args` to its end.
pub fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(bin_path("loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

/// The last line of a program's standard output (loadgen's contract line).
pub fn last_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The test-server frame service in-process, `threads` loops.
pub fn start_frame_service(mut cfg: engine::Config) -> Running {
    cfg.refuse_message = test_server::refuse_frame();
    cfg.rate_limited_message = test_server::rate_limited_frame();
    let svc = test_server::ServiceConfig {
        max_message_size: cfg.max_message_size,
        ..Default::default()
    };
    start(cfg, move |_| test_server::service(svc.clone()))
}

/// The path of one of the workspace's binaries, by name, built up to date.
pub fn bin_path(bin: &str) -> PathBuf {
    assert!(BINARIES.contains(&bin), "unknown binary {bin}");
    let path = binaries_dir().join(bin);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The directory the workspace's binaries are built into, built up to date once per test
/// process.
///
/// The binaries belong to other packages of the workspace than these tests, so Cargo neither
/// builds them for `cargo test --test X` nor tells their paths (`CARGO_BIN_EXE_*` covers the
/// tested package only). Running `cargo build` for them here means a test never drives a stale
/// binary; under `cargo test --workspace` it finds everything built and returns at once.
fn binaries_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test executable is target/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/")
            .to_path_buf();
        if let Ok(cargo) = std::env::var("CARGO") {
            // Exactly what `cargo test --workspace` builds (same targets, same features), so
            // under it this finds everything fresh; a narrower `cargo build --bins` resolves
            // features differently and would relink every binary on each run.
            let mut build = Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "test",
                "--workspace",
                "--no-run",
                "--quiet",
            ]);
            without_test_env(&mut build);
            if dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo build of the binaries");
            assert!(status.success(), "cargo build of the binaries failed");
        }
        dir
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

/// Every binary of the workspace.
pub const BINARIES: [&str; 6] = [
    "client",
    "db-server",
    "loadgen",
    "proxy",
    "stack",
    "test-server",
];

/// A child process whose stderr lines arrive on a channel; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Spawns one of this package's binaries, logging at `RUST_LOG=info`.
    pub fn spawn(bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_logging(bin, args, Some("info"))
    }

    /// Spawns one of this package's binaries with `RUST_LOG` set to `rust_log`, or unset (the
    /// default users get) for `None`.
    pub fn spawn_logging(bin: &str, args: &[&str], rust_log: Option<&str>) -> Proc {
        let path = bin_path(bin);
        // test-server's second port and its startup hashing: ephemeral and cheap in tests,
        // unless a test says otherwise.
        let mut extra: Vec<&str> = Vec::new();
        if bin == "test-server" {
            if !args.contains(&"--http-listen") {
                extra.extend(["--http-listen", "127.0.0.1:0"]);
            }
            if !args.contains(&"--argon2-memory-kib") {
                extra.extend(["--argon2-memory-kib", "64"]);
            }
        }
        let mut cmd = Command::new(path);
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd
            .args(args)
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the "listening on ADDR" line and returns ADDR.
    pub fn listen_addr(&mut self) -> SocketAddr {
        let line = self.wait_line("listening on ");
        let rest = line
            .split("listening on ")
            .nth(1)
            .expect("address after 'listening on'");
        rest.split_whitespace()
            .next()
            .unwrap()
            .parse()
            .expect("socket address")
    }

    /// The two addresses of a "listening on A (…) and B (…)" line (test-server: frames and
    /// HTTP; proxy: traffic and admin).
    pub fn listen_addrs(&mut self) -> [SocketAddr; 2] {
        let line = self.wait_line("listening on ");
        let mut addrs = line
            .split("listening on ")
            .nth(1)
            .expect("addresses after 'listening on'")
            .split(" and ")
            .map(|part| {
                part.split_whitespace()
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("an address in {line}"))
            });
        let first = addrs.next().expect("a first address");
        let second = addrs
            .next()
            .unwrap_or_else(|| panic!("a second address in {line}"));
        [first, second]
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    /// Kills the process; a panic it printed (in any of its threads) fails the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        // The reader thread ends at the pipe's end (soon after the exit, unless a grandchild
        // holds the pipe: then what arrived within a moment is read).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => break,
            }
        }
        if let Some(l) = self.seen.iter().find(|l| l.contains("panicked at")) {
            panic!("the child process panicked: {l}");
        }
    }
}

/// Whether a prerequisite a test needs (`what`: nginx, curl, PostgreSQL, …) is `available`.
/// Missing where `require_var=1` (as `.ci/run` sets) fails the test. A test that needs one is
/// also `#[cfg_attr(not(netmod_…), ignore = "needs …")]` (see `build.rs`), so that where the
/// tool is missing cargo counts it as ignored, not passed; this check is for the parts of
/// other tests that use the tool when it is there.
pub fn prerequisite(what: &str, require_var: &str, available: bool) -> bool {
    assert!(
        available || std::env::var(require_var).as_deref() != Ok("1"),
        "{require_var}=1 but {what} is not available: this test must run"
    );
    available
}

/// True when `program --version` (or `-v`) runs.
pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "netmod-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// db-server's service in-process on a SQLite file in `dir`.
pub fn start_db(dir: &TempDir) -> Running {
    start_db_with(dir, |_| {})
}

/// The same, with the pool's configuration adjusted by `tune`.
pub fn start_db_with(dir: &TempDir, tune: impl FnOnce(&mut db::SqliteConfig)) -> Running {
    let mut cfg = sqlite_config(dir);
    tune(&mut cfg);
    start_db_pool(db::PoolConfig::Sqlite(cfg))
}

/// The tests' SQLite settings for a database file in `dir`.
pub fn sqlite_config(dir: &TempDir) -> db::SqliteConfig {
    db::SqliteConfig::new(dir.path("test.db"))
}

/// db-server's service in-process on the backend `cfg` names.
pub fn start_db_pool(cfg: db::PoolConfig) -> Running {
    start_db_loops(cfg, 1)
}

/// The same on `threads` loops (connections spread over them by the kernel).
pub fn start_db_loops(cfg: db::PoolConfig, threads: usize) -> Running {
    use db::{monitor::Monitor, DbService};
    use std::sync::Arc;
    let pool = Arc::new(cfg.start(Arc::new(Monitor::new(None))).unwrap());
    let watchers = db::watch::Watchers::new();
    start(
        engine::Config::builder()
            .threads(threads)
            .build()
            .expect("a valid engine config"),
        move |_| {
            DbService::new(
                Arc::clone(&pool),
                Arc::clone(&watchers),
                engine::DEFAULT_MAX_MESSAGE,
            )
        },
    )
}

/// A frame client whose connection leaves from `source` (e.g. 127.0.0.2: every 127.0.0.0/8
/// address binds here), to test per-address limits.
pub fn connect_from(source: &str, addr: SocketAddr) -> tools::client::FrameClient {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    assert_eq!(stream.local_addr().unwrap().ip().to_string(), source);
    tools::client::FrameClient::from_stream(stream, WAIT).unwrap()
}

/// db-server on the SQLite file `path`, as a child process: the process and its address.
pub fn spawn_db(path: &std::path::Path) -> (Proc, SocketAddr) {
    let file = path.to_str().expect("a UTF-8 temp path");
    let mut p = Proc::spawn("db-server", &["--listen", "127.0.0.1:0", "--sqlite", file]);
    let addr = p.listen_addr();
    (p, addr)
}

/// The proxy binary as a child process (one loop, no metric lines) in front of `backends`,
/// with `extra` flags: the process, its listening address and its admin address.
pub fn spawn_proxy(backends: &[SocketAddr], extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let backends: Vec<String> = backends.iter().map(SocketAddr::to_string).collect();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--metrics-interval",
        "0",
    ];
    for b in &backends {
        args.extend(["--backend", b.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut p = Proc::spawn("proxy", &args);
    let [listen, admin] = p.listen_addrs();
    (p, listen, admin)
}

/// Waits until the HTTP front at `http` says it is ready (`/health` 200: db link up).
pub fn wait_front_ready(http: SocketAddr) {
    eventually("the front is ready", || {
        http::call(http, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
    });
}

/// test-server as a child process in front of db-server `db` (one loop, HTTP writes without a
/// token), with `extra` flags: the process and its HTTP address.
pub fn spawn_front(db: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    spawn_front_logging(db, extra, Some("info"))
}

/// [`spawn_front`] with `RUST_LOG` set to `rust_log`, or unset for `None`.
pub fn spawn_front_logging(
    db: SocketAddr,
    extra: &[&str],
    rust_log: Option<&str>,
) -> (Proc, SocketAddr) {
    let (p, [_, http]) = spawn_front_listening(db, extra, rust_log);
    (p, http)
}

/// [`spawn_front_logging`], with both addresses: frames, then HTTP.
pub fn spawn_front_listening(
    db: SocketAddr,
    extra: &[&str],
    rust_log: Option<&str>,
) -> (Proc, [SocketAddr; 2]) {
    let db = db.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.as_str(),
        "--threads",
        "1",
        "--insecure-http-writes",
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn_logging("test-server", &args, rust_log);
    let addrs = p.listen_addrs();
    (p, addrs)
}
