//! stack: runs the system locally as child processes and shows it working.
//!
//! db-server on embedded SQLite, two test-server instances sharing one token key (so a token
//! from one works on the other) and the proxy balancing their HTTP fronts; the document
//! `example` stored and fetched through the proxy, a short load (`loadgen ping` on test-server,
//! `loadgen db --mode mixed` on db-server), the figures printed, and (with `--keep`) the
//! servers left serving until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};

use clap::Parser;

/// Starts the netmod servers locally, runs a short load against them, and stops them.
#[derive(Debug, Parser)]
#[command(name = "stack", version = shared::VERSION)]
struct Args {
    /// Frame-protocol address of test-server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// test-server instances (each takes the next ports after --listen and --http-listen).
    #[arg(long, default_value_t = 2)]
    instances: u16,
    /// HTTP address of test-server (documents, /health, /metrics).
    #[arg(long, default_value = "127.0.0.1:8000")]
    http_listen: SocketAddr,
    /// Frame-protocol address of db-server.
    #[arg(long, default_value = "127.0.0.1:7100")]
    db_listen: SocketAddr,
    /// The proxy's address, in front of the test-servers' HTTP fronts.
    #[arg(long, default_value = "127.0.0.1:8080")]
    proxy_listen: SocketAddr,
    /// The proxy's admin API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    proxy_admin: SocketAddr,
    /// Folder for the servers' data (made if missing): db-server's SQLite file is
    /// `netmod.db` in it.
    #[arg(long, default_value = "netmod-data")]
    data_dir: PathBuf,
    /// db-server's SQLite file [default: netmod.db in --data-dir].
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// Seconds of load to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// argon2id memory (KiB) test-server uses for secrets (lower only for tests).
    #[arg(long, hide = true)]
    argon2_memory_kib: Option<u32>,
    /// Keep the servers running after the load, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// The children running now, in the order they started, so that a signal to `stack` stops
/// them all, the last started first.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Set once a signal is being handled: the signal thread decides how the process ends.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A child killed (SIGTERM, then waited for) when dropped, and what to call it in messages.
struct Managed(Child, String);

impl Managed {
    /// `Some(why)` once the child has exited (on its own: `stack` has not stopped it).
    fn exited(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) => Some(format!("{} (pid {}) exited: {status}", self.1, self.0.id())),
            Ok(None) => None,
            Err(e) => Some(format!("{} (pid {}) is gone: {e}", self.1, self.0.id())),
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let pid = self.0.id();
        children().retain(|&p| p != pid);
        if let Ok(Some(_)) = self.0.try_wait() {
            return; // reaped already: its pid may be another process's by now
        }
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` as a child that cannot outlive `stack`: in a process group of its own (so a
/// terminal's Ctrl-C reaches `stack`, which stops the children in order), told SIGTERM by the
/// kernel if `stack` dies however it dies (PR_SET_PDEATHSIG), and listed for the signal
/// handler of [`stop_children_on_signals`].
fn spawn_child(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child being made.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    children().push(child.id());
    Ok(child)
}

/// On SIGINT, SIGTERM or SIGHUP: SIGTERM to each child, the last started first, waiting for
/// each to finish its in-flight work and exit before the next (the proxy before the
/// test-servers behind it, those before db-server, so none sees its backend vanish), then
/// exit — 0 for SIGINT with `--keep` (the documented way to stop), else 128 + the signal.
fn stop_children_on_signals(keep: bool) -> Result<(), String> {
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        let Some(sig) = signals.forever().next() else {
            return;
        };
        STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
        let pids: Vec<u32> = children().clone();
        for &pid in pids.iter().rev() {
            let mut status = 0;
            // SAFETY: signalling and waiting for our own child; `status` is a valid
            // out-pointer.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
                libc::waitpid(pid as i32, &mut status, 0);
            }
        }
        println!("stopped");
        std::process::exit(if keep && sig == libc::SIGINT {
            0
        } else {
            128 + sig
        });
    });
    Ok(())
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot locate myself: {e}"))?;
    let path = me.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build every binary first: cargo build --release",
            path.display()
        ))
    }
}

/// `addr` if nothing listens there now, or with port 0 a port free now — so that `stack` knows
/// where to look for the server without reading its log, and never mistakes a server already
/// there for its own.
fn concrete(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() == 0 {
        if let Some(free) = free_port_below_ephemeral(addr) {
            return Ok(free);
        }
    }
    match std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()) {
        Ok(bound) => Ok(bound),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("address {addr} is already in use"))
        }
        Err(e) => Err(format!("cannot use {addr}: {e}")),
    }
}

/// A port free now on `addr`'s IP, below the kernel's ephemeral range. The server binds it a
/// moment later; a port from the ephemeral range (what binding port 0 gives) could meanwhile
/// become the local port of any outgoing connection on the machine, or another port-0 listener,
/// and the server would fail with "address in use". Below the range only an explicit bind can
/// take it. None when the range is unknown (not Linux) or nothing was free after some tries.
fn free_port_below_ephemeral(addr: SocketAddr) -> Option<SocketAddr> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    // Above the well-known and the usual fixed ports (8000, 8080, 7000, 5432 ...).
    const FLOOR: u16 = 10_000;
    if low <= FLOOR + 1000 {
        return None;
    }
    (0..64).find_map(|_| {
        let pick = FLOOR + (getrandom::u64().ok()? % u64::from(low - FLOOR)) as u16;
        let candidate = SocketAddr::new(addr.ip(), pick);
        std::net::TcpListener::bind(candidate)
            .ok()
            .map(|_| candidate)
    })
}

/// Starts one of the servers and waits until it accepts connections on every address in
/// `ports` (never on its log lines, which `RUST_LOG` may hide); its log goes to stderr.
fn start(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    ports: &[SocketAddr],
) -> Result<Managed, String> {
    let child = spawn_child(
        Command::new(sibling(bin)?)
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::inherit()),
    )
    .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let mut child = Managed(child, bin.to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for &addr in ports {
        loop {
            let timeout = std::time::Duration::from_millis(200);
            if std::net::TcpStream::connect_timeout(&addr, timeout).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(format!(
                    "{bin} exited ({status}) before listening on {addr} (see its log above)"
                ));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("{bin} did not listen on {addr} within 30 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(child)
}

fn loadgen(args: &[&str]) -> Result<(), String> {
    println!("running: loadgen {}", args.join(" "));
    let child = spawn_child(Command::new(sibling("loadgen")?).args(args))
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    let mut child = Managed(child, "loadgen".into());
    let status = child.0.wait().map_err(|e| format!("loadgen: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("loadgen failed: {status}"))
    }
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `addr` moved up by `i` ports (port 0 stays 0: any free port).
fn nth(addr: SocketAddr, i: u16) -> SocketAddr {
    let mut a = addr;
    if a.port() != 0 {
        a.set_port(a.port().saturating_add(i));
    }
    a
}

/// Stores the document `example` (logging in as admin once test-server has set up its tables).
fn seed(addr: SocketAddr, admin_secret: &str) -> Result<(), String> {
    use protocol::proto::Value;
    use tools::client::FrameClient;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tried = FrameClient::connect(addr, std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.login("admin", admin_secret).map_err(|e| e.to_string())?;
                // `updated` as a PUT sets it: seconds since the epoch.
                let now = i64::try_from(shared::clock::now_secs()).unwrap_or(0);
                c.execute(
                    "INSERT INTO docs (name, content, updated) VALUES ('example', ?1, ?2) \
                     ON CONFLICT (name) DO NOTHING",
                    vec![
                        Value::text("Hello from netmod: this document lives in db-server."),
                        Value::int(now),
                    ],
                )
                .map_err(|e| e.to_string())
            });
        match tried {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("cannot store the example document: {e}"))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    stop_children_on_signals(args.keep)?;
    let sqlite = match &args.sqlite {
        Some(file) => file.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .map_err(|e| format!("cannot make {}: {e}", args.data_dir.display()))?;
            args.data_dir.join("netmod.db")
        }
    };
    // Absolute, so that what is printed works from any directory.
    let sqlite = std::path::absolute(&sqlite)
        .unwrap_or(sqlite)
        .to_string_lossy()
        .into_owned();
    let db_addr = concrete(args.db_listen)?;
    let db = start(
        "db-server",
        &["--listen", &db_addr.to_string(), "--sqlite", &sqlite],
        &[],
        &[db_addr],
    )?;
    println!(
        "db-server: frames on {db_addr}, SQLite file {sqlite}, pid {}",
        db.0.id()
    );
    let key = match std::env::var("NETMOD_TOKEN_SECRET") {
        Ok(k) if !k.is_empty() => k,
        _ => random_hex(32)?,
    };
    let (admin, generated) = match std::env::var("NETMOD_ADMIN_SECRET") {
        Ok(s) if !s.is_empty() => (s, false),
        _ => (random_hex(12)?, true),
    };
    let env = [
        ("NETMOD_TOKEN_SECRET", key.as_str()),
        ("NETMOD_ADMIN_SECRET", admin.as_str()),
    ];
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..args.instances.max(1) {
        let (frames, http) = (
            concrete(nth(args.listen, i))?,
            concrete(nth(args.http_listen, i))?,
        );
        let (frames_s, http_s, db_s) = (frames.to_string(), http.to_string(), db_addr.to_string());
        let memory_kib = args.argon2_memory_kib.map(|n| n.to_string());
        let mut ts_args = vec![
            "--listen",
            frames_s.as_str(),
            "--http-listen",
            http_s.as_str(),
            "--db",
            db_s.as_str(),
        ];
        if let Some(n) = &memory_kib {
            ts_args.extend(["--argon2-memory-kib", n.as_str()]);
        }
        let mut server = start("test-server", &ts_args, &env, &[frames, http])?;
        server.1 = format!("test-server {i}");
        println!(
            "test-server {i}: frames on {frames}, HTTP on {http}, pid {}",
            server.0.id()
        );
        servers.push(server);
        addrs.push((frames, http));
    }
    let (addr, _) = addrs[0];
    seed(addr, &admin)?;
    let (http, proxy_admin) = (concrete(args.proxy_listen)?, concrete(args.proxy_admin)?);
    let (listen_s, admin_s) = (http.to_string(), proxy_admin.to_string());
    let backends: Vec<String> = addrs.iter().map(|(_, h)| h.to_string()).collect();
    let mut proxy_args = vec!["--listen", listen_s.as_str(), "--admin", admin_s.as_str()];
    for b in &backends {
        proxy_args.extend(["--backend", b.as_str()]);
    }
    let proxy = start("proxy", &proxy_args, &[], &[http, proxy_admin])?;
    println!(
        "proxy: HTTP on {http} (admin API on {proxy_admin}), balancing {}, pid {}",
        backends.join(" "),
        proxy.0.id()
    );
    println!(
        "GET /docs/example through the proxy: {}",
        fetch(http, "/docs/example")?
    );
    if generated {
        println!("user admin, secret {admin} (generated; set NETMOD_ADMIN_SECRET to choose one)");
    }
    if args.keep {
        println!("try (the servers run until Ctrl-C):");
    } else {
        println!(
            "try, while the servers run (this run stops them after the load; \
             `stack --keep` leaves them running until Ctrl-C):"
        );
    }
    println!("  curl http://{http}/docs/example");
    println!("  curl http://{http}/health");
    println!("  curl http://{proxy_admin}/status");
    println!("  in a browser: http://{proxy_admin}/ (the proxy's dashboard), http://{}/status (a test-server)", addrs[0].1);
    // The client next to this binary, by its full path: the commands work from anywhere.
    let client = sibling("client")?.display().to_string();
    println!("  {client} --addr {addr} ping");
    println!(
        "  export NETMOD_TOKEN=$(NETMOD_SECRET={admin} {client} --addr {addr} --user admin login)"
    );
    println!(
        "  curl -X PUT -H \"Authorization: Bearer $NETMOD_TOKEN\" -d '{{\"content\":\"hi\"}}' http://{http}/docs/hello"
    );
    let secs = args.duration.to_string();
    let (addr_s, db_s) = (addr.to_string(), db_addr.to_string());
    loadgen(&[
        "ping",
        "--addr",
        &addr_s,
        "--conns",
        "50",
        "--pipeline",
        "16",
        "--duration",
        &secs,
    ])?;
    loadgen(&[
        "db",
        "--addr",
        &db_s,
        "--mode",
        "mixed",
        "--conns",
        "50",
        "--pipeline",
        "16",
        "--duration",
        &secs,
    ])?;
    let mut all = Running(std::iter::once(db).chain(servers).chain([proxy]).collect());
    if let Some(why) = all.0.iter_mut().find_map(Managed::exited) {
        return Err(format!("{why} during the run; the others were stopped"));
    }
    if args.keep {
        println!("servers running; Ctrl-C stops them");
        // The signal thread stops the children and ends the process on Ctrl-C; a server that
        // exits on its own ends the run.
        let why = watch(&mut all.0)?;
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        return Err(format!("{why}; the others were stopped"));
    }
    drop(all);
    println!("stopped (`stack --keep` leaves the servers running)");
    Ok(())
}

/// The servers, in the order they started: stopped the other way round when dropped.
struct Running(Vec<Managed>);

impl Drop for Running {
    fn drop(&mut self) {
        while let Some(child) = self.0.pop() {
            drop(child);
        }
    }
}

/// Waits until one of `children` exits, woken by SIGCHLD: why it exited.
fn watch(children: &mut [Managed]) -> Result<String, String> {
    let mut exits = signal_hook::iterator::Signals::new([libc::SIGCHLD])
        .map_err(|e| format!("cannot watch the servers: {e}"))?;
    loop {
        // Checked after the handler is in place, so an exit before it is not missed.
        if let Some(why) = children.iter_mut().find_map(Managed::exited) {
            return Ok(why);
        }
        exits.forever().next();
    }
}

/// `GET path` on `addr` (retried while the proxy's first health checks run): the status line
/// and body.
fn fetch(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: stack\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match got {
            Ok(text) if text.starts_with("HTTP/1.1 200") => {
                let status = text.lines().next().unwrap_or_default().to_string();
                let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
                return Ok(format!("{status} {body}"));
            }
            Ok(_) | Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(text) => return Err(format!("the proxy answered: {text}")),
            Err(e) => return Err(format!("cannot reach the proxy on {addr}: {e}")),
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // A child stopped by the signal handler failed the run: the handler ends the process.
        Err(_) if STOPPING.load(std::sync::atomic::Ordering::SeqCst) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("stack: {e}");
            ExitCode::FAILURE
        }
    }
}
