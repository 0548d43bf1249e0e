//! stack: runs the system locally as child processes and shows it working.
//!
//! Today: db-server on embedded SQLite and test-server. `stack` starts both, drives test-server
//! with `loadgen ping` and db-server with `loadgen db --mode mixed`, prints the figures, and
//! (with `--keep`) leaves them serving until Ctrl-C. The proxy joins when it lands.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};

use clap::Parser;

/// Starts the netmod servers locally, runs a short load against them, and stops them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Frame-protocol address of test-server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// HTTP address of test-server (documents, /health, /metrics).
    #[arg(long, default_value = "127.0.0.1:8000")]
    http_listen: SocketAddr,
    /// Frame-protocol address of db-server.
    #[arg(long, default_value = "127.0.0.1:7100")]
    db_listen: SocketAddr,
    /// db-server's SQLite file.
    #[arg(long, default_value = "netmod.db")]
    sqlite: PathBuf,
    /// Seconds of load to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Keep the servers running after the load, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// A child killed (SIGTERM, then waited for) when dropped.
struct Managed(Child);

impl Drop for Managed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
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

/// Starts one of the servers and waits for its "listening on ADDR" log line.
fn start(bin: &str, args: &[&str]) -> Result<(Managed, SocketAddr), String> {
    let mut child = Command::new(sibling(bin)?)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let stderr = child.stderr.take().ok_or(format!("no stderr from {bin}"))?;
    let child = Managed(child);
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        eprintln!("{line}");
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            let addr = addr
                .parse()
                .map_err(|_| format!("unexpected line from test-server: {line}"))?;
            // Keep echoing the server's log.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
            return Ok((child, addr));
        }
    }
    Err(format!("{bin} exited before listening (see its log above)"))
}

fn loadgen(args: &[&str]) -> Result<(), String> {
    println!("running: loadgen {}", args.join(" "));
    let status = Command::new(sibling("loadgen")?)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("loadgen failed: {status}"))
    }
}

fn run(args: Args) -> Result<(), String> {
    let sqlite = args.sqlite.to_string_lossy().into_owned();
    let (db, db_addr) = start(
        "db-server",
        &["--listen", &args.db_listen.to_string(), "--sqlite", &sqlite],
    )?;
    println!("db-server: frames on {db_addr}, SQLite file {sqlite}");
    let http = args.http_listen.to_string();
    let (server, addr) = start(
        "test-server",
        &[
            "--listen",
            &args.listen.to_string(),
            "--http-listen",
            &http,
            "--db",
            &db_addr.to_string(),
        ],
    )?;
    println!("test-server: frames on {addr}, HTTP on {http}, data through db-server {db_addr}");
    println!("  try: curl http://{http}/health   curl http://{http}/docs/example");
    if std::env::var_os("NETMOD_ADMIN_SECRET").is_none() {
        println!("  (set NETMOD_ADMIN_SECRET to have test-server create the user `admin`)");
    }
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
    if args.keep {
        println!("servers running; Ctrl-C stops them");
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
            .map_err(|e| e.to_string())?;
        // Blocks until the first of them arrives.
        let _ = signals.forever().next();
    }
    drop(server);
    drop(db);
    println!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stack: {e}");
            ExitCode::FAILURE
        }
    }
}
