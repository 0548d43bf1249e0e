//! test-server's HTTP/1.1 front, on the same loops as the frame protocol: documents stored
//! through db-server, `/health` and `/metrics`.
//!
//! ```text
//! GET    /docs/<name>  → 200 {"docName": name, "content": …} | 404 {"error": "Document not found"}
//! PUT    /docs/<name>  {"content": "…"} → 201 created | 200 replaced      (Bearer token needed)
//! DELETE /docs/<name>  → 204 | 404                                          (Bearer token needed)
//! GET    /health       → 200 {"status": "ok", …} | 503 {"status": "degraded", …} (no db link)
//! GET    /metrics      → Prometheus text
//! GET    /status       → the server's figures: JSON, or the live page for a browser
//!                        (`Accept: text/html`), which polls the JSON
//! ```
//!
//! Requests on a connection may be pipelined: each gets a sequence number and answers go out in
//! that order, whatever order db-server answers in. A request that cannot be framed (bad
//! syntax, head over 8192 bytes, body over the limit) is answered and the connection closed.

mod answer;
mod cache;
mod docs;
mod reply;
mod route;
mod status;
#[allow(unused_imports)]
pub use reply::*;
#[allow(unused_imports)]
pub use route::*;

use answer::{Answer, Body, Kind, STALE};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use engine::{ConnId, ConnMap, Context};
use log::error;
use prost::Message as _;
use shared::logging::ACCESS;

use crate::config::AuthConfig;
use crate::dblink::DbLink;
use crate::events::{DocOp, Note, Owner, Timer};
use protocol::proto::{data_response, value, DataResponse};
use protocol::view::DataResponseView;
use shared::clock::now_secs;
use shared::http1::{self, Limits, Progress, Request};
use shared::wire::{self, ErrorCode, Message, MessageType, Operation};

use cache::DocCache;
pub use docs::{create_docs_table, watch_request, DOCS_TABLE};
use docs::{
    db_failure, doc_answer, doc_json_into, put_answer, Arg, DocRequest, Stmt, DELETE_SQL, GET_SQL,
    PUT_INSERT, PUT_UPDATE,
};

/// Counters shared by every loop's front.
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_class: [AtomicU64; 5],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Documents current in every loop's cache together.
    cache_entries: Arc<std::sync::atomic::AtomicUsize>,
}

impl HttpCounters {
    fn count(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Settings of the HTTP front.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Head and body limits.
    pub limits: Limits,
    /// Accept PUT and DELETE without a token (local development and benchmarks only).
    pub insecure_writes: bool,
    /// Token checking for writes.
    pub auth: Option<Arc<AuthConfig>>,
    /// Counters for `/metrics`, shared by the loops.
    pub counters: Arc<HttpCounters>,
    /// A request must be whole this long after its first byte (else 408); zero: no limit.
    pub request_timeout: std::time::Duration,
    /// Bytes of documents each loop may keep in memory (0: no cache). The cache is used only
    /// while db-server's change notifications arrive, see `DocCache`.
    pub cache_bytes: usize,
    /// The listener the front is served on ([`engine::Server::add_listener`]'s id);
    /// connections from the server's other listeners are frame clients.
    pub listener: Option<engine::ListenerId>,
}

/// Default for [`HttpConfig::cache_bytes`] in the binary: 16 MiB per loop.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
struct HttpConn {
    peer: Option<SocketAddr>,
    next_seq: u64,
    next_out: u64,
    /// Answers ready but waiting for earlier ones.
    ready: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Close after answering this request.
    close_after: Option<u64>,
    /// Requests waiting for db-server.
    waiting: u32,
    /// Armed while part of a request is buffered: the rest must come before it fires.
    deadline: Option<engine::TimerId>,
    /// PUT/DELETE requests waiting for db-server. Pipelined requests act as if sent one by
    /// one (RFC 9112 §9.3.2): nothing after a write is sent on until the write is answered,
    /// and a write waits for every request before it.
    unsafe_waiting: u32,
    /// Reading is paused until the answers above let the next request go.
    held: bool,
    /// HEAD requests among those not answered yet: answered without a body.
    head_seqs: Vec<u64>,
    /// The request whose `Expect` was looked at (its body still arriving).
    expect_seen: Option<u64>,
    /// A `100 Continue` owed to this request, written when the answers before it are out.
    continue_owed: Option<u64>,
}

impl HttpConn {
    /// Leaves the rest of the input for later: reading paused until `on_reply` resumes it; no
    /// request deadline runs meanwhile (the wait is the server's, not the client's).
    fn hold(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId) {
        self.held = true;
        ctx.pause_reading(conn);
        if let Some(t) = self.deadline.take() {
            ctx.cancel_timer(t);
        }
    }
}

/// The HTTP front of one loop.
#[derive(Debug)]
pub struct HttpFront {
    cfg: HttpConfig,
    conns: ConnMap<HttpConn>,
    date: (u64, String),
    cache: DocCache,
    /// Reused for responses written at once.
    scratch: Vec<u8>,
    /// Every request is parsed into this one (its buffers reused: no allocation per request).
    req: Request,
}

/// What `/health` and `/metrics` report about the rest of the process.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    /// db link connections up (this loop).
    pub db_up: usize,
    /// Whether the db link's breaker lets requests through.
    pub db_breaker_closed: bool,
    /// Requests in flight on the db link (this loop).
    pub db_in_flight: usize,
    /// The documents table is known to exist (the link's setup was answered).
    pub ready: bool,
    /// Round trips of the server's pings (all loops).
    pub rtt: &'a crate::config::RttTotals,
    /// Frame clients' moving averages of their last 100 ping round trips (this loop): their
    /// sum in µs, and how many clients have one.
    pub rtt_averages: (u64, u64),
    /// The link's change subscription is up, so the document cache is in use.
    pub db_watching: bool,
    /// Where db-server's writes go: the PostgreSQL primary's `host:port`, empty when none
    /// answers (see [`crate::dblink::DbLink::primary`]); read by `/status` only.
    pub db_primary: Option<&'a std::sync::Mutex<String>>,
}

/// A document name from the path: one non-empty segment of at most 255 bytes.
fn doc_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/docs/")?;
    (!name.is_empty() && name.len() <= 255 && !name.contains('/')).then_some(name)
}

impl HttpFront {
    /// The front of one loop.
    pub fn new(cfg: HttpConfig) -> Self {
        let cache = DocCache::new(cfg.cache_bytes, Arc::clone(&cfg.counters.cache_entries));
        HttpFront {
            cfg,
            conns: ConnMap::default(),
            date: (0, String::new()),
            cache,
            scratch: Vec::with_capacity(1024),
            req: Request::default(),
        }
    }

    /// The link's subscription was taken (whatever is cached may have missed notices: none of
    /// it is current) or lost (kept as stale, served only while db-server cannot be reached).
    pub fn on_db_watching(&mut self, watching: bool) {
        if watching {
            self.cache.invalidate();
        } else {
            self.cache.suspend();
        }
    }

    /// A change notice from db-server (decoded once by the frame service, which reads it too).
    /// A notice naming documents makes those out of date; one naming none, every one.
    pub fn on_db_change(&mut self, changed: &protocol::proto::ChangeNotice<'_>) {
        let mut tables = changed.tables().peekable();
        let mut all = tables.peek().is_none();
        let mut docs = false;
        for t in tables {
            all |= t == "*";
            docs |= t.eq_ignore_ascii_case(DOCS_TABLE);
        }
        if !all && !docs {
            return;
        }
        if all || changed.keys().next().is_none() {
            return self.cache.invalidate();
        }
        for name in changed.keys() {
            self.cache.changed(name, changed.commit_index());
        }
    }

    /// A client connected to the HTTP listener.
    pub fn accept(&mut self, conn: ConnId, peer: SocketAddr) {
        self.conns.insert(
            conn,
            HttpConn {
                peer: Some(peer),
                ..HttpConn::default()
            },
        );
    }

    /// The connection closed.
    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(conn);
    }

    /// `conn`'s request deadline passed: a request still incomplete gets 408
    /// and the connection closes after the answers owed before it.
    pub fn on_timer(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.deadline.take().is_none() || c.close_after.is_some() {
            return;
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        c.close_after = Some(seq);
        let answer = Answer::error(408, "the request did not arrive in time");
        self.complete(ctx, conn, seq, answer, false);
    }

    /// Answers owed to `conn`.
    pub fn owes(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|c| c.waiting > 0)
    }

    /// Bytes from a client: every whole request is answered (or sent on to db-server).
    pub fn requests(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        data: &[u8],
        link: Option<&mut DbLink<Owner>>,
        status: Status<'_>,
    ) -> usize {
        let mut req = std::mem::take(&mut self.req);
        let used = self.take_requests(ctx, conn, data, link, status, &mut req);
        self.req = req;
        used
    }

    /// `on_data` with the request every request is parsed into.
    fn take_requests(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        data: &[u8],
        link: Option<&mut DbLink<Owner>>,
        status: Status<'_>,
        req: &mut Request,
    ) -> usize {
        let mut link = link;
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(conn) else {
                return data.len();
            };
            if c.close_after.is_some() {
                // Nothing after a request that ends the connection is read.
                return data.len();
            }
            if c.unsafe_waiting > 0 {
                // What follows a write waits in the buffer until the write is answered
                // (`on_reply` resumes reading, and the engine offers these bytes again).
                if used < data.len() {
                    c.hold(ctx, conn);
                }
                return used;
            }
            let seq = c.next_seq;
            let parsed = http1::parse_request_into(req, &data[used..], self.cfg.limits);
            if let Ok(Progress::AwaitingBody { needed }) = &parsed {
                // A body still arriving (its length known): not parsed again until it is all
                // here.
                if let Some(n) = needed {
                    ctx.wait_for(conn, *n);
                }
                if c.expect_seen != Some(seq) {
                    c.expect_seen = Some(seq);
                    if let Some(refused) = self.answer_expectation(ctx, conn, seq, &req.head) {
                        // Refused before its body: answered now, and the body is not read.
                        if let Some(c) = self.conns.get_mut(conn) {
                            c.next_seq += 1;
                            c.close_after = Some(seq);
                        }
                        self.complete(ctx, conn, seq, refused, false);
                        return data.len();
                    }
                }
            }
            let Some(c) = self.conns.get_mut(conn) else {
                return data.len();
            };
            match parsed {
                Ok(Progress::Incomplete | Progress::AwaitingBody { .. }) => {
                    // Part of a request: it must be whole within the request timeout, however
                    // slowly its bytes trickle in (slowloris, slow POST).
                    let pending = used < data.len();
                    match (pending, c.deadline) {
                        (true, None) if !self.cfg.request_timeout.is_zero() => {
                            c.deadline =
                                Some(ctx.set_timer(self.cfg.request_timeout, Timer::Http(conn)));
                        }
                        (false, Some(t)) => {
                            ctx.cancel_timer(t);
                            c.deadline = None;
                        }
                        _ => {}
                    }
                    return used;
                }
                Err(e) => {
                    c.next_seq += 1;
                    c.close_after = Some(seq);
                    let answer = Answer::error(e.status(), &e.to_string());
                    self.complete(ctx, conn, seq, answer, false);
                    return data.len();
                }
                Ok(Progress::Request(_)) if req.is_unsafe() && c.waiting > 0 => {
                    // A write waits for the answers to every request before it.
                    c.hold(ctx, conn);
                    return used;
                }
                Ok(Progress::Request(n)) => {
                    used += n;
                    c.next_seq += 1;
                    let keep = req.keep_alive();
                    if !keep {
                        c.close_after = Some(seq);
                    }
                    if req.method() == "HEAD" {
                        c.head_seqs.push(seq);
                    }
                    ctx.count_message_in(conn);
                    let answer = match req.expectation() {
                        http1::Expectation::Unknown => Some(Answer::error(
                            417,
                            "only \"Expect: 100-continue\" is supported",
                        )),
                        _ => self.route(ctx, conn, seq, req, link.as_deref_mut(), status),
                    };
                    match answer {
                        Some(answer) => self.complete(ctx, conn, seq, answer, keep),
                        None => {
                            if let Some(c) = self.conns.get_mut(conn) {
                                c.waiting += 1;
                                if req.is_unsafe() {
                                    c.unsafe_waiting += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A request whose body is still to come: its `Expect` answered (RFC 9110 §10.1.1). A
    /// request that will be refused whatever its body gets its final answer now (`Some`);
    /// otherwise `100 Continue` is written, or owed until the answers before it are out.
    fn answer_expectation(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        seq: u64,
        head: &http1::Head,
    ) -> Option<Answer> {
        match head.expectation() {
            http1::Expectation::None => None,
            http1::Expectation::Unknown => Some(Answer::error(
                417,
                "only \"Expect: 100-continue\" is supported",
            )),
            http1::Expectation::Continue => {
                if let Some(refused) = self.refusal(head) {
                    return Some(refused);
                }
                let c = self.conns.get_mut(conn)?;
                if c.next_out == seq {
                    let _ = ctx.send(conn, http1::CONTINUE);
                } else {
                    c.continue_owed = Some(seq);
                }
                None
            }
        }
    }

    /// The answer a request gets whatever its body says, if it is refused by its head alone:
    /// unknown path (404), method (405), a write without a valid token (401). `route` starts
    /// with it; `answer_expectation` uses it to refuse before a body is sent.
    fn refusal(&self, head: &http1::Head) -> Option<Answer> {
        let method = head.method();
        match head.path() {
            "/health" | "/metrics" | "/status" | "/favicon.ico" => {
                (!matches!(method, "GET" | "HEAD")).then(|| Answer {
                    allow: Some("GET, HEAD"),
                    ..Answer::error(405, "method not allowed")
                })
            }
            path => match (doc_name(path), method) {
                (None, _) => Some(Answer::error(404, "Not found")),
                (Some(_), "GET" | "HEAD") => None,
                (Some(_), "PUT" | "DELETE") => self.check_writer(head),
                (Some(_), _) => Some(Answer {
                    allow: Some("GET, HEAD, PUT, DELETE"),
                    ..Answer::error(405, "method not allowed")
                }),
            },
        }
    }
}

/// `[..][INFO] Client IP: 192.168.1.100, Status: 200, Response: {...}` (404 and 5xx at ERROR).
fn access_log(peer: Option<SocketAddr>, status: u16, body: &[u8]) {
    const MAX: usize = 200;
    let level = if status == 404 || status >= 500 {
        log::Level::Error
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(target: ACCESS, level) {
        return;
    }
    let ip = peer.map_or_else(|| "-".to_string(), |p| p.ip().to_string());
    // Escaped: a document's content is whatever a client stored.
    let text = shared::logging::Printable::new(body, MAX);
    log::log!(target: ACCESS, level, "Client IP: {ip}, Status: {status}, Response: {text}");
}

/// db-server cannot answer: no link, no connection up, or the circuit breaker open.
/// The last version known of document `name`, marked stale (db-server cannot be reached),
/// counted as a cache hit.
fn stale(cache: &DocCache, hits: &std::sync::atomic::AtomicU64, name: &str) -> Option<Answer> {
    let body = cache.last_known(name)?;
    hits.fetch_add(1, Ordering::Relaxed);
    Some(Answer {
        stale: true,
        ..Answer::cached(Arc::clone(body))
    })
}

fn unreachable(link: Option<&DbLink<Owner>>) -> bool {
    link.is_none_or(|l| l.up() == 0 || l.breaker() != shared::breaker::State::Closed)
}
