//! test-server: the client-facing server. This version answers the frame protocol's Ping and
//! reports errors; authentication, the db-server link and the HTTP front come next.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use engine::Server;
use log::{error, info};
use netmod::settings;
use netmod::test_server::{self, FrameService, ServiceConfig};

/// Client-facing server of the netmod system (frame protocol over TCP).
///
/// Stops gracefully on SIGTERM or SIGINT: stops accepting, sends every client a SERVER_SHUTDOWN
/// notice, answers requests already received, and exits 0 within the grace period (30 s).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address for frame-protocol clients.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Event-loop threads [default: number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// TOML file with an [engine] table (see docs/operations.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Most connections open at once [default: open-file limit less 64].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Close a client that sends nothing for this many seconds (0 = never).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Per-IP limit of new connections per minute (0 = off, the default; loopback is exempt).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Largest frame accepted, in bytes.
    #[arg(long)]
    max_message_size: Option<usize>,
}

fn main() -> ExitCode {
    netmod::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("test-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let flags = settings::EngineSettings {
        threads: args.threads,
        max_connections: args.max_connections,
        idle_timeout_secs: args.idle_timeout,
        rate_limit_per_minute: args.rate_limit,
        max_message_size: args.max_message_size,
        ..Default::default()
    };
    let mut cfg = settings::engine_config(args.config.as_deref(), &flags)?;
    cfg.refuse_message = test_server::refuse_frame();
    cfg.rate_limited_message = test_server::rate_limited_frame();
    let service = ServiceConfig {
        max_message_size: cfg.max_message_size,
        ..ServiceConfig::default()
    };
    let server = Server::new(cfg)
        .and_then(|s| s.listen(args.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    engine::signal::shutdown_on_signals(server.handle())?;
    info!(
        "test-server listening on {} (frames), {} loop thread(s)",
        server.local_addrs()[0],
        server.threads()
    );
    server.run(move |_| FrameService::new(service.clone()))?;
    info!("test-server stopped");
    Ok(())
}
