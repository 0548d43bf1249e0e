//! The admin API, on the proxy's second listener (docs/proxy.md has every endpoint with
//! examples):
//!
//! ```text
//! GET    / or /dashboard                          → the live dashboard (HTML, polls /status)
//! GET    /status                                  → pool, strategy, every backend's counters
//! POST   /backends  {"address": "h:p", "weight": 1} → 201 | 409 already there
//! DELETE /backends  {"address": "h:p"}              → 200, draining | 404
//! POST   /strategy  {"strategy": "...", "hash_key": "..."} → 200
//! GET    /metrics                                 → Prometheus text
//! ```
//!
//! Malformed JSON, an unknown strategy or a bad address get 400 with `{"error": "..."}`. With an
//! admin token configured, the requests that change the pool (POST, DELETE) need
//! `Authorization: Bearer TOKEN`, else 401.

use std::fmt::Write as _;
use std::net::SocketAddr;

use engine::{ConnId, Context};
use serde::Deserialize;
use serde_json::json;

use super::config::Mode;
use super::pool::{Pool, BUCKETS};
use super::strategy::Strategy;
use shared::http1::{self, Limits, Parsed, Request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBackend {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBackend {
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStrategy {
    strategy: String,
    #[serde(default)]
    hash_key: Option<String>,
}

/// The dashboard: one self-contained page (no CDN, no build step) that polls `/status`.
fn dashboard() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| shared::page::assemble(include_str!("dashboard.html")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Metrics,
    Html,
}

struct Reply {
    status: u16,
    body: String,
    kind: Kind,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        kind: Kind::Json,
    }
}

fn bad(status: u16, msg: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": msg.to_string() }))
}

/// Bytes from an admin connection: every whole request is answered in order. `token`: what
/// requests that change the pool must present, if anything.
pub(crate) fn on_data<T>(
    pool: &Pool,
    mode: Mode,
    token: Option<&str>,
    ctx: &mut Context<'_, (), T>,
    conn: ConnId,
    data: &[u8],
) -> usize {
    let limits = Limits {
        max_head: 8192,
        max_body: 64 * 1024,
    };
    let mut used = 0;
    loop {
        match http1::parse_request(&data[used..], limits) {
            Ok(Parsed::Incomplete | Parsed::AwaitingBody(_)) => return used,
            Err(e) => {
                send(ctx, conn, &bad(e.status(), e), false, false);
                ctx.close(conn);
                return data.len();
            }
            Ok(Parsed::Request(req, n)) => {
                used += n;
                let keep = req.keep_alive();
                let head_only = req.method() == "HEAD";
                let r = route(pool, mode, token, ctx, &req);
                send(ctx, conn, &r, keep, head_only);
                if !keep {
                    ctx.close(conn);
                    return data.len();
                }
            }
        }
    }
}

fn send<T>(ctx: &mut Context<'_, (), T>, conn: ConnId, r: &Reply, keep: bool, head_only: bool) {
    let mut headers = vec![(
        "Content-Type",
        match r.kind {
            Kind::Json => "application/json",
            Kind::Metrics => "text/plain; version=0.0.4",
            Kind::Html => "text/html; charset=utf-8",
        },
    )];
    if r.kind == Kind::Html {
        // The page loads nothing from elsewhere and may not be framed.
        headers.push((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ));
        headers.push(("Cache-Control", "no-store"));
    }
    if r.status == 401 {
        headers.push(("WWW-Authenticate", "Bearer realm=\"proxy admin\""));
    }
    let mut out = Vec::new();
    http1::write_response(
        &mut out,
        r.status,
        &headers,
        r.body.as_bytes(),
        keep,
        head_only,
    );
    let _ = ctx.send(conn, &out);
}

/// What an admin request asks for, once its method, path and body are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `GET /` or `GET /dashboard`.
    Dashboard,
    /// `GET /status`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// `POST /backends`.
    Add(SocketAddr, u32),
    /// `DELETE /backends`.
    Drain(SocketAddr),
    /// `POST /strategy`.
    SetStrategy(Strategy),
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, (u16, String)> {
    serde_json::from_slice(body).map_err(|e| (400, format!("bad JSON body: {e}")))
}

fn address(text: &str) -> Result<SocketAddr, (u16, String)> {
    text.parse()
        .map_err(|_| (400, format!("address {text:?} is not IP:PORT")))
}

/// Checks an admin request without acting on it: the command, or the status and message to
/// refuse it with. (Pure, so that it can be fuzzed.)
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Command, (u16, String)> {
    let not_allowed = || Err((405, "method not allowed".to_string()));
    match (method, path) {
        ("GET", "/" | "/dashboard") => Ok(Command::Dashboard),
        ("GET", "/status") => Ok(Command::Status),
        ("GET", "/metrics") => Ok(Command::Metrics),
        ("POST", "/backends") => {
            let add: AddBackend = json_body(body)?;
            let addr = address(&add.address)?;
            if !(1..=1000).contains(&add.weight) {
                return Err((400, "weight is 1 to 1000".into()));
            }
            Ok(Command::Add(addr, add.weight))
        }
        ("DELETE", "/backends") => {
            let rm: RemoveBackend = json_body(body)?;
            Ok(Command::Drain(address(&rm.address)?))
        }
        ("POST", "/strategy") => {
            let s: SetStrategy = json_body(body)?;
            Strategy::parse(&s.strategy, s.hash_key.as_deref())
                .map(Command::SetStrategy)
                .map_err(|e| (400, e))
        }
        (_, "/" | "/dashboard" | "/status" | "/metrics" | "/backends" | "/strategy") => {
            not_allowed()
        }
        _ => Err((404, "Not found".into())),
    }
}

/// True when `req` presents `token` as `Authorization: Bearer TOKEN` (compared in constant
/// time, so the answer's timing does not tell how much of a guess was right).
fn authorized(req: &Request, token: &str) -> bool {
    let given = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .as_bytes();
    let want = token.as_bytes();
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Refuses a change that a web page could have sent from an operator's browser: a page of
/// another site may POST to the admin port (a "simple" cross-site request, no preflight) with
/// `Content-Type: text/plain`, never with `application/json`, and browsers name the page's
/// site in `Origin` and `Sec-Fetch-Site`. The dashboard, served from this port, is the same
/// origin and sends JSON.
fn from_an_operator(req: &Request) -> Result<(), (u16, String)> {
    let json = req
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err((415, "a change needs Content-Type: application/json".into()));
    }
    if let Some(site) = req.header("sec-fetch-site") {
        if !matches!(site.trim(), "same-origin" | "none") {
            return Err((403, format!("refused: a cross-site request ({site})")));
        }
    }
    if let Some(origin) = req.header("origin") {
        let host = req.header("host").unwrap_or_default().trim();
        let same = origin
            .trim()
            .strip_prefix("http://")
            .or_else(|| origin.trim().strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Err((
                403,
                format!("refused: a request from another origin ({origin})"),
            ));
        }
    }
    Ok(())
}

fn route<T>(
    pool: &Pool,
    mode: Mode,
    token: Option<&str>,
    ctx: &mut Context<'_, (), T>,
    req: &Request,
) -> Reply {
    // HEAD is answered as GET would be, without the body (RFC 9110 §9.3.2).
    let method = if req.method() == "HEAD" {
        "GET"
    } else {
        req.method()
    };
    let command = match parse(method, req.path(), &req.body) {
        Ok(c) => c,
        Err((status, msg)) => return bad(status, msg),
    };
    let changes = matches!(
        command,
        Command::Add(..) | Command::Drain(_) | Command::SetStrategy(_)
    );
    if changes {
        if let Err((status, msg)) = from_an_operator(req) {
            return bad(status, msg);
        }
    }
    if let (true, Some(token)) = (changes, token) {
        if !authorized(req, token) {
            return bad(
                401,
                "this change needs the admin token: Authorization: Bearer TOKEN",
            );
        }
    }
    match command {
        Command::Dashboard => Reply {
            status: 200,
            body: dashboard().to_string(),
            kind: Kind::Html,
        },
        Command::Status => reply(200, status_json(pool, mode)),
        Command::Metrics => Reply {
            status: 200,
            body: metrics(pool, ctx.server().stats().connections_active),
            kind: Kind::Metrics,
        },
        Command::Add(addr, weight) => match pool.add(addr, weight) {
            Ok(()) => reply(201, json!({ "added": addr.to_string(), "weight": weight })),
            Err(e) => bad(409, e),
        },
        Command::Drain(addr) => match pool.drain(addr) {
            Ok(n) => reply(200, json!({ "draining": addr.to_string(), "in_flight": n })),
            Err(e) => bad(404, e),
        },
        Command::SetStrategy(strategy) => {
            let body = json!({ "strategy": strategy.name(), "hash_key": strategy.hash_key() });
            pool.set_strategy(strategy);
            reply(200, body)
        }
    }
}

/// `GET /status`'s body.
pub fn status_json(pool: &Pool, mode: Mode) -> serde_json::Value {
    let s = pool.strategy();
    let t = pool.totals();
    let backends: Vec<_> = pool.members().backends.iter().map(|b| b.status()).collect();
    json!({
        "mode": match mode { Mode::Http => "http", Mode::Tcp => "tcp" },
        "strategy": s.name(),
        "hash_key": s.hash_key(),
        "backends": backends,
        "healthy": backends.iter().filter(|b| b.healthy && !b.draining).count(),
        "requests": t.requests,
        "failures": t.failures,
        "retries": t.retries,
        "bucket_bounds_ms": BUCKETS.iter().map(|b| b * 1000.0).collect::<Vec<_>>(),
    })
}

fn metrics(pool: &Pool, connections: u64) -> String {
    let t = pool.totals();
    let mut out = String::with_capacity(4096);
    let mut counter = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP netmod_proxy_{name} {help}\n# TYPE netmod_proxy_{name} {kind}\nnetmod_proxy_{name} {v}\n"
        );
    };
    counter(
        "requests_total",
        "counter",
        "Requests (TCP mode: connections) balanced.",
        t.requests,
    );
    counter(
        "failures_total",
        "counter",
        "Requests answered 502/503/504 by the proxy.",
        t.failures,
    );
    counter(
        "retries_total",
        "counter",
        "Requests retried on another backend.",
        t.retries,
    );
    counter(
        "connections_active",
        "gauge",
        "Connections open now (clients, backends, admin).",
        connections,
    );
    let members = pool.members();
    let per = |out: &mut String,
               name: &str,
               kind: &str,
               help: &str,
               f: &dyn Fn(&super::pool::Backend) -> String| {
        let _ = write!(out, "# HELP netmod_proxy_backend_{name} {help}\n# TYPE netmod_proxy_backend_{name} {kind}\n");
        for b in members.backends.iter() {
            let _ = writeln!(
                out,
                "netmod_proxy_backend_{name}{{backend=\"{}\"}} {}",
                b.addr,
                f(b)
            );
        }
    };
    per(
        &mut out,
        "up",
        "gauge",
        "1 while the backend passes its health checks.",
        &|b| u8::from(b.is_healthy()).to_string(),
    );
    per(&mut out, "active", "gauge", "Requests in flight.", &|b| {
        b.active().to_string()
    });
    per(
        &mut out,
        "requests_total",
        "counter",
        "Requests sent.",
        &|b| b.status().total.to_string(),
    );
    per(
        &mut out,
        "failures_total",
        "counter",
        "Failed connections, timeouts and 502/503/504 answers.",
        &|b| b.status().failures.to_string(),
    );
    out.push_str(
        "# HELP netmod_proxy_backend_response_seconds Response time of answered requests.\n",
    );
    out.push_str("# TYPE netmod_proxy_backend_response_seconds histogram\n");
    for b in members.backends.iter() {
        let (buckets, count, sum) = b.histogram();
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "netmod_proxy_backend_response_seconds_bucket{{backend=\"{}\",le=\"{le}\"}} {cumulative}",
                b.addr
            );
        }
        let _ = writeln!(
            out,
            "netmod_proxy_backend_response_seconds_bucket{{backend=\"{}\",le=\"+Inf\"}} {count}",
            b.addr
        );
        let _ = writeln!(
            out,
            "netmod_proxy_backend_response_seconds_sum{{backend=\"{}\"}} {sum}",
            b.addr
        );
        let _ = writeln!(
            out,
            "netmod_proxy_backend_response_seconds_count{{backend=\"{}\"}} {count}",
            b.addr
        );
    }
    out
}
