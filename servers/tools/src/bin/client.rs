//! client: the command-line client for people, over the frame protocol to test-server.
//!
//! Exit codes: 0 done; 1 the server refused (its error code and message are printed);
//! 2 bad usage; 3 no connection (or db-server unavailable); 4 the document does not exist.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use prost::Message as _;
use protocol::proto::{
    data_request, data_response, value, DataRequest, ReadConsistency, Statement, StatementResult,
    Value,
};
use protocol::wire::{self, ErrorCode, MessageType, Operation};
use shared::backoff::Backoff;
use tools::client::{ClientError, FrameClient};

/// Command-line client of the netmod system (frame protocol, to test-server).
///
/// Data commands need a login: give --user (and the secret in NETMOD_SECRET, or --secret),
/// or a token from `client login` in NETMOD_TOKEN (or --token).
#[derive(Debug, Parser)]
#[command(name = "client", version = shared::VERSION)]
struct Args {
    /// test-server's frame-protocol address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// A token from `client login`.
    #[arg(long, env = "NETMOD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log in as this user first.
    #[arg(long)]
    user: Option<String>,
    /// The user's secret (prefer the environment variable: `ps` shows flags).
    #[arg(long, env = "NETMOD_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Seconds to wait for the server on each step.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[command(flatten)]
    tls: shared::tls::ClientTlsArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Round trips to the server.
    Ping {
        /// How many pings.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Log in; prints the token (for NETMOD_TOKEN) on stdout.
    Login,
    /// Print a document's content.
    Get { name: String },
    /// Create or replace a document.
    Put { name: String, content: String },
    /// Delete a document.
    Delete { name: String },
    /// Run one SQL statement; arguments bind to ?1, ?2, … (numbers as integers or reals,
    /// `null` as NULL, anything else as text). The commit index a write produced is printed on
    /// stderr: pass it to --after-index to read your write from a replica.
    Sql {
        sql: String,
        args: Vec<String>,
        /// Read from the primary, never from a replica.
        #[arg(long, conflicts_with = "after_index")]
        primary: bool,
        /// Read from a replica only once it has this commit index (db-server waits briefly,
        /// else the primary answers): never older than that write.
        #[arg(long, value_name = "INDEX")]
        after_index: Option<u64>,
    },
    /// Stay connected and print what the server sends (shutdown and migration notices);
    /// reconnect with backoff, and follow migrations.
    Watch,
    /// Manage users (log in as the admin user).
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user, or give an existing one a new secret (at least 8 characters; stored
    /// hashed).
    Add {
        name: String,
        /// The new user's secret (prefer the environment variable: `ps` shows flags).
        #[arg(long, env = "NETMOD_NEW_SECRET", hide_env_values = true)]
        new_secret: String,
    },
    /// Remove a user (its tokens stay valid until they expire).
    Remove { name: String },
}

/// A failure and the exit code it maps to.
struct Fail(u8, String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server { code, message } => {
                let exit = if code == ErrorCode::Unavailable { 3 } else { 1 };
                Fail(
                    exit,
                    format!("server error {}: {message}", code.as_str_name()),
                )
            }
            ClientError::Io(e) => Fail(3, format!("connection: {e}")),
            other => Fail(3, other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, text)) => {
            eprintln!("client: {text}");
            ExitCode::from(code)
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, Fail> {
    shared::addr::resolve(addr).map_err(|e| {
        let hint = if e.contains("no port") {
            " (test-server's frame port is 7000)"
        } else {
            ""
        };
        Fail(2, format!("--addr: {e}{hint}"))
    })
}

fn timeout(args: &Args) -> Duration {
    Duration::from_secs_f64(args.timeout.max(0.001))
}

/// A connection, with TLS when asked for (a bad CA file: exit 2; a failed handshake, e.g. an
/// untrusted certificate: exit 3, as any failed connect).
fn connect(args: &Args, addr: SocketAddr) -> Result<FrameClient, Fail> {
    let tls = args.tls.config().map_err(|e| Fail(2, e.to_string()))?;
    match tls {
        Some((config, name)) => FrameClient::connect_tls(addr, timeout(args), config, name),
        None => FrameClient::connect(addr, timeout(args)).map_err(Into::into),
    }
    .map_err(|e| Fail(3, format!("cannot connect to {addr}: {e}")))
}

/// Connected and, when the command needs it, authenticated.
fn session(args: &Args, addr: SocketAddr, auth: bool) -> Result<FrameClient, Fail> {
    let mut c = connect(args, addr)?;
    if auth {
        match (&args.token, &args.user) {
            (_, Some(user)) => {
                let secret = args
                    .secret
                    .as_deref()
                    .ok_or_else(|| Fail(2, "--user needs a secret (NETMOD_SECRET)".into()))?;
                c.login(user, secret)?;
            }
            (Some(token), None) => {
                c.authenticate(token)?;
            }
            (None, None) => {
                return Err(Fail(
                    2,
                    "log in first: --user (with NETMOD_SECRET) or NETMOD_TOKEN".into(),
                ))
            }
        }
    }
    Ok(c)
}

fn arg_value(a: &str) -> Value {
    if a == "null" {
        Value::null()
    } else if let Ok(i) = a.parse::<i64>() {
        Value::int(i)
    } else if let Ok(f) = a.parse::<f64>() {
        Value::real(f)
    } else {
        Value::text(a)
    }
}

fn show(v: &Value) -> String {
    match &v.kind {
        None | Some(value::Kind::Null(_)) => "NULL".into(),
        Some(value::Kind::Integer(i)) => i.to_string(),
        Some(value::Kind::Real(f)) => f.to_string(),
        Some(value::Kind::Text(t)) => t.clone(),
        Some(value::Kind::Blob(b)) => format!("<{} bytes>", b.len()),
    }
}

fn print_result(r: &StatementResult) {
    if r.columns.is_empty() {
        tools::say!("{} row(s) affected", r.rows_affected);
        return;
    }
    tools::say!(
        "{}",
        r.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("\t")
    );
    for row in &r.rows {
        tools::say!(
            "{}",
            row.values.iter().map(show).collect::<Vec<_>>().join("\t")
        );
    }
    // On stderr, so that stdout stays the rows alone.
    eprintln!("({} row(s))", r.rows.len());
    if r.truncated {
        eprintln!("(result cut at the size limit)");
    }
}

fn run(args: &Args) -> Result<(), Fail> {
    let addr = resolve(&args.addr)?;
    match &args.cmd {
        Cmd::Ping { count } => {
            let mut c = session(args, addr, false)?;
            for _ in 0..(*count).max(1) {
                let t = Instant::now();
                c.ping(b"client")?;
                tools::say!(
                    "pong from {addr} in {:.3} ms",
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
            Ok(())
        }
        Cmd::Login => {
            let user = args
                .user
                .as_deref()
                .ok_or_else(|| Fail(2, "login needs --user".into()))?;
            let secret = args
                .secret
                .as_deref()
                .ok_or_else(|| Fail(2, "login needs a secret (NETMOD_SECRET)".into()))?;
            let mut c = session(args, addr, false)?;
            let t = c.login(user, secret)?;
            tools::say!("{}", t.token);
            eprintln!("valid until {} (Unix seconds)", t.expires_at);
            Ok(())
        }
        Cmd::Get { name } => {
            let mut c = session(args, addr, true)?;
            let r = c.execute(
                "SELECT content FROM docs WHERE name = ?1",
                vec![Value::text(name.as_str())],
            )?;
            match r.rows.first().and_then(|row| row.values.first()) {
                Some(v) => {
                    tools::say!("{}", show(v));
                    Ok(())
                }
                None => Err(Fail(4, format!("document {name:?} not found"))),
            }
        }
        Cmd::Put { name, content } => {
            let mut c = session(args, addr, true)?;
            let now = i64::try_from(shared::clock::now_secs()).unwrap_or(i64::MAX);
            let r = c.execute(
                "INSERT INTO docs (name, content, updated) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET content = excluded.content, updated = excluded.updated",
                vec![
                    Value::text(name.as_str()),
                    Value::text(content.as_str()),
                    Value::int(now),
                ],
            )?;
            tools::say!("stored {name:?} ({} row)", r.rows_affected);
            Ok(())
        }
        Cmd::User(cmd) => {
            let mut c = session(args, addr, true)?;
            let (name, secret, remove) = match cmd {
                UserCmd::Add { name, new_secret } => (name, new_secret.as_str(), false),
                UserCmd::Remove { name } => (name, "", true),
            };
            let done = c.change_user(name, secret, remove)?;
            match (remove, done.created, done.removed) {
                (false, true, _) => tools::say!("user {name:?} created"),
                (false, false, _) => tools::say!("user {name:?} has a new secret"),
                (true, _, true) => tools::say!("user {name:?} removed"),
                (true, _, false) => return Err(Fail(4, format!("no user {name:?}"))),
            }
            Ok(())
        }
        Cmd::Delete { name } => {
            let mut c = session(args, addr, true)?;
            let r = c.execute(
                "DELETE FROM docs WHERE name = ?1",
                vec![Value::text(name.as_str())],
            )?;
            if r.rows_affected == 0 {
                return Err(Fail(4, format!("document {name:?} not found")));
            }
            tools::say!("deleted {name:?}");
            Ok(())
        }
        Cmd::Sql {
            sql,
            args: sql_args,
            primary,
            after_index,
        } => {
            let wanted = protocol::placeholders::to_dollar(sql).params;
            if wanted != sql_args.len() {
                return Err(Fail(
                    2,
                    format!(
                        "the statement has {wanted} placeholder(s) (?1, ?2, … or :name) but {} argument(s) were given",
                        sql_args.len()
                    ),
                ));
            }
            let consistency = match (primary, after_index) {
                (true, _) => ReadConsistency::Primary,
                (_, Some(_)) => ReadConsistency::AfterIndex,
                _ => ReadConsistency::AnyReplica,
            };
            let req = DataRequest {
                kind: Some(data_request::Kind::Execute(Statement {
                    keys: Vec::new(),
                    sql: sql.clone(),
                    args: sql_args.iter().map(|a| arg_value(a)).collect(),
                    named_args: Vec::new(),
                })),
                consistency: consistency as i32,
                after_index: after_index.unwrap_or(0),
                ..Default::default()
            };
            let mut c = session(args, addr, true)?;
            let resp = c.data(&req)?;
            let Some(data_response::Kind::Result(r)) = resp.kind else {
                return Err(Fail(1, format!("unexpected answer: {:?}", resp.kind)));
            };
            print_result(&r);
            // A write's index is the one it produced; a read's, one it is at least as new as.
            if r.columns.is_empty() {
                eprintln!("(commit index {})", resp.commit_index);
            } else {
                eprintln!("(as of commit index {})", resp.commit_index);
            }
            Ok(())
        }
        Cmd::Watch => watch(args, addr),
    }
}

/// Connected until told to stop: prints notices, reconnects with backoff (2 s doubling to
/// 60 s, ±10 %), and moves when the server says SERVER_MIGRATION.
fn watch(args: &Args, first: SocketAddr) -> Result<(), Fail> {
    let mut addr = first;
    let mut backoff = Backoff::standard();
    loop {
        let mut c = match connect(args, addr) {
            Ok(c) => c,
            Err(Fail(2, why)) => return Err(Fail(2, why)),
            Err(Fail(_, e)) => {
                let d = backoff.next_delay();
                eprintln!("{e}; retrying in {:.1} s", d.as_secs_f64());
                std::thread::sleep(d);
                continue;
            }
        };
        backoff.reset();
        tools::say!("connected to {addr}");
        // Reads time out so that a silent server is noticed; the server's own pings are
        // answered inside `recv`.
        let mut moved = None;
        loop {
            match c.recv() {
                Ok(Some(m)) if m.r#type() == MessageType::Notification => match m.op() {
                    Operation::ServerShutdown => {
                        let n = wire::ServerShutdown::decode(m.data).unwrap_or_default();
                        // The reason, unless it only says what the notice does.
                        let reason = match n.reason.as_str() {
                            "" | "server shutting down" => String::new(),
                            r => format!(": {r}"),
                        };
                        tools::say!(
                            "server shutting down{reason}; reconnect after {} s",
                            n.reconnect_after
                        );
                    }
                    Operation::ServerMigration => {
                        let n = wire::ServerMigration::decode(m.data).unwrap_or_default();
                        tools::say!(
                            "server asks to move to {}:{} within {} s",
                            n.new_host,
                            n.new_port,
                            n.migrate_after
                        );
                        moved = resolve(&format!("{}:{}", n.new_host, n.new_port)).ok();
                        break;
                    }
                    other => tools::say!("notification {other:?}"),
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    tools::say!("connection closed by {addr}");
                    break;
                }
                Err(ClientError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // Quiet: check the server is still there.
                    if c.ping(b"watch").is_err() {
                        tools::say!("no answer from {addr}");
                        break;
                    }
                }
                Err(e) => {
                    tools::say!("connection to {addr} failed: {e}");
                    break;
                }
            }
        }
        if let Some(next) = moved {
            addr = next;
            continue;
        }
        let d = backoff.next_delay();
        tools::say!("reconnecting in {:.1} s", d.as_secs_f64());
        std::thread::sleep(d);
    }
}
