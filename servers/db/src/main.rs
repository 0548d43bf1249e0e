//! db-server: executes SQL for the other servers over the frame protocol, on embedded SQLite
//! or on PostgreSQL with read replicas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use db::monitor::Monitor;
use db::watch::Watchers;
use db::{DbService, PgConfig, PoolConfig, SqliteConfig};
use engine::Server;
use log::info;
use shared::settings;

/// Database server of the netmod system: CRUD and atomic batches over the frame protocol.
///
/// Embedded SQLite by default (WAL, synchronous=FULL: an acknowledged write survives a crash or
/// power loss; concurrent writes are group-committed), or PostgreSQL with --postgres URL, whose
/// reads go round-robin to the --replica URLs. Database calls run on worker threads, never on
/// the event loop. SIGTERM/SIGINT: stop accepting, answer requests in flight, exit 0.
#[derive(Debug, Parser)]
#[command(name = "db-server", version = shared::VERSION)]
#[command(mut_arg("threads", |a| a.help(
    "Event-loop threads [default: 1; the database, not the network, is the bottleneck]"
)))]
struct Args {
    /// Address for frame-protocol clients (test-server, loadgen, client).
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// SQLite database file, created if missing (the default backend).
    #[arg(long, default_value = "netmod.db", conflicts_with = "postgres")]
    sqlite: PathBuf,
    /// Use PostgreSQL: the primary's URL, e.g. postgresql://user:pass@127.0.0.1:5432/db; or
    /// every node's, postgresql://user:pass@pg1,pg2/db?target_session_attrs=read-write, to
    /// follow the primary across a failover (docs/operations.md).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// A PostgreSQL read replica (hot standby) URL; repeat for several.
    #[arg(long, value_name = "URL", requires = "postgres")]
    replica: Vec<String>,
    /// Reader threads, each with its own connection(s) [default: cores]. SQLite adds one
    /// writer thread; PostgreSQL adds as many writers as --writers says.
    #[arg(long)]
    workers: Option<usize>,
    /// PostgreSQL writer threads, each with a connection to the primary. Each commits the
    /// writes queued for it together, so a few suffice [default: 2].
    #[arg(long)]
    writers: Option<usize>,
    /// PostgreSQL: how long (ms) an AFTER_INDEX read waits for a replica to catch up before the
    /// primary answers.
    #[arg(long, default_value_t = 100)]
    replica_wait_ms: u64,
    /// PostgreSQL: seconds a server may leave a connection attempt, or data db-server sent,
    /// unanswered before that connection counts as dead (libpq connect_timeout,
    /// tcp_user_timeout and TCP keepalives; a URL's own settings win; 0 = the system's
    /// defaults, which wait about 15 minutes on a host cut off by the network). A primary
    /// that cannot be reached is then tried once a second, and requests that need it fail
    /// at once (UNAVAILABLE) meanwhile.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    postgres_timeout_secs: u64,
    /// PostgreSQL: the login role statements sent through test-server run as, on connections
    /// of their own (an ordinary LOGIN role an administrator creates; docs/operations.md has
    /// the lines). Its password, if it needs one, comes from NETMOD_PG_CLIENT_PASSWORD.
    #[arg(long, default_value = db::sandbox::PG_ROLE, value_name = "ROLE")]
    pg_client_role: String,
    /// The longest a client's statement (one sent through test-server) may run, in
    /// milliseconds: past it the database stops it and the client gets TIMEOUT; a request
    /// may ask for less (DataRequest.timeout_ms). 0 = no limit.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    statement_timeout_ms: u64,
    /// Interactive transactions and cursors one client user may hold open at once (of the 64
    /// the server keeps); one more is OVERLOADED until one ends.
    #[arg(long, default_value_t = db::txn::DEFAULT_PER_USER, value_name = "N")]
    max_txns_per_user: usize,
    /// Log statements slower than this many milliseconds (0 = never).
    #[arg(long, default_value_t = 100)]
    slow_query_ms: u64,
    /// SQLite page cache per connection, in MiB (each reader, the writer, each open
    /// transaction; used as pages are read). SQLite's own default is 2.
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    sqlite_cache_mb: u64,
    /// How much of the SQLite file is read through a memory map, in MiB: address space, served
    /// from the kernel's page cache and shared by every connection (0 = read with pread only).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    sqlite_mmap_mb: u64,
    /// Requests queued for the workers before new ones get OVERLOADED.
    #[arg(long, default_value_t = 10_000)]
    queue: usize,
    /// Which answers over 10 KiB are gzip-compressed: those to peers on another host (remote),
    /// always, or never. On a loopback connection compression costs this server's loop far
    /// more than it saves.
    #[arg(long, value_enum, default_value_t = shared::wire::Compress::Remote)]
    compress: shared::wire::Compress,
    #[command(flatten)]
    engine: settings::EngineArgs,
    #[command(flatten)]
    tls: shared::tls::ServerTlsArgs,
    /// Require TLS clients (test-servers) to present a certificate signed by a CA in this file
    /// (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    shared::memory::fix_mmap_threshold();
    shared::logging::init("db-server");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Past the logger: a start-up error shows whatever RUST_LOG says.
            eprintln!("db-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // One loop thread unless the file or a flag says otherwise: the statements run on the
    // workers.
    let mut base = engine::Config::default();
    base.threads = 1;
    let cfg =
        settings::engine_config_from(base, args.engine.config.as_deref(), &args.engine.settings)?;
    let readers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let monitor = Arc::new(Monitor::new(
        Some(Duration::from_millis(args.slow_query_ms)).filter(|d| !d.is_zero()),
    ));
    let (backend, what) = match &args.postgres {
        Some(url) => (
            PoolConfig::Postgres(PgConfig {
                url: url.clone(),
                replicas: args.replica.clone(),
                readers,
                writers: args.writers.unwrap_or(2),
                queue: args.queue,
                max_txns: 64,
                max_txns_per_user: args.max_txns_per_user,
                replica_wait: Duration::from_millis(args.replica_wait_ms),
                replica_retry: Duration::from_secs(5),
                timeout: Duration::from_secs(args.postgres_timeout_secs),
                client_role: args.pg_client_role.clone(),
                client_password: std::env::var("NETMOD_PG_CLIENT_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
                statement_timeout: Duration::from_millis(args.statement_timeout_ms),
            }),
            format!("PostgreSQL with {} replica(s)", args.replica.len()),
        ),
        None => (
            PoolConfig::Sqlite(SqliteConfig {
                readers,
                queue: args.queue,
                max_txns_per_user: args.max_txns_per_user,
                memory: db::sqlite::SqliteMemory {
                    cache_kib: args.sqlite_cache_mb.saturating_mul(1024),
                    mmap_bytes: args.sqlite_mmap_mb.saturating_mul(1 << 20),
                },
                ..SqliteConfig::new(args.sqlite.clone())
            }),
            format!("SQLite {}", args.sqlite.display()),
        ),
    };
    let max = cfg.max_message_size;
    let tls = args
        .tls
        .config(args.tls_client_ca.as_deref())?
        .map(|config| engine::tls::TlsListener {
            config,
            plaintext_reply: shared::wire::plaintext_on_tls_frame(),
        });
    let scheme = match (&tls, &args.tls_client_ca) {
        (None, _) => "plain",
        (Some(_), None) => "TLS",
        (Some(_), Some(_)) => "TLS, client certificates required",
    };
    // The port first: a port in use fails before any database file is created.
    shared::settings::raise_open_file_limit();
    let server = Server::new(cfg)
        .and_then(|s| shared::tls::listen(s, args.listen, tls))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let pool = backend
        .start(monitor)
        .map_err(|e| format!("cannot open the database ({what}): {}", e.message))?;
    let pool = Arc::new(pool);
    engine::signal::shutdown_on_signals(server.handle())?;
    info!(
        "db-server listening on {} (frames, {scheme}), database {what}, commit index {}",
        server.local_addrs()[0],
        pool.committed_index()
    );
    let watchers = Watchers::new();
    let statement_timeout = Duration::from_millis(args.statement_timeout_ms);
    server.run(move |_| {
        DbService::new(Arc::clone(&pool), Arc::clone(&watchers), max)
            .with_statement_timeout(statement_timeout)
            .with_compression(args.compress)
    })?;
    info!("db-server stopped");
    Ok(())
}
