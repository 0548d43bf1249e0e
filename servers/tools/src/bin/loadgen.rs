//! loadgen: drives a server with pipelined requests (pings, SQL against db-server, frames
//! through test-server, or HTTP GETs) and reports throughput and latency.
//!
//! The last line printed is always `rps=<float> p50_us=<float> p99_us=<float> errors=<int>`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tools::loadgen::{self, DbMode, DbWorkload, FrameOp, FramesWorkload, LoadConfig, PingWorkload};

/// Load generator for the netmod servers (runs on the same engine, client side).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version = shared::VERSION)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Ping/Pong round trips against any frame-protocol server (test-server, db-server).
    Ping {
        #[command(flatten)]
        load: LoadArgs,
        /// Bytes of payload in each ping.
        #[arg(long, default_value_t = 0)]
        payload: usize,
    },
    /// SQL against db-server: point reads, single-row durable inserts, or a 90/10 mix. Creates
    /// and seeds its table (loadgen_kv) when missing.
    Db {
        #[command(flatten)]
        load: LoadArgs,
        /// read, write or mixed (90 % reads).
        #[arg(long, value_enum, default_value_t = ModeArg::Read)]
        mode: ModeArg,
        /// Rows to seed and read from.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Authenticated requests through test-server (to db-server for get and put): every
    /// connection presents a token from one login first.
    Frames {
        #[command(flatten)]
        load: LoadArgs,
        /// ping (test-server alone), get (document reads) or put (document updates).
        #[arg(long, value_enum, default_value_t = OpArg::Get)]
        op: OpArg,
        /// User to log in as.
        #[arg(long, default_value = "admin")]
        user: String,
        /// The user's secret.
        #[arg(long, env = "NETMOD_SECRET", hide_env_values = true)]
        secret: String,
        /// Documents to store and spread the requests over.
        #[arg(long, default_value_t = 1000)]
        docs: u64,
        /// Send nothing after the handshake: hold the authenticated connections open for the
        /// duration, answering the server's pings (for memory-per-client measurements). A line
        /// `held=<open at the end> of=<asked>` comes before the usual last line; the exit status
        /// is 0 only if every connection was still open.
        #[arg(long)]
        hold: bool,
    },
    /// HTTP/1.1 GETs of one path over keep-alive connections (test-server's HTTP front, the
    /// proxy, or any HTTP server); 2xx and 3xx answers count as successes. HTTPS with `--tls`
    /// or `--tls-ca`.
    Http {
        #[command(flatten)]
        load: LoadArgs,
        /// The path to GET; with --docs, the prefix of the documents' paths.
        #[arg(long, default_value = "/docs/example")]
        path: String,
        /// Spread the requests over this many documents, PATH0 to PATH(N-1), each written once
        /// first (one PUT apiece; test-server needs --insecure-http-writes). 0: PATH alone.
        #[arg(long, value_name = "N", default_value_t = 0)]
        docs: u32,
        /// With --docs: this percentage of the requests are PUTs of the chosen document
        /// (0–100).
        #[arg(long, value_name = "PCT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        put_percent: u8,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OpArg {
    Ping,
    Get,
    Put,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Read,
    Write,
    Mixed,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Server address, HOST:PORT [default: 127.0.0.1:7000, test-server's frame port; for `db`,
    /// 127.0.0.1:7100, db-server's; for `http`, 127.0.0.1:8080, the proxy's].
    #[arg(long, value_name = "HOST:PORT", value_parser = shared::addr::resolve)]
    addr: Option<SocketAddr>,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Close each connection after this many answers and open a new one: connect, request,
    /// close cycles (with 1, a new connection per request). Default: keep connections open.
    #[arg(long, value_name = "N")]
    requests_per_conn: Option<u64>,
    #[command(flatten)]
    tls: shared::tls::ClientTlsArgs,
}

/// test-server's frame port, the default of `ping` and `frames`.
const TEST_SERVER: &str = "127.0.0.1:7000";
/// db-server's port, the default of `db`.
const DB_SERVER: &str = "127.0.0.1:7100";
/// The proxy's HTTP port, the default of `http`.
const PROXY: &str = "127.0.0.1:8080";

impl LoadArgs {
    /// The run's settings; `default_addr` when `--addr` is not given.
    fn config(&self, default_addr: &str) -> Result<LoadConfig, String> {
        let addr = match self.addr {
            Some(a) => a,
            None => default_addr
                .parse()
                .map_err(|e| format!("default address {default_addr}: {e}"))?,
        };
        let duration = Duration::try_from_secs_f64(self.duration)
            .map_err(|_| "--duration must be ≥ 0".to_string())?;
        if self.conns == 0 || self.pipeline == 0 {
            return Err("--conns and --pipeline must be at least 1".into());
        }
        Ok(LoadConfig {
            addr,
            conns: self.conns,
            pipeline: self.pipeline,
            duration,
            threads: self.threads,
            tls: self.tls.config().map_err(|e| e.to_string())?,
            requests_per_conn: self.requests_per_conn.map(|n| n.max(1)),
            // On a terminal only: piped or captured output stays exactly the report.
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        })
    }
}

fn main() -> ExitCode {
    shared::logging::init("loadgen");
    let cli = Cli::parse();
    let holding = match &cli.mode {
        Mode::Frames {
            hold: true, load, ..
        } => Some(load.conns as u64),
        _ => None,
    };
    let result = match &cli.mode {
        Mode::Ping { load, payload } => load.config(TEST_SERVER).and_then(|cfg| {
            tools::say!(
                "loadgen ping: {} connections x pipeline {} -> {} for {:.1} s",
                cfg.conns,
                cfg.pipeline,
                cfg.addr,
                cfg.duration.as_secs_f64()
            );
            loadgen::run(cfg, PingWorkload::new(*payload)).map_err(|e| e.to_string())
        }),
        Mode::Db { load, mode, rows } => load.config(DB_SERVER).and_then(|cfg| {
            let mode = match mode {
                ModeArg::Read => DbMode::Read,
                ModeArg::Write => DbMode::Write,
                ModeArg::Mixed => DbMode::Mixed,
            };
            tools::say!(
                "loadgen db ({mode:?}): {} connections x pipeline {} -> {} for {:.1} s, {rows} rows",
                cfg.conns,
                cfg.pipeline,
                cfg.addr,
                cfg.duration.as_secs_f64()
            );
            let work = DbWorkload::prepare(&cfg, mode, *rows).map_err(|e| format!("preparing the table: {e}"))?;
            loadgen::run(cfg, work).map_err(|e| e.to_string())
        }),
        Mode::Frames {
            load,
            op,
            user,
            secret,
            docs,
            hold,
        } => load.config(TEST_SERVER).and_then(|mut cfg| {
            if *hold {
                cfg.pipeline = 0;
            }
            let op = match op {
                OpArg::Ping => FrameOp::Ping,
                OpArg::Get => FrameOp::Get,
                OpArg::Put => FrameOp::Put,
            };
            tools::say!(
                "loadgen frames ({op:?}): {} connections x pipeline {} -> {} for {:.1} s, as {user}",
                cfg.conns,
                cfg.pipeline,
                cfg.addr,
                cfg.duration.as_secs_f64()
            );
            let work = FramesWorkload::prepare(&cfg, op, user, secret, *docs)
                .map_err(|e| format!("logging in / storing documents: {e}"))?;
            loadgen::run(cfg, work).map_err(|e| e.to_string())
        }),
        Mode::Http {
            load,
            path,
            docs,
            put_percent,
        } => load.config(PROXY).and_then(|cfg| {
            if !path.starts_with('/') {
                return Err(format!("--path must start with '/': {path:?}"));
            }
            if *docs == 0 && *put_percent > 0 {
                return Err("--put-percent needs --docs".into());
            }
            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
            let what = if *docs > 0 {
                format!(
                    "{put_percent}% PUT, the rest GET, of {scheme}://{}{path}0…{path}{}",
                    cfg.addr,
                    docs - 1
                )
            } else {
                format!("GET {scheme}://{}{path}", cfg.addr)
            };
            tools::say!(
                "loadgen http: {} connections x pipeline {} -> {what} for {:.1} s",
                cfg.conns,
                cfg.pipeline,
                cfg.duration.as_secs_f64()
            );
            let mix = tools::httpload::Mix {
                path: path.clone(),
                docs: *docs,
                put_percent: *put_percent,
            };
            tools::httpload::run_mix(cfg, mix).map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(report) => {
            tools::say!(
                "requests={} p90_us={:.1} p999_us={:.1} max_us={} elapsed_s={:.2}",
                report.ok,
                report.quantile_us(0.90),
                report.quantile_us(0.999),
                report.latency_us.max(),
                report.elapsed.as_secs_f64()
            );
            if let Some(asked) = holding {
                tools::say!("held={} of={asked}", report.open);
            }
            if report.lost > 0 {
                // The first few were logged one by one; this sums them all up.
                eprintln!(
                    "loadgen: {} connection(s) to the server lost or refused during the run \
                     (the last: {}); each loop waited up to 1 s between reconnects",
                    report.lost, report.last_loss
                );
            }
            if report.cycles > 0 {
                tools::say!("connections_cycled={}", report.cycles);
            }
            tools::say!("{}", report.last_line());
            let ok = match holding {
                Some(asked) => report.open == asked && report.errors == 0,
                None => report.ok > 0,
            };
            if !ok {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            tools::say!("rps=0.0 p50_us=0.0 p99_us=0.0 errors=1");
            ExitCode::FAILURE
        }
    }
}
