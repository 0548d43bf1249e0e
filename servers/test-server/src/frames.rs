//! test-server's frame-protocol side: the handler each loop runs for client connections, with
//! its link to db-server.
//!
//! # Lifecycle of a client connection
//!
//! ```text
//! accepted ──► serving: every whole frame is decoded and answered
//!                │  REQUEST PING            → RESPONSE PING, same message_id, payload echoed (CRITICAL)
//!                │  REQUEST AUTH_LOGIN      → user's stored secret fetched through the db link,
//!                │                            checked on a verifier thread → RESPONSE AuthToken
//!                │                            (the connection is now authenticated) or UNAUTHENTICATED
//!                │  REQUEST AUTH_TOKEN      → token checked here → authenticated, or UNAUTHENTICATED
//!                │  REQUEST DATA            → not authenticated (or token expired): UNAUTHENTICATED;
//!                │                            else forwarded to db-server, its answer relayed with
//!                │                            the client's message_id (answers in any order)
//!                │  undecodable frame       → ERROR BAD_MESSAGE (message_id 0), keeps serving
//!                │  unknown type/operation  → ERROR UNSUPPORTED (same message_id), keeps serving
//!                │  length over the maximum → ERROR FRAME_TOO_LARGE, then close
//!                ▼
//!   shutdown ──► NOTIFICATION SERVER_SHUTDOWN {reason, reconnect_after}; requests already
//!                received are answered (forwarded ones included); then the connection closes
//! ```
//!
//! No client state outlives a connection: a client that reconnects (to this instance or any
//! other sharing `--token-secret`) presents its token again.

mod hub;
mod liveness;
mod login;
mod revocation;

pub use hub::{FrameClients, LinkConn};

pub use revocation::REVOCATIONS_TABLE;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use engine::{ConnId, ConnMap, Context, LoopHandle};

use crate::rtt::RttWindow;
use log::{debug, info, warn};
use prost::Message as _;

use crate::auth;
use crate::config::{AuthConfig, Liveness, RttTotals};
use crate::dblink::LinkConfig;
use crate::dblink::{DbLink, Event};
use crate::events::{Note, Owner, Timer, UserChange};
use crate::http_front::HttpConfig;
use crate::http_front::{self, HttpFront};
use protocol::proto::{
    data_request, data_response, value, AuthLogin, AuthToken, Batch, BatchStep, DataRequest,
    DataResponse, Value,
};
use shared::backoff::Backoff;
use shared::clock::now_secs;
use shared::wire::{self, ErrorCode, Message, MessageType, Operation};

/// The table of users and their stored secrets, in db-server's database.
pub const USERS_TABLE: &str = "_netmod_users";

/// Largest frame a connection may send before it has logged in: 64 KiB (Redis caps
/// unauthenticated requests the same way).
pub const PRE_LOGIN_MAX_MESSAGE: usize = 64 * 1024;

/// Connections one source address may hold open at once, by default: with frames of at most
/// [`PRE_LOGIN_MAX_MESSAGE`] before login, 16 MiB of buffers per address at most.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// Behaviour knobs of the frame service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Largest frame accepted (the engine's maximum message size).
    pub max_message_size: usize,
    /// Largest frame accepted before the connection has logged in, when logins are configured
    /// (default [`PRE_LOGIN_MAX_MESSAGE`]; never more than `max_message_size`): a connection
    /// that never logs in holds at most this much of a frame.
    pub pre_login_max_message: usize,
    /// `reconnect_after` in the shutdown notice, in seconds.
    pub reconnect_after: u32,
    /// db-server to forward data requests to (none: they get UNAVAILABLE).
    pub db: Option<LinkConfig>,
    /// Authentication (none: AUTH requests and data requests get UNAVAILABLE).
    pub auth: Option<Arc<AuthConfig>>,
    /// The HTTP front, served on the server's second listener (none: no HTTP).
    pub http: Option<HttpConfig>,
    /// Server-initiated pings (none: the server never pings).
    pub liveness: Option<Liveness>,
    /// Round trips of those pings, summed over every loop (for /metrics).
    pub rtt: Arc<RttTotals>,
    /// Every loop's inbox, so that other threads can reach all clients (see [`migrate`]).
    pub loops: Arc<Mutex<Vec<LoopHandle<Note>>>>,
    /// Proxies whose frame connections start with a PROXY protocol v2 header naming the
    /// client (`--trusted-proxy`): the client's address then counts for the login limit and
    /// the logs. From any other address a header is not expected (nor believed).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_message_size: engine::DEFAULT_MAX_MESSAGE,
            pre_login_max_message: PRE_LOGIN_MAX_MESSAGE,
            reconnect_after: 5,
            db: None,
            auth: None,
            http: None,
            liveness: None,
            rtt: Arc::default(),
            loops: Arc::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Tells every frame client of every loop to move to `new_host:new_port` within
/// `migrate_after` seconds (a SERVER_MIGRATION notification), for a zero-downtime upgrade.
/// Returns the loops reached.
pub fn migrate(
    loops: &Mutex<Vec<LoopHandle<Note>>>,
    new_host: &str,
    new_port: u16,
    migrate_after: u32,
) -> usize {
    let loops = match loops.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    let note = wire::ServerMigration {
        new_host: new_host.to_string(),
        new_port: u32::from(new_port),
        migrate_after,
    };
    loops
        .iter()
        .filter(|l| l.post(Note::Migrate(note.clone())).is_ok())
        .count()
}

/// What the service remembers of one client.
#[derive(Debug, Default)]
///
/// Every idle connection pays for one, so it stays small (32 bytes, pinned by a test): the
/// peer's address is the engine's, the user is boxed, times are `u32` offsets from the
/// service's epoch, and the liveness timer is one sweep per loop rather than one per client.
struct Client {
    /// The authenticated user and when its token expires (seconds since the epoch).
    user: Option<Box<(String, u64)>>,
    /// Round trips of the last 100 answered pings.
    rtt: RttWindow,
    /// Requests forwarded and not yet answered.
    in_flight: u32,
    /// When the next ping is due (ms since `FrameService::epoch`, wrapping).
    ping_due: u32,
    /// The id of the server's ping waiting for its answer (0: none out).
    ping_id: u32,
    /// When that ping went out (µs since `FrameService::epoch`, wrapping every ~71 minutes;
    /// the sweep checks it at least every second, and timeouts are capped at an hour).
    ping_sent_us: u32,
}

/// The frame side of one loop, and what the loop's services share: the db link and whether
/// db-server is set up. The hub of the loop's composition ([`crate::service`](mod@crate::service)): its frame
/// clients' events come through [`FrameClients`], the link's through
/// [`LinkConn`], and the HTTP front is a service of its own.
#[derive(Debug)]
pub struct Frames {
    cfg: ServiceConfig,
    clients: ConnMap<Client>,
    pub(crate) link: Option<DbLink<Owner>>,
    /// db-server answered the setup (tables exist).
    ready: bool,
    /// Delays between setups that failed (while db-server answers, but refuses it).
    setup_backoff: Backoff,
    /// A setup retry is scheduled.
    setup_due: bool,
    /// Ids of the server's own pings.
    next_ping: u32,
    /// For the first ping's random delay.
    rng: u64,
    /// The db link's events of one read (capacity kept between reads).
    events: Vec<crate::dblink::Event<Owner>>,
    /// What `Client`'s times count from.
    epoch: Instant,
    /// The server is shutting down: the db link stays open while answers are due.
    draining: bool,
    /// Connections from a trusted proxy whose PROXY header has not come yet.
    awaiting_proxy_header: ConnMap<()>,
    /// The client a trusted proxy named for a connection.
    proxied: ConnMap<std::net::SocketAddr>,
    /// The liveness sweep timer is set (it stops while the loop has no client).
    sweeping: bool,
    /// Each client's moving average of its last 100 ping round trips, summed (µs) over the
    /// clients of this loop that answered one, and how many those are (for /metrics).
    rtt_averages: (u64, u64),
}

/// A duration in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `DataRequest.sandboxed`'s and `DataRequest.user`'s field numbers (data.proto).
const SANDBOXED_FIELD: u32 = 18;
const USER_FIELD: u32 = 19;

/// A client's encoded `DataRequest` with `sandboxed = true` and `user` appended: db-server then
/// runs its statements under the client identity (see `db::sandbox`), and its idempotency
/// keys, transactions and cursors belong to `user`. Appended rather than decoded and encoded
/// again: for a non-repeated field the last value on the wire wins, so whatever the client
/// put there is overridden.
fn sandboxed(data: &[u8], user: &str) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut out = Vec::with_capacity(data.len() + 8 + user.len());
    out.extend_from_slice(data);
    encode_key(SANDBOXED_FIELD, WireType::Varint, &mut out);
    encode_varint(1, &mut out);
    encode_key(USER_FIELD, WireType::LengthDelimited, &mut out);
    encode_varint(user.len() as u64, &mut out);
    out.extend_from_slice(user.as_bytes());
    out
}

impl Frames {
    /// A handler for one loop.
    pub fn new(cfg: ServiceConfig) -> Self {
        let mut link = cfg.db.clone().map(DbLink::new);
        if let Some(link) = link.as_mut() {
            // Documents for the front's cache; revocations for logins.
            let mut tables = Vec::new();
            if cfg.http.as_ref().is_some_and(|h| h.cache_bytes > 0) {
                tables.push(http_front::DOCS_TABLE.to_string());
            }
            if cfg.auth.is_some() {
                tables.push(REVOCATIONS_TABLE.to_string());
            }
            if !tables.is_empty() {
                link.subscribe(http_front::watch_request(tables));
            }
        }
        Frames {
            cfg,
            clients: ConnMap::default(),
            link,
            ready: false,
            setup_backoff: Backoff::standard(),
            setup_due: false,
            next_ping: 0,
            rng: {
                let mut seed = [0u8; 8];
                let _ = getrandom::fill(&mut seed);
                u64::from_le_bytes(seed) | 1
            },
            rtt_averages: (0, 0),
            epoch: Instant::now(),
            draining: false,
            awaiting_proxy_header: ConnMap::default(),
            proxied: ConnMap::default(),
            sweeping: false,
            events: Vec::new(),
        }
    }

    fn reply_error(
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        id: u32,
        op: Operation,
        code: ErrorCode,
        text: impl Into<String>,
    ) {
        let _ = wire::send(ctx, conn, &wire::error(id, op, code, text));
    }

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        msg: Result<Message, wire::WireError>,
    ) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return wire::reply_bad_message(ctx, conn, &e),
        };
        match (
            MessageType::try_from(msg.r#type),
            Operation::try_from(msg.op),
        ) {
            (Ok(MessageType::Request), Ok(Operation::Ping)) => {
                let _ = wire::send(ctx, conn, &wire::pong(msg));
            }
            (Ok(MessageType::Request), Ok(Operation::AuthLogin)) => self.login(ctx, conn, msg),
            (Ok(MessageType::Request), Ok(Operation::AuthToken)) => self.resume(ctx, conn, &msg),
            (Ok(MessageType::Request), Ok(Operation::Data)) => self.data(ctx, conn, msg),
            (Ok(MessageType::Request), Ok(Operation::Users)) => self.users(ctx, conn, msg),
            (Ok(MessageType::Response), Ok(Operation::Ping)) => self.pong(conn, &msg),
            _ => wire::reply_unsupported(ctx, conn, &msg),
        }
    }

    fn data(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId, msg: Message) {
        let id = msg.message_id;

        let op = Operation::Data;
        let user = self.clients.get(conn).and_then(|c| c.user.as_deref());
        if user.is_some_and(|(name, exp)| self.is_revoked(name, *exp)) {
            return Self::refuse_revoked(ctx, conn, id, op);
        }
        let authed = user.map(|u| u.1 > now_secs());
        match authed {
            None => {
                return Self::reply_error(
                    ctx,
                    conn,
                    id,
                    op,
                    ErrorCode::Unauthenticated,
                    "log in first (AUTH_LOGIN or AUTH_TOKEN)",
                )
            }
            Some(false) => {
                return Self::reply_error(
                    ctx,
                    conn,
                    id,
                    op,
                    ErrorCode::Unauthenticated,
                    "token expired; log in again",
                )
            }
            Some(true) => {}
        }
        let name = user.map_or("", |u| u.0.as_str());
        let mut msg = msg;
        msg.data = sandboxed(&msg.data, name).into();
        self.forward(ctx, conn, msg, Owner::Data { conn, id });
    }

    /// Sends `msg` to db-server for `owner`, answering the client at once if it cannot go.
    fn forward(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        msg: Message,
        owner: Owner,
    ) {
        let Some(link) = self.link.as_mut() else {
            return self.settle(
                None,
                ctx,
                Event::Failed(
                    owner,
                    ErrorCode::Unavailable,
                    "no db-server configured".into(),
                ),
            );
        };
        match link.request(ctx, msg, owner) {
            Ok(()) => {
                if let Some(c) = self.clients.get_mut(conn) {
                    c.in_flight += 1;
                }
            }
            Err((owner, code, text)) => {
                // Not counted in flight: settle answers without the decrement.
                self.settle_now(None, ctx, Event::Failed(owner, code, text));
            }
        }
    }

    /// An answer (or failure) for a forwarded request.
    pub(crate) fn settle(
        &mut self,
        http: Option<&mut HttpFront>,
        ctx: &mut Context<'_, Note, Timer>,
        ev: Event<Owner>,
    ) {
        let conn = match &ev {
            Event::Reply(
                Owner::Data { conn, .. } | Owner::Login { conn, .. } | Owner::User { conn, .. },
                _,
            )
            | Event::Failed(
                Owner::Data { conn, .. } | Owner::Login { conn, .. } | Owner::User { conn, .. },
                _,
                _,
            ) => Some(*conn),
            _ => None,
        };
        if let Some(c) = conn.and_then(|conn| self.clients.get_mut(conn)) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        self.settle_now(http, ctx, ev);
    }

    fn settle_now(
        &mut self,
        http: Option<&mut HttpFront>,
        ctx: &mut Context<'_, Note, Timer>,
        ev: Event<Owner>,
    ) {
        match ev {
            Event::Reply(Owner::Http { conn, seq, op }, m) => {
                if let Some(h) = http {
                    h.on_reply(ctx, conn, seq, op, Ok(m));
                }
            }
            Event::Failed(Owner::Http { conn, seq, op }, code, text) => {
                if let Some(h) = http {
                    h.on_reply(ctx, conn, seq, op, Err((code, text)));
                }
            }
            Event::Reply(Owner::Data { conn, id }, mut m) => {
                m.message_id = id;
                let _ = wire::send(ctx, conn, &m);
            }
            Event::Failed(Owner::Data { conn, id }, code, text) => {
                Self::reply_error(ctx, conn, id, Operation::Data, code, text);
            }
            Event::Reply(
                Owner::Login {
                    conn,
                    id,
                    user,
                    secret,
                },
                m,
            ) => {
                self.check_login(ctx, conn, id, user, secret, &m);
            }
            Event::Failed(Owner::Login { conn, id, user, .. }, code, text) => {
                self.refund_login(ctx, conn, &user);
                Self::reply_error(ctx, conn, id, Operation::AuthLogin, code, text);
            }
            Event::Reply(Owner::Setup, m) => {
                if m.r#type() == MessageType::Error {
                    let e = wire::ErrorBody::decode(m.data).unwrap_or_default();
                    self.setup_failed(ctx, &e.message);
                } else {
                    self.ready = true;
                    self.setup_backoff.reset();
                    self.refresh_revocations(ctx);
                }
            }
            Event::Reply(Owner::Revocations, m) => self.revocations_read(ctx, m),
            Event::Failed(Owner::Revocations, _, text) => {
                debug!("reading {REVOCATIONS_TABLE}: {text}");
            }
            Event::Reply(Owner::User { conn, id, change }, m) => {
                self.user_changed(ctx, conn, id, change, m)
            }
            Event::Failed(Owner::User { conn, id, .. }, code, text) => {
                Self::reply_error(ctx, conn, id, Operation::Users, code, text);
            }
            Event::Failed(Owner::Setup, _, text) => self.setup_failed(ctx, &text),
            Event::Notice(m) => {
                let Ok(changed) = protocol::proto::ChangeNotice::new(&m.data) else {
                    warn!("db link: an unreadable change notice: every cached document dropped");
                    if let Some(h) = http {
                        h.on_db_watching(true);
                    }
                    return;
                };
                // Named only: a user change always names the table, and "*" (a write db-server
                // cannot name, any interactive commit) comes from clients too, who could
                // otherwise make every loop of every instance read the table at will.
                if self.cfg.auth.is_some()
                    && changed
                        .tables()
                        .any(|t| t.eq_ignore_ascii_case(REVOCATIONS_TABLE))
                {
                    self.refresh_revocations(ctx);
                }
                if let Some(h) = http {
                    h.on_db_change(&changed);
                }
            }
            Event::Watching(yes) => {
                if yes {
                    // Changes may have been missed while the watch was down.
                    self.refresh_revocations(ctx);
                }
                if let Some(h) = http {
                    h.on_db_watching(yes);
                }
            }
        }
    }

    /// A setup failed: tried again after a backoff (2 s doubling to 60 s) until it succeeds,
    /// so that a refusal (a conflict with another instance's setup, say) does not leave this
    /// instance unable to serve until its db link happens to reconnect.
    fn setup_failed(&mut self, ctx: &mut Context<'_, Note, Timer>, why: &str) {
        if self.ready || self.setup_due {
            return;
        }
        let delay = self.setup_backoff.next_delay();
        warn!(
            "setting up {USERS_TABLE} on db-server failed: {why}; trying again in {:.1} s",
            delay.as_secs_f64()
        );
        self.setup_due = true;
        ctx.set_timer(delay, Timer::Setup);
    }

    /// Creates the users table and the bootstrap user (idempotent; on every link connection).
    fn setup(&mut self, ctx: &mut Context<'_, Note, Timer>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut steps = vec![
            BatchStep::new(
                format!(
                    "CREATE TABLE IF NOT EXISTS {USERS_TABLE} \
                     (name TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, created BIGINT NOT NULL)"
                ),
                vec![],
            ),
            BatchStep::new(http_front::create_docs_table(), vec![]),
            BatchStep::new(revocation::create_table(), vec![]),
        ];
        if let Some((user, stored)) = self.cfg.auth.as_ref().and_then(|a| a.bootstrap.clone()) {
            steps.push(BatchStep::new(
                format!(
                    "INSERT INTO {USERS_TABLE} (name, secret_hash, created) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET secret_hash = excluded.secret_hash"
                ),
                vec![
                    Value::text(user),
                    Value::text(stored),
                    Value::int(i64::try_from(now_secs()).unwrap_or(0)),
                ],
            ));
        }
        let req = DataRequest::batch(steps);
        if let Err((_, _, text)) = link.request(ctx, req_message(&req), Owner::Setup) {
            warn!("setting up {USERS_TABLE}: {text}");
        }
    }
}

fn req_message(req: &DataRequest) -> Message {
    wire::message(MessageType::Request, Operation::Data, 0, req)
}

/// The frame sent to a connection refused at the connection limit.
pub fn refuse_frame() -> Vec<u8> {
    wire::to_frame(&wire::error(
        0,
        Operation::OpUnspecified,
        ErrorCode::ServerBusy,
        "connection limit reached, try again later",
    ))
}

/// The frame sent to a connection refused by the per-IP rate limit.
pub fn rate_limited_frame() -> Vec<u8> {
    wire::to_frame(&wire::error(
        0,
        Operation::OpUnspecified,
        ErrorCode::RateLimited,
        "too many new connections from this address",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::proto::DataRequest;

    #[test]
    fn a_forwarded_request_is_sandboxed_whatever_the_client_sent() {
        let mut req = DataRequest::execute("SELECT 1", vec![]);
        for client_value in [false, true] {
            req.sandboxed = client_value;
            req.user = "mallory".into();
            let forwarded =
                DataRequest::decode(&sandboxed(&req.encode_to_vec(), "bob")[..]).unwrap();
            assert!(forwarded.sandboxed);
            assert_eq!(forwarded.user, "bob");
            req.user.clear();
            assert_eq!(forwarded.kind, req.kind);
        }
        let empty = DataRequest::decode(&sandboxed(&[], "bob")[..]).unwrap();
        assert!(empty.sandboxed && empty.kind.is_none());
    }

    /// Every connected frame client pays for one `Client` in its loop's map (next to the
    /// engine's session, pinned in the engine); issue 14 brought it from 120 to 32 bytes
    /// (and the map's slot, with its `ConnId`, to 40).
    #[test]
    fn an_idle_client_stays_small() {
        let size = std::mem::size_of::<super::Client>();
        assert!(size <= 32, "Client grew to {size} bytes");
        let slot = std::mem::size_of::<Option<(engine::ConnId, super::Client)>>();
        assert!(slot <= 40, "a client's map slot grew to {slot} bytes");
    }
}
