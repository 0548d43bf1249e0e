//! test-server: the client-facing server. Frame-protocol clients ping, log in (tokens signed
//! with a key all instances share) and send data requests, which go to db-server over a
//! multiplexed link; the HTTP front serves documents, /health and /metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use engine::Server;
use log::{info, warn};
use shared::http1::Limits;
use shared::{settings, tls};
use test_server::auth::{self, TokenSigner};
use test_server::dblink::LinkConfig;
use test_server::http_front::HttpConfig;
use test_server::{self, AuthConfig, ServiceConfig, Verifier};

/// Client-facing server of the netmod system (frame protocol, and an HTTP/1.1 front).
///
/// Stops gracefully on SIGTERM or SIGINT: stops accepting, sends every client a SERVER_SHUTDOWN
/// notice, answers requests already received, and exits 0 within the grace period (30 s).
#[derive(Debug, Parser)]
#[command(name = "test-server", version = shared::VERSION)]
struct Args {
    /// Address for frame-protocol clients.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    #[command(flatten)]
    engine: settings::EngineArgs,
    /// Close a client that sends nothing for this many seconds (0 = never).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Per-IP limit of new connections per minute (0 = off, the default; loopback is exempt).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Largest frame accepted, in bytes.
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Largest frame accepted from a connection that has not logged in, in bytes (a login or a
    /// token is small; larger frames get FRAME_TOO_LARGE and the connection closes), so that
    /// connections that never log in cannot hold large buffers.
    #[arg(long, default_value_t = test_server::PRE_LOGIN_MAX_MESSAGE, value_name = "BYTES")]
    pre_login_max_message: usize,
    /// Address of the HTTP/1.1 front (documents, /health, /metrics).
    #[arg(long, default_value = "127.0.0.1:8000")]
    http_listen: SocketAddr,
    /// Accept HTTP PUT and DELETE without a token. For local development and benchmarks only:
    /// anyone who reaches the port can then change documents.
    #[arg(long)]
    insecure_http_writes: bool,
    /// Largest HTTP request body, in bytes (over it: 413).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Failed logins per minute allowed for one user from one client address (then
    /// RATE_LIMITED, before any hashing; 0: no limit). Successful logins do not count.
    #[arg(long, default_value_t = 10)]
    login_rate: u32,
    /// A proxy whose connections to the frame port start with a PROXY protocol v2 header
    /// naming the client (the netmod proxy's --send-proxy-v2, HAProxy's send-proxy-v2); repeat
    /// for several. Its connections must send the header; the client's address then counts
    /// for the login limit and the logs, and the proxy itself is exempt from the per-IP
    /// connection cap.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Seconds an HTTP request may take to arrive, from its first byte (then 408; 0: no limit).
    #[arg(long, default_value_t = 30.0)]
    http_request_timeout: f64,
    /// Memory for documents served without asking db-server, MiB per loop thread (0: off).
    /// Kept coherent by db-server's change notifications: a write through any instance empties
    /// every instance's cache.
    #[arg(long, default_value_t = 16)]
    doc_cache_mb: usize,
    /// db-server's address, HOST:PORT (a host name is resolved once, at start); data requests
    /// and logins go there.
    #[arg(long, default_value = "127.0.0.1:7100", value_parser = shared::addr::resolve)]
    db: SocketAddr,
    /// Connections to db-server per loop thread (requests are multiplexed on them).
    #[arg(long, default_value_t = 2)]
    db_conns: usize,
    /// Which requests to db-server over 10 KiB are gzip-compressed: to a db-server on another
    /// host (remote), always, or never.
    #[arg(long, value_enum, default_value_t = shared::wire::Compress::Remote)]
    db_compress: shared::wire::Compress,
    /// Seconds db-server may stay silent on a link connection before it is closed (and its
    /// requests fail at once): a partition sends no FIN. It is pinged after a third of this.
    #[arg(long, default_value_t = 6.0)]
    db_silence_limit: f64,
    /// Key that signs login tokens. Give every instance the same one so that a token from one
    /// is accepted by all; without it a random key is made, good for this process only.
    #[arg(long, env = "NETMOD_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Create (or reset) the user `admin` with this secret when db-server is reached.
    #[arg(long, env = "NETMOD_ADMIN_SECRET", hide_env_values = true)]
    admin_secret: Option<String>,
    /// Consecutive db-server failures that open the circuit breaker.
    #[arg(long, default_value_t = 5)]
    breaker_failures: u32,
    /// Seconds the breaker stays open before a trial request.
    #[arg(long, default_value_t = 60.0)]
    breaker_open: f64,
    /// First delay (seconds) between reconnections to db-server, doubling each time (±10 %).
    #[arg(long, default_value_t = 2.0)]
    reconnect_base: f64,
    /// Largest delay between reconnections to db-server, in seconds.
    #[arg(long, default_value_t = 60.0)]
    reconnect_max: f64,
    /// Seconds between the server's pings to each frame client (0 = never ping); the first
    /// comes after a random 1/30 to 59/30 of it (1–59 s at the default 30).
    #[arg(long, default_value_t = 30.0)]
    ping_interval: f64,
    /// Disconnect a frame client that has not answered a ping within this many seconds (at
    /// most 3600).
    #[arg(long, default_value_t = 90.0)]
    ping_timeout: f64,
    /// Where SIGUSR1 sends clients (HOST:PORT): every frame client gets a SERVER_MIGRATION
    /// notification naming it, to move there within --migrate-after seconds.
    #[arg(long, value_name = "HOST:PORT")]
    migrate_to: Option<String>,
    /// Seconds clients get to move after SIGUSR1.
    #[arg(long, default_value_t = 5)]
    migrate_after: u32,
    #[command(flatten)]
    tls: tls::ServerTlsArgs,
    /// Which listeners use TLS when --tls-cert is given.
    #[arg(long, value_enum, default_value_t = TlsOn::All)]
    tls_on: TlsOn,
    /// Talk to db-server over TLS 1.3, trusting its certificate from this CA file (PEM).
    #[arg(long, value_name = "PEM")]
    db_tls_ca: Option<PathBuf>,
    /// Name db-server's certificate must carry (with --db-tls-ca).
    #[arg(long, default_value = "localhost")]
    db_tls_name: String,
    /// Client certificate (PEM) shown to db-server, for a db-server started with
    /// --tls-client-ca (mutual TLS). Needs --db-tls-ca and --db-tls-key.
    #[arg(long, value_name = "PEM", requires_all = ["db_tls_key", "db_tls_ca"])]
    db_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --db-tls-cert.
    #[arg(long, value_name = "PEM", requires = "db_tls_cert")]
    db_tls_key: Option<PathBuf>,
    /// argon2id memory (KiB) for the secrets this process hashes (lower only for tests).
    #[arg(long, default_value_t = auth::HashCost::DEFAULT.memory_kib, hide = true)]
    argon2_memory_kib: u32,
}

/// The listeners --tls-cert applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TlsOn {
    /// Frame clients and the HTTP front.
    All,
    /// Frame clients only (e.g. behind a proxy that terminates HTTPS).
    Frames,
    /// The HTTP front only.
    Http,
}

fn main() -> ExitCode {
    shared::memory::fix_mmap_threshold();
    shared::logging::init("test-server");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Past the logger: a start-up error shows whatever RUST_LOG says.
            eprintln!("test-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let flags = settings::EngineSettings {
        idle_timeout_secs: args.idle_timeout,
        rate_limit_per_minute: args.rate_limit,
        max_message_size: args.max_message_size,
        ..args.engine.settings.clone()
    };
    // On by default here: test-server faces clients directly, and each connection may hold a
    // frame's worth of memory before it logs in.
    let mut base = engine::Config::default();
    base.limits.per_ip = Some(engine::PerIpLimit {
        max: test_server::DEFAULT_MAX_CONNECTIONS_PER_IP,
        allow: Vec::new(),
    });
    let mut cfg = settings::engine_config_from(base, args.engine.config.as_deref(), &flags)?;
    if let Some(per_ip) = cfg.limits.per_ip.as_mut() {
        // A trusted proxy carries many clients' connections.
        per_ip.allow.extend(args.trusted_proxies.iter().copied());
    }
    cfg.refuse_message = test_server::refuse_frame();
    cfg.rate_limited_message = test_server::rate_limited_frame();
    let secret = match args.token_secret {
        Some(s) if !s.is_empty() => s.into_bytes(),
        _ => {
            warn!("no --token-secret: tokens from this process are valid here only");
            let mut k = vec![0u8; 32];
            getrandom::fill(&mut k).map_err(|e| format!("no randomness for a key: {e}"))?;
            k
        }
    };
    let hash_cost = auth::HashCost {
        memory_kib: args.argon2_memory_kib,
        passes: if args.argon2_memory_kib < auth::HashCost::DEFAULT.memory_kib {
            1
        } else {
            auth::HashCost::DEFAULT.passes
        },
    };
    let decoy = auth::hash_secret("no such user", hash_cost)?;
    let bootstrap = match args.admin_secret.filter(|s| !s.is_empty()) {
        Some(s) => Some(("admin".to_string(), auth::hash_secret(&s, hash_cost)?)),
        None => None,
    };
    let auth = Arc::new(AuthConfig {
        signer: TokenSigner::new(&secret, Duration::from_secs(args.token_lifetime)),
        verifier: Verifier::new(2, 1024)?,
        decoy,
        bootstrap,
        hash_cost,
        revocations: Default::default(),
        login_limit: (args.login_rate > 0).then(|| {
            engine::RateLimiter::new(engine::RateLimit {
                burst: args.login_rate,
                per: Duration::from_secs(60),
                allow: Vec::new(),
            })
        }),
        // Ten users' worth per address: a password spray over user names is bounded too.
        login_spray_limit: (args.login_rate > 0).then(|| {
            engine::RateLimiter::new(engine::RateLimit {
                burst: args.login_rate.saturating_mul(10),
                per: Duration::from_secs(60),
                allow: Vec::new(),
            })
        }),
    });
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let mut link = LinkConfig::new(args.db);
    link.conns = args.db_conns;
    link.compress = args.db_compress;
    link.silence_limit = secs(args.db_silence_limit).max(Duration::from_millis(300));
    link.ping_interval = link.silence_limit / 3;
    link.breaker_failures = args.breaker_failures;
    link.breaker_open = secs(args.breaker_open);
    link.backoff = (secs(args.reconnect_base), secs(args.reconnect_max), 0.1);
    link.max_message = cfg.max_message_size;
    if let Some(ca) = &args.db_tls_ca {
        let identity = args.db_tls_cert.as_deref().zip(args.db_tls_key.as_deref());
        link.tls = Some((
            tls::client_config(Some(ca), identity)?,
            tls::server_name(&args.db_tls_name)?,
        ));
    }
    let link_scheme = if link.tls.is_some() { "TLS" } else { "plain" };
    let server_tls = args.tls.config(None)?;
    let listener_tls = |on: TlsOn, reply: Vec<u8>| {
        server_tls
            .as_ref()
            .filter(|_| args.tls_on == TlsOn::All || args.tls_on == on)
            .map(|config| engine::tls::TlsListener {
                config: match on {
                    TlsOn::Http => tls::for_http(config),
                    _ => Arc::clone(config),
                },
                plaintext_reply: reply,
            })
    };
    let frames_tls = listener_tls(TlsOn::Frames, shared::wire::plaintext_on_tls_frame());
    let http_tls = listener_tls(TlsOn::Http, shared::http1::plain_http_on_tls_reply());
    if args.insecure_http_writes {
        warn!(
            "--insecure-http-writes: anyone reaching {} can change documents",
            args.http_listen
        );
    }
    let http = HttpConfig {
        limits: Limits {
            max_head: 8192,
            max_body: args.max_body,
        },
        insecure_writes: args.insecure_http_writes,
        auth: Some(Arc::clone(&auth)),
        cache_bytes: args.doc_cache_mb.saturating_mul(1 << 20),
        request_timeout: Duration::try_from_secs_f64(args.http_request_timeout)
            .map_err(|_| "--http-request-timeout must be ≥ 0")?,
        ..HttpConfig::default()
    };
    let liveness = (args.ping_interval > 0.0).then(|| {
        let interval = secs(args.ping_interval);
        test_server::Liveness {
            interval,
            // The original design's 1–59 s spread for 30 s pings, scaled with the interval.
            first: (interval / 30, interval * 59 / 30),
            timeout: secs(args.ping_timeout),
        }
    });
    let mut service = ServiceConfig {
        max_message_size: cfg.max_message_size,
        pre_login_max_message: args.pre_login_max_message,
        db: Some(link),
        auth: Some(auth),
        http: Some(http),
        liveness,
        trusted_proxies: args.trusted_proxies.clone(),
        ..ServiceConfig::default()
    };
    let scheme = |t: &Option<engine::tls::TlsListener>| if t.is_some() { "TLS" } else { "plain" };
    let schemes = (scheme(&frames_tls), scheme(&http_tls), link_scheme);
    shared::settings::raise_open_file_limit();
    let server = Server::new(cfg)
        .and_then(|s| tls::listen(s, args.listen, frames_tls))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut server = server;
    let http_listener = tls::add_listener(&mut server, args.http_listen, http_tls)
        .map_err(|e| format!("cannot listen on {}: {e}", args.http_listen))?;
    if let Some(http) = service.http.as_mut() {
        http.listener = Some(http_listener);
    }
    engine::signal::shutdown_on_signals(server.handle())?;
    if let Some(target) = args.migrate_to.clone() {
        let (host, port) = target
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--migrate-to wants HOST:PORT, got {target:?}"))?;
        let loops = Arc::clone(&service.loops);
        let after = args.migrate_after;
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
        std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let n = test_server::migrate(&loops, &host, port, after);
                    info!("SIGUSR1: clients of {n} loop(s) told to move to {host}:{port} within {after} s");
                }
            })?;
    }
    info!(
        "test-server listening on {} (frames, {}) and {} (HTTP, {}), {} loop thread(s), db-server {} ({})",
        server.local_addrs()[0],
        schemes.0,
        server.local_addrs()[1],
        schemes.1,
        server.threads(),
        args.db,
        schemes.2
    );
    server.run(move |_| test_server::service(service.clone()))?;
    info!("test-server stopped");
    Ok(())
}
