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
use proxy::{CheckConfig, Mode, ProxyConfig};
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
    #[command(flatten)]
    engine: settings::EngineArgs,
    /// TLS termination on --listen (the admin API stays plain, for loopback use).
    #[command(flatten)]
    tls: shared::tls::ServerTlsArgs,
    #[command(flatten)]
    proxy: ProxySettings,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeArg {
    Http,
    Tcp,
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
    proxy: ProxySettings,
}
/// The strategy used when none is given.
const STRATEGY: &str = "round_robin";

/// The defaults every setting falls back on, and that `--help` shows.
fn d() -> ProxyConfig {
    ProxyConfig::default()
}

/// Seconds of a duration, as flags and the file give them.
fn s(d: Duration) -> f64 {
    d.as_secs_f64()
}

shared::layered! {
    /// Every proxy setting a flag or the configuration file's `[proxy]` table can give, declared
    /// once: clap reads it from the command line, serde from the file (durations there end in
    /// `_secs`), `over` lays the flags over the file, and what neither gives takes
    /// `ProxyConfig::default()` — which `--help` shows.
    #[derive(Debug, Default, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ProxySettings {
        #[arg(long, help = settings::with_default(
            "round_robin, weighted_round_robin, least_connections, power_of_two or consistent_hash",
            STRATEGY))]
        strategy: Option<String>,
        /// What consistent_hash hashes: client_ip (default) or header:NAME.
        #[arg(long)]
        hash_key: Option<String>,
        /// What is balanced [default: http].
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[arg(long, help = settings::with_default(
            "Seconds between health checks of each backend", s(d().check.interval)))]
        #[serde(rename = "check_interval_secs")]
        check_interval: Option<f64>,
        #[arg(long, help = settings::with_default(
            "Seconds a health check may take", s(d().check.timeout)))]
        #[serde(rename = "check_timeout_secs")]
        check_timeout: Option<f64>,
        #[arg(long, help = settings::with_default("Path health checks GET", d().check.path))]
        check_path: Option<String>,
        #[arg(long, help = settings::with_default(
            "Passed checks that bring a backend back", Thresholds::default().rise))]
        rise: Option<u32>,
        #[arg(long, help = settings::with_default(
            "Failed checks (or failed requests in a row) that take a backend out",
            Thresholds::default().fall))]
        fall: Option<u32>,
        #[arg(long, help = settings::with_default(
            "Seconds to open a backend connection", s(d().connect_timeout)))]
        #[serde(rename = "connect_timeout_secs")]
        connect_timeout: Option<f64>,
        #[arg(long, help = settings::with_default(
            "Seconds a backend may stay silent once it has the request: then 504",
            s(d().response_timeout)))]
        #[serde(rename = "response_timeout_secs")]
        response_timeout: Option<f64>,
        #[arg(long, help = settings::with_default(
            "Seconds a request may take to arrive whole, from its first byte: then 408",
            s(d().client_timeout)))]
        #[serde(rename = "client_timeout_secs")]
        client_timeout: Option<f64>,
        /// (`--idle-timeout`, its name before, still works; `[engine] idle_timeout_secs` is
        /// the engine's, which closes a connection silent even mid-request.)
        #[arg(long, alias = "idle-timeout", help = settings::with_default(
            "Seconds an idle keep-alive connection (client or backend) stays open between \
             requests", s(d().keepalive_timeout)))]
        #[serde(rename = "keepalive_timeout_secs", alias = "idle_timeout_secs")]
        keepalive_timeout: Option<f64>,
        #[arg(long, help = settings::with_default(
            "Idle keep-alive connections kept per backend and loop thread",
            d().idle_per_backend))]
        backend_idle: Option<usize>,
        #[arg(long, help = settings::with_default(
            "Seconds between the periodic METRIC log lines, 0 for none",
            d().metrics_interval.map_or(0.0, s)))]
        #[serde(rename = "metrics_interval_secs")]
        metrics_interval: Option<f64>,
        #[arg(long, help = settings::with_default(
            "Largest request body in bytes (over it: 413)", d().max_body))]
        max_body: Option<u64>,
        /// Token the admin API's changes (POST, DELETE; the dashboard's buttons) must present as
        /// `Authorization: Bearer TOKEN` [default: none, anyone who reaches --admin may change
        /// the pool].
        #[arg(long, env = "NETMOD_PROXY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// TCP mode: start each backend connection with a PROXY protocol v2 header naming the
        /// client, so that a backend that trusts this proxy (test-server's --trusted-proxy) sees
        /// the client's address rather than the proxy's [default: off].
        #[arg(long, num_args = 0, default_missing_value = "true")]
        send_proxy_v2: Option<bool>,
        /// Backends from the file (the command line's are `--backend`).
        #[arg(skip)]
        backends: Option<Vec<FileBackend>>,
    }
}

fn main() -> ExitCode {
    shared::memory::fix_mmap_threshold();
    shared::logging::init("proxy");
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
    let addr = shared::addr::resolve(addr)
        .map_err(|e| format!("backend {spec:?}: {e} (HOST:PORT or HOST:PORT,weight=N)"))?;
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
    let fp = args.proxy.over(file.proxy);
    let mut backends = Vec::new();
    for b in fp.backends.iter().flatten() {
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
        fp.strategy.as_deref().unwrap_or(STRATEGY),
        fp.hash_key.as_deref(),
    )?;
    let d = ProxyConfig::default();
    let pick = |given: Option<f64>, default: Duration, what: &str| {
        given.map_or(Ok(default), |v| secs(v, what))
    };
    let mode = match fp.mode.unwrap_or(ModeArg::Http) {
        ModeArg::Http => Mode::Http,
        ModeArg::Tcp => Mode::Tcp,
    };
    let send_proxy_v2 = fp.send_proxy_v2.unwrap_or(false);
    if send_proxy_v2 && mode != Mode::Tcp {
        log::warn!(
            "--send-proxy-v2 applies to TCP mode only (HTTP mode sends X-Forwarded-For); ignored"
        );
    }
    let metrics = fp
        .metrics_interval
        .unwrap_or_else(|| d.metrics_interval.map_or(0.0, s));
    let mut cfg = ProxyConfig {
        mode,
        max_head: d.max_head,
        max_body: fp.max_body.unwrap_or(d.max_body),
        connect_timeout: pick(fp.connect_timeout, d.connect_timeout, "--connect-timeout")?,
        response_timeout: pick(
            fp.response_timeout,
            d.response_timeout,
            "--response-timeout",
        )?,
        client_timeout: pick(fp.client_timeout, d.client_timeout, "--client-timeout")?,
        keepalive_timeout: pick(
            fp.keepalive_timeout,
            d.keepalive_timeout,
            "--keepalive-timeout",
        )?,
        idle_per_backend: fp.backend_idle.unwrap_or(d.idle_per_backend),
        check: CheckConfig {
            interval: pick(fp.check_interval, d.check.interval, "--check-interval")?
                .max(Duration::from_millis(10)),
            timeout: pick(fp.check_timeout, d.check.timeout, "--check-timeout")?,
            path: fp.check_path.clone().unwrap_or(d.check.path),
        },
        metrics_interval: (metrics > 0.0)
            .then(|| secs(metrics, "--metrics-interval"))
            .transpose()?,
        admin_listener: None, // set once the server has it
        admin_token: fp.admin_token.clone().filter(|t| !t.is_empty()),
        send_proxy_v2,
    };
    let thresholds = Thresholds {
        rise: fp.rise.unwrap_or(Thresholds::default().rise).max(1),
        fall: fp.fall.unwrap_or(Thresholds::default().fall).max(1),
    };
    let engine_cfg = settings::engine_config(args.engine.config.as_deref(), &args.engine.settings)
        .map_err(|e| e.to_string())?;
    if backends.is_empty() {
        log::warn!(
            "no backend configured: every request is refused (HTTP 503, a TCP connection closed) \
             until one is added with POST /backends on the admin port, or --backend at start"
        );
    }
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
    shared::settings::raise_open_file_limit();
    let mut server = Server::new(engine_cfg)
        .and_then(|s| shared::tls::listen(s, args.listen, tls))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    cfg.admin_listener = Some(
        server
            .add_listener(args.admin)
            .map_err(|e| format!("cannot listen on {} (admin): {e}", args.admin))?,
    );
    engine::signal::shutdown_on_signals(server.handle()).map_err(|e| e.to_string())?;
    if !args.admin.ip().is_loopback() && cfg.admin_token.is_none() {
        log::warn!(
            "the admin API listens on {} without --admin-token: anyone who reaches that address \
             can add, drain and re-weight backends; give it a token, or keep it on loopback",
            args.admin
        );
    }
    info!(
        "proxy listening on {} ({scheme}) and {} (admin), {} backend(s), strategy {strategy}, {} loop thread(s)",
        server.local_addrs()[0],
        server.local_addrs()[1],
        backends.len(),
        server.threads()
    );
    let cfg = Arc::new(cfg);
    server
        .run(move |_| proxy::assemble(Arc::clone(&cfg), Arc::clone(&pool)))
        .map_err(|e| e.to_string())?;
    info!("proxy stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keepalive_timeout_keeps_its_former_names() {
        for flag in ["--keepalive-timeout", "--idle-timeout"] {
            let args = Args::try_parse_from(["proxy", flag, "5"]).expect(flag);
            assert_eq!(args.proxy.keepalive_timeout, Some(5.0), "{flag}");
        }
        let path =
            std::env::temp_dir().join(format!("proxy-keepalive-{}.toml", std::process::id()));
        for key in ["keepalive_timeout_secs", "idle_timeout_secs"] {
            std::fs::write(&path, format!("[proxy]\n{key} = 7\n")).unwrap();
            let file: File = settings::load(&path).expect(key);
            assert_eq!(file.proxy.keepalive_timeout, Some(7.0), "{key}");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn flags_lie_over_the_file_and_a_bare_switch_is_true() {
        let flags = Args::try_parse_from(["proxy", "--rise", "5", "--send-proxy-v2"]).unwrap();
        assert_eq!(flags.proxy.send_proxy_v2, Some(true));
        let file = ProxySettings {
            rise: Some(9),
            fall: Some(7),
            ..ProxySettings::default()
        };
        let both = flags.proxy.over(file);
        assert_eq!(
            (both.rise, both.fall, both.strategy),
            (Some(5), Some(7), None)
        );
    }
}
