//! proxy: HTTP/1.1 reverse proxy and load balancer (or, with `--mode tcp`, a TCP balancer for
//! frame-protocol clients), with health checks and an admin API. See docs/proxy.md.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use engine::Server;
use log::info;
use proxy::pool::{Pool, Thresholds};
use proxy::strategy::Strategy;
use proxy::{CheckConfig, Mode, Proxy, ProxyConfig};
use serde::Deserialize;
use shared::settings;

/// Reverse proxy and load balancer of the netmod system.
///
/// Balances HTTP requests (or, with --mode tcp, whole connections) over the backends, checks
/// their health, and serves an admin API (GET /status, POST and DELETE /backends, POST
/// /strategy, GET /metrics). SIGTERM or SIGINT: stops accepting, finishes what is in flight.
#[derive(Debug, Parser)]
#[command(name = "proxy", version = shared::VERSION)]
struct Args {
    /// Address for clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin: SocketAddr,
    /// A backend, HOST:PORT or HOST:PORT,weight=N (repeat the flag for each).
    #[arg(long = "backend", value_name = "ADDR[,weight=N]")]
    backends: Vec<String>,
    /// round_robin, weighted_round_robin, least_connections, power_of_two or consistent_hash
    /// [default: round_robin].
    #[arg(long)]
    strategy: Option<String>,
    /// What consistent_hash hashes: client_ip (default) or header:NAME.
    #[arg(long)]
    hash_key: Option<String>,
    /// What is balanced [default: http].
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    #[command(flatten)]
    engine: settings::EngineArgs,
    /// TLS termination on --listen (the admin API stays plain, for loopback use).
    #[command(flatten)]
    tls: shared::tls::ServerTlsArgs,
    /// Seconds between health checks of each backend [default: 2].
    #[arg(long)]
    check_interval: Option<f64>,
    /// Seconds a health check may take [default: 1].
    #[arg(long)]
    check_timeout: Option<f64>,
    /// Path health checks GET [default: /health].
    #[arg(long)]
    check_path: Option<String>,
    /// Passed checks that bring a backend back [default: 2].
    #[arg(long)]
    rise: Option<u32>,
    /// Failed checks (or failed requests in a row) that take a backend out [default: 3].
    #[arg(long)]
    fall: Option<u32>,
    /// Seconds to open a backend connection [default: 3].
    #[arg(long)]
    connect_timeout: Option<f64>,
    /// Seconds a backend may stay silent once it has the request: then 504 [default: 30].
    #[arg(long)]
    response_timeout: Option<f64>,
    /// Seconds a request may take to arrive whole, from its first byte: then 408 [default: 30].
    #[arg(long)]
    client_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection stays open [default: 60].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Idle keep-alive connections kept per backend and loop thread [default: 512].
    #[arg(long)]
    backend_idle: Option<usize>,
    /// Seconds between the periodic METRIC log lines, 0 for none [default: 10].
    #[arg(long)]
    metrics_interval: Option<f64>,
    /// Largest request body in bytes (over it: 413) [default: 1 GiB].
    #[arg(long)]
    max_body: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeArg {
    Http,
    Tcp,
}

/// The `[proxy]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxy {
    #[serde(default)]
    backends: Vec<FileBackend>,
    strategy: Option<String>,
    hash_key: Option<String>,
    mode: Option<ModeArg>,
    check_interval_secs: Option<f64>,
    check_timeout_secs: Option<f64>,
    check_path: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    connect_timeout_secs: Option<f64>,
    response_timeout_secs: Option<f64>,
    client_timeout_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    backend_idle: Option<usize>,
    metrics_interval_secs: Option<f64>,
    max_body: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileBackend {
    Plain(String),
    Weighted {
        address: String,
        weight: Option<u32>,
    },
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    proxy: FileProxy,
}

fn main() -> ExitCode {
    shared::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, and past the logger: a start-up error shows whatever RUST_LOG says.
            eprintln!("proxy: {e}");
            ExitCode::from(2)
        }
    }
}

fn backend(spec: &str) -> Result<(SocketAddr, u32), String> {
    let (addr, rest) = spec.split_once(',').unwrap_or((spec, ""));
    // HOST:PORT, a name resolved once at start (its first address).
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr.trim())
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!("backend {spec:?}: want HOST:PORT or HOST:PORT,weight=N (a name that resolves)")
        })?;
    let weight = match rest.trim() {
        "" => 1,
        w => w
            .strip_prefix("weight=")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("backend {spec:?}: weight is weight=1..1000"))?,
    };
    Ok((addr, weight))
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    settings::secs(v, what).map_err(|e| e.to_string())
}

fn run(args: Args) -> Result<(), String> {
    let file: File = match &args.engine.config {
        Some(p) => settings::load(p).map_err(|e| e.to_string())?,
        None => File::default(),
    };
    let fp = file.proxy;
    let mut backends = Vec::new();
    for b in &fp.backends {
        backends.push(match b {
            FileBackend::Plain(s) => backend(s)?,
            FileBackend::Weighted { address, weight } => {
                backend(&format!("{address},weight={}", weight.unwrap_or(1)))?
            }
        });
    }
    for b in &args.backends {
        backends.push(backend(b)?);
    }
    let strategy = Strategy::parse(
        args.strategy
            .as_deref()
            .or(fp.strategy.as_deref())
            .unwrap_or("round_robin"),
        args.hash_key.as_deref().or(fp.hash_key.as_deref()),
    )?;
    let d = ProxyConfig::default();
    let pick = |flag: Option<f64>, file: Option<f64>, default: Duration, what: &str| {
        flag.or(file).map_or(Ok(default), |v| secs(v, what))
    };
    let mode = match args.mode.or(fp.mode).unwrap_or(ModeArg::Http) {
        ModeArg::Http => Mode::Http,
        ModeArg::Tcp => Mode::Tcp,
    };
    let metrics = args
        .metrics_interval
        .or(fp.metrics_interval_secs)
        .unwrap_or(10.0);
    let mut cfg = ProxyConfig {
        mode,
        max_head: d.max_head,
        max_body: args.max_body.or(fp.max_body).unwrap_or(d.max_body),
        connect_timeout: pick(
            args.connect_timeout,
            fp.connect_timeout_secs,
            d.connect_timeout,
            "--connect-timeout",
        )?,
        response_timeout: pick(
            args.response_timeout,
            fp.response_timeout_secs,
            d.response_timeout,
            "--response-timeout",
        )?,
        client_timeout: pick(
            args.client_timeout,
            fp.client_timeout_secs,
            d.client_timeout,
            "--client-timeout",
        )?,
        idle_timeout: pick(
            args.idle_timeout,
            fp.idle_timeout_secs,
            d.idle_timeout,
            "--idle-timeout",
        )?,
        idle_per_backend: args
            .backend_idle
            .or(fp.backend_idle)
            .unwrap_or(d.idle_per_backend),
        check: CheckConfig {
            interval: pick(
                args.check_interval,
                fp.check_interval_secs,
                d.check.interval,
                "--check-interval",
            )?
            .max(Duration::from_millis(10)),
            timeout: pick(
                args.check_timeout,
                fp.check_timeout_secs,
                d.check.timeout,
                "--check-timeout",
            )?,
            path: args.check_path.or(fp.check_path).unwrap_or(d.check.path),
        },
        metrics_interval: (metrics > 0.0)
            .then(|| secs(metrics, "--metrics-interval"))
            .transpose()?,
        admin_listener: None, // set once the server has it
    };
    let thresholds = Thresholds {
        rise: args.rise.or(fp.rise).unwrap_or(2).max(1),
        fall: args.fall.or(fp.fall).unwrap_or(3).max(1),
    };
    let engine_cfg =
        settings::engine_config(args.engine.config.as_deref(), &args.engine.settings())
            .map_err(|e| e.to_string())?;
    let pool = Arc::new(Pool::new(&backends, strategy.clone(), thresholds));
    let tls = args
        .tls
        .config(None)
        .map_err(|e| e.to_string())?
        .map(|config| engine::tls::TlsListener {
            config: match mode {
                Mode::Http => shared::tls::for_http(&config),
                Mode::Tcp => config,
            },
            plaintext_reply: match mode {
                Mode::Http => shared::http1::plain_http_on_tls_reply(),
                Mode::Tcp => Vec::new(),
            },
        });
    let scheme = match (mode, tls.is_some()) {
        (Mode::Http, false) => "http",
        (Mode::Http, true) => "https",
        (Mode::Tcp, false) => "tcp",
        (Mode::Tcp, true) => "tcp over TLS",
    };
    let mut server = Server::new(engine_cfg)
        .and_then(|s| shared::tls::listen(s, args.listen, tls))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    cfg.admin_listener = Some(
        server
            .add_listener(args.admin)
            .map_err(|e| format!("cannot listen on {} (admin): {e}", args.admin))?,
    );
    engine::signal::shutdown_on_signals(server.handle()).map_err(|e| e.to_string())?;
    info!(
        "proxy listening on {} ({scheme}) and {} (admin), {} backend(s), strategy {strategy}, {} loop thread(s)",
        server.local_addrs()[0],
        server.local_addrs()[1],
        backends.len(),
        server.threads()
    );
    let cfg = Arc::new(cfg);
    server
        .run(move |_| Proxy::new(Arc::clone(&cfg), Arc::clone(&pool)))
        .map_err(|e| e.to_string())?;
    info!("proxy stopped");
    Ok(())
}
