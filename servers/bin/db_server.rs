//! db-server: executes SQL for the other servers over the frame protocol, on embedded SQLite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use engine::Server;
use log::{error, info};
use netmod::db::monitor::Monitor;
use netmod::db::{DbService, Pool, PoolConfig};
use netmod::settings;

/// Database server of the netmod system: CRUD and atomic batches over the frame protocol.
///
/// Embedded SQLite (WAL, synchronous=FULL: an acknowledged write survives a crash or power
/// loss); concurrent writes are group-committed. Database calls run on worker threads, never on
/// the event loop. SIGTERM/SIGINT: stop accepting, answer requests in flight, exit 0.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address for frame-protocol clients (test-server, loadgen, client).
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// SQLite database file, created if missing.
    #[arg(long, default_value = "netmod.db")]
    sqlite: PathBuf,
    /// Reader threads, each with its own connection (one more thread writes) [default: cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Event-loop threads [default: 1; the database, not the network, is the bottleneck].
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Log statements slower than this many milliseconds (0 = never).
    #[arg(long, default_value_t = 100)]
    slow_query_ms: u64,
    /// Requests queued for the workers before new ones get OVERLOADED.
    #[arg(long, default_value_t = 10_000)]
    queue: usize,
    /// TOML file with an [engine] table (see docs/operations.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Most connections open at once [default: open-file limit less 64].
    #[arg(long)]
    max_connections: Option<usize>,
}

fn main() -> ExitCode {
    netmod::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("db-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let flags = settings::EngineSettings {
        threads: Some(args.threads),
        max_connections: args.max_connections,
        ..Default::default()
    };
    let cfg = settings::engine_config(args.config.as_deref(), &flags)?;
    let readers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let monitor = Arc::new(Monitor::new(
        Some(Duration::from_millis(args.slow_query_ms)).filter(|d| !d.is_zero()),
    ));
    let pool = Pool::start(
        PoolConfig {
            path: args.sqlite.clone(),
            readers,
            queue: args.queue,
            max_group: 256,
            busy_timeout: Duration::from_secs(5),
            max_txns: 64,
        },
        monitor,
    )
    .map_err(|e| format!("cannot open {}: {}", args.sqlite.display(), e.message))?;
    let pool = Arc::new(pool);
    let max = cfg.max_message_size;
    let server = Server::new(cfg)
        .and_then(|s| s.listen(args.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    engine::signal::shutdown_on_signals(server.handle())?;
    info!(
        "db-server listening on {} (frames), database {}, commit index {}",
        server.local_addrs()[0],
        args.sqlite.display(),
        pool.committed_index()
    );
    server.run(move |_| DbService::new(Arc::clone(&pool), max))?;
    info!("db-server stopped");
    Ok(())
}
