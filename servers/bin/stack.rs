//! stack: runs the system locally as child processes and shows it working.
//!
//! Today the system is test-server alone: `stack` starts it, drives it with `loadgen ping`,
//! prints the figures, and (with `--keep`) leaves it serving until Ctrl-C. db-server and the
//! proxy join as they land.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

/// Starts the netmod servers locally, runs a short load against them, and stops them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Frame-protocol address of test-server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
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

fn start_test_server(listen: SocketAddr) -> Result<(Managed, SocketAddr), String> {
    let mut child = Command::new(sibling("test-server")?)
        .args(["--listen", &listen.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start test-server: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr from test-server")?;
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
    Err("test-server exited before listening (see its log above)".into())
}

fn run(args: Args) -> Result<(), String> {
    let (server, addr) = start_test_server(args.listen)?;
    println!("test-server: frames on {addr}");
    println!(
        "running: loadgen ping --addr {addr} --conns 50 --pipeline 16 --duration {}",
        args.duration
    );
    let status = Command::new(sibling("loadgen")?)
        .args([
            "ping",
            "--addr",
            &addr.to_string(),
            "--conns",
            "50",
            "--pipeline",
            "16",
        ])
        .args(["--duration", &args.duration.to_string()])
        .status()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    if !status.success() {
        return Err(format!("loadgen failed: {status}"));
    }
    if args.keep {
        println!("servers running; Ctrl-C stops them");
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(server);
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
