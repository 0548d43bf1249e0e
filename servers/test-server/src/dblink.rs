//! A server's link to db-server, on the server's own loop: a few multiplexed connections (many
//! requests in flight on each, matched by `message_id`, answered in any order), reconnected with
//! [`Backoff`], behind a [`Breaker`] so that callers get an answer at once while db-server is
//! down.
//!
//! The link is not a handler: the handler that owns it passes it the events of the link's
//! connections and timers (`owns`, `on_connect`, `on_data`, `on_close`, `on_timer`) and gets
//! back [`Event`]s carrying the `T` it attached to each request.
//!
//! ```text
//! slot: Down ──connect──► Connecting ──on_connect──► Up ──lost──► Down (retry after backoff)
//!                              └──failed──► Down (retry after backoff)
//! breaker: 5 failures → open (requests refused) → after the open period one trial, or a slot
//!          that connects again → closed.
//! request: breaker open → Failed(UNAVAILABLE) at once; no slot Up → Failed(UNAVAILABLE) at once;
//!          else sent on the next Up slot → Reply, or Failed(UNAVAILABLE) if the connection
//!          drops, or Failed(TIMEOUT) after the request timeout.
//! liveness: a connection db-server has sent nothing on for `ping_interval` gets a Ping; one
//!          silent for `silence_limit` is closed (its requests fail UNAVAILABLE, the slot
//!          reconnects). A partition — no FIN, no RST, packets just vanish — is noticed in
//!          seconds, not after TCP's retransmission timeout. Each `ping_interval` one brief
//!          STATS request also asks where db-server's writes go ([`DbLink::primary`]).
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::{CloseReason, ConnId, Context};
use log::{info, warn};

use prost::Message as _;
use shared::backoff::Backoff;
use shared::breaker::Breaker;

use protocol::proto::{data_request, data_response, DataRequest, DataResponse, StatsRequest};
use shared::wire::{self, ErrorCode, Message, MessageType};

mod config;
mod requests;
#[allow(unused_imports)]
pub use config::*;

/// The kind of the link's connections ([`engine::Context::set_kind`]): the loop's
/// composition gives their events to the link's service.
pub const KIND: engine::Kind = engine::Kind(1);

/// What became of a request, or what db-server said unasked.
#[derive(Debug)]
pub enum Event<T> {
    /// db-server answered (RESPONSE or ERROR; `message_id` is the link's, not the caller's).
    Reply(T, Message),
    /// No answer will come: UNAVAILABLE or TIMEOUT, with a reason.
    Failed(T, ErrorCode, String),
    /// A NOTIFICATION for the link's subscription (see [`DbLink::subscribe`]).
    Notice(Message),
    /// The subscription was taken (`true`: a connection's WATCH was answered) or lost (`false`:
    /// a subscribed connection closed, so notices may have been missed).
    Watching(bool),
}

#[derive(Debug)]
enum SlotState {
    Down,
    Connecting,
    Up(ConnId),
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    backoff: Backoff,
    /// db-server answered this connection's subscription.
    watched: bool,
    /// When db-server last sent anything on this connection (or it came up).
    heard: Instant,
    /// When this connection was last pinged.
    pinged: Instant,
    /// It has been up before (so coming up is "up again").
    was_up: bool,
}

#[derive(Debug)]
struct Pending<T> {
    owner: T,
    slot: usize,
    sent: Instant,
}

/// Link state of one loop.
#[derive(Debug)]
pub struct DbLink<T> {
    cfg: LinkConfig,
    slots: Vec<Slot>,
    /// The link's connections and their slots: a few entries, searched in order (a `ConnMap`
    /// would be as long as the loop's highest connection key).
    by_conn: Vec<(ConnId, usize)>,
    pending: HashMap<u32, Pending<T>>,
    next_id: u32,
    breaker: Breaker,
    rr: usize,
    sweeping: bool,
    /// Sent on every connection as it comes up.
    subscription: Option<Message>,
    /// Subscriptions sent and not yet answered: message id → slot.
    subscribing: HashMap<u32, usize>,
    /// The subscribed connection whose notices are passed on. Every subscribed connection
    /// carries every notice; one stream, in db-server's order, is what a cache keeping its own
    /// writes needs (the same notice twice would look like a second writer's).
    notices_from: Option<usize>,
    /// Liveness pings not answered yet (their ids are not given to requests).
    pings: Vec<u32>,
    /// The brief STATS request in flight, and when it was sent.
    asking: Option<(u32, Instant)>,
    /// Where db-server's messages are decoded: their payloads share this buffer, reused once
    /// they are handled ([`wire::decode_in`]).
    decoded: prost::bytes::BytesMut,
}

/// The buffer db-server's messages are decoded into (its size is kept when it is reused):
/// room for a pass's worth of small answers, so that the next pass finds it free again.
const DECODE_BUFFER: usize = 64 * 1024;

/// The link's timers, carried inside the handler's own timer type (`Tm: From<LinkTimer>`) and
/// given back to [`DbLink::on_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTimer {
    /// Time to reconnect this connection slot.
    Reconnect(usize),
    /// Time to fail requests that waited longer than the request timeout.
    Sweep,
    /// Time to ping quiet connections and close silent ones.
    Liveness,
}

impl<T> DbLink<T> {
    /// A link; call [`DbLink::start`] from the handler's `on_start`.
    pub fn new(cfg: LinkConfig) -> Self {
        let (base, max, jitter) = cfg.backoff;
        let slots = (0..cfg.conns.clamp(1, 64))
            .map(|_| Slot {
                state: SlotState::Down,
                backoff: Backoff::new(base, max, jitter),
                watched: false,
                heard: Instant::now(),
                pinged: Instant::now(),
                was_up: false,
            })
            .collect();
        DbLink {
            breaker: Breaker::new(cfg.breaker_failures, cfg.breaker_open),
            cfg,
            slots,
            by_conn: Vec::new(),
            pending: HashMap::new(),
            next_id: 0,
            rr: 0,
            sweeping: false,
            subscription: None,
            subscribing: HashMap::new(),
            notices_from: None,
            pings: Vec::new(),
            asking: None,
            decoded: prost::bytes::BytesMut::with_capacity(DECODE_BUFFER),
        }
    }

    /// Where db-server's writes go, as it last said (asked every ping interval): the
    /// PostgreSQL primary's `host:port` — after a failover, the new one; empty when none
    /// answers, on SQLite, or before db-server has said. Shared by every loop's link
    /// ([`LinkConfig::primary`]).
    pub fn primary(&self) -> String {
        self.cfg
            .primary
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Sends `request` (e.g. a WATCH) on every connection when it comes up, so that db-server's
    /// notifications keep arriving across reconnections; they come back as [`Event::Notice`],
    /// and [`Event::Watching`] tells when the subscription is taken or may have missed some.
    pub fn subscribe(&mut self, request: Message) {
        self.subscription = Some(request);
    }

    /// True while some connection is up with its subscription answered.
    pub fn watching(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.watched && matches!(s.state, SlotState::Up(_)))
    }

    /// Opens the connections.
    pub fn start<M: Send + 'static, Tm: From<LinkTimer>>(&mut self, ctx: &mut Context<'_, M, Tm>) {
        for i in 0..self.slots.len() {
            self.connect(ctx, i);
        }
        if !self.cfg.ping_interval.is_zero() {
            ctx.set_timer(self.cfg.ping_interval, Tm::from(LinkTimer::Liveness));
        }
    }

    /// True when `conn` is one of the link's connections.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.slot_of(conn).is_some()
    }

    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.by_conn
            .iter()
            .find(|(c, _)| *c == conn)
            .map(|(_, i)| *i)
    }

    /// Connections up now.
    pub fn up(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Up(_)))
            .count()
    }

    /// Requests waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The breaker's state, for health reports.
    pub fn breaker(&self) -> shared::breaker::State {
        self.breaker.state()
    }

    fn connect<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        i: usize,
    ) {
        let dialed = match &self.cfg.tls {
            Some((config, name)) => {
                ctx.connect_tls(self.cfg.addr, std::sync::Arc::clone(config), name.clone())
            }
            None => ctx.connect(self.cfg.addr),
        };
        match dialed {
            Ok(conn) => {
                ctx.set_kind(conn, KIND);
                self.slots[i].state = SlotState::Connecting;
                self.by_conn.push((conn, i));
            }
            Err(e) => self.lost(ctx, i, &format!("connect: {e}")),
        }
    }

    /// Slot `i` is down: count a failure and schedule the reconnection.
    fn lost<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        i: usize,
        why: &str,
    ) {
        self.slots[i].state = SlotState::Down;
        if self.breaker.failure(Instant::now()) {
            warn!(
                "db-server {} unreachable: circuit open for {:?}",
                self.cfg.addr, self.cfg.breaker_open
            );
        }
        if ctx.is_shutting_down() {
            return;
        }
        let slot = &mut self.slots[i];
        let delay = slot.backoff.next_delay();
        if slot.backoff.attempts() <= 1 || slot.backoff.attempts() % 10 == 0 {
            warn!(
                "db link {i} of loop {} to {} down ({why}); reconnecting in {:.1} s (attempt {})",
                ctx.loop_id(),
                self.cfg.addr,
                delay.as_secs_f64(),
                slot.backoff.attempts()
            );
        }
        ctx.set_timer(delay, Tm::from(LinkTimer::Reconnect(i)));
    }

    /// An outbound connection came up.
    pub fn on_connect<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        conn: ConnId,
    ) {
        let Some(i) = self.slot_of(conn) else {
            return;
        };
        let slot = &mut self.slots[i];
        // Each loop has its own links, so each says so: with its loop.
        match (slot.was_up, slot.backoff.attempts()) {
            (true, _) => info!(
                "db link {i} of loop {} to {} up again",
                ctx.loop_id(),
                self.cfg.addr
            ),
            (false, 0) => {}
            (false, n) => info!(
                "db link {i} of loop {} to {} up (after {n} failed attempt(s))",
                ctx.loop_id(),
                self.cfg.addr
            ),
        }
        slot.was_up = true;
        slot.backoff.reset();
        slot.state = SlotState::Up(conn);
        slot.heard = ctx.now();
        // db-server accepted a connection: that is the trial the open breaker waits for. Left
        // open, it would refuse every request (and the service's setup) until a request came
        // by after the open period — which may be never, behind a proxy that stopped sending
        // traffic because /health reports the open breaker.
        if self.breaker.state() != shared::breaker::State::Closed {
            info!(
                "db link {i} to {}: circuit closed (connected)",
                self.cfg.addr
            );
            self.breaker.success();
        }
        if let Some(mut msg) = self.subscription.clone() {
            msg.message_id = self.fresh_id();
            if wire::send(ctx, conn, &msg).is_ok() {
                self.subscribing.insert(msg.message_id, i);
            }
        }
    }

    /// One of the link's connections closed (or failed to connect): its requests fail.
    pub fn on_close<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        conn: ConnId,
        reason: CloseReason,
    ) -> Vec<Event<T>> {
        let Some(at) = self.by_conn.iter().position(|(c, _)| *c == conn) else {
            return Vec::new();
        };
        let (_, i) = self.by_conn.swap_remove(at);
        self.subscribing.retain(|_, slot| *slot != i);
        let was_watched = std::mem::replace(&mut self.slots[i].watched, false);
        if self.notices_from == Some(i) {
            // Another subscribed connection, if any, has carried the same notices all along.
            self.notices_from = self.slots.iter().position(|s| s.watched);
        }
        let ids: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.slot == i)
            .map(|(id, _)| *id)
            .collect();
        let mut events: Vec<Event<T>> = ids
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| {
                Event::Failed(
                    p.owner,
                    ErrorCode::Unavailable,
                    "connection to db-server lost before its answer".into(),
                )
            })
            .collect();
        if was_watched {
            events.push(Event::Watching(false));
        }
        self.lost(ctx, i, &reason.to_string());
        events
    }

    /// One of the link's timers fired.
    pub fn on_timer<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        timer: LinkTimer,
    ) -> Vec<Event<T>> {
        match timer {
            LinkTimer::Sweep => self.sweep(ctx),
            LinkTimer::Liveness => {
                self.liveness(ctx);
                Vec::new()
            }
            LinkTimer::Reconnect(i) => {
                let down = self
                    .slots
                    .get(i)
                    .is_some_and(|s| matches!(s.state, SlotState::Down));
                if down && !ctx.is_shutting_down() {
                    self.connect(ctx, i);
                }
                Vec::new()
            }
        }
    }

    /// Pings connections db-server has been quiet on and closes those silent too long (their
    /// requests then fail at once, in `on_close`, and the slot reconnects with backoff).
    fn liveness<M: Send + 'static, Tm: From<LinkTimer>>(&mut self, ctx: &mut Context<'_, M, Tm>) {
        let now = ctx.now();
        for i in 0..self.slots.len() {
            let SlotState::Up(conn) = self.slots[i].state else {
                continue;
            };
            let quiet = now.duration_since(self.slots[i].heard);
            if quiet >= self.cfg.silence_limit {
                warn!(
                    "db link {i} of loop {} to {}: nothing heard for {:.1} s; closing it",
                    ctx.loop_id(),
                    self.cfg.addr,
                    quiet.as_secs_f64()
                );
                ctx.abort(conn);
            } else if quiet >= self.cfg.ping_interval
                && now.duration_since(self.slots[i].pinged) >= self.cfg.ping_interval
            {
                let id = self.fresh_id();
                let ping = wire::message(
                    MessageType::Request,
                    wire::Operation::Ping,
                    id,
                    &wire::Ping::default(),
                );
                if wire::send(ctx, conn, &ping).is_ok() {
                    self.pings.push(id);
                    self.slots[i].pinged = now;
                }
            }
        }
        // An unanswered ping's id stays reserved until its connection is closed; keep few.
        if self.pings.len() > 4 * self.slots.len() {
            self.pings.drain(..self.slots.len());
        }
        self.ask_where_writes_go(ctx, now);
        if !ctx.is_shutting_down() {
            ctx.set_timer(self.cfg.ping_interval, Tm::from(LinkTimer::Liveness));
        }
    }

    /// Bytes from one of the link's connections: the answers they complete, appended to `out`.
    pub fn on_data<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        conn: ConnId,
        data: &[u8],
        out: &mut Vec<Event<T>>,
    ) -> usize {
        let max = self.cfg.max_message;
        // The loop's clock of this pass: no clock read per arrival.
        let slot = self.slot_of(conn);
        if let Some(i) = slot {
            self.slots[i].heard = ctx.now();
        }
        let ctx_loop = ctx.loop_id();
        let mut pool = std::mem::take(&mut self.decoded);
        let mut big = false;
        let used = wire::for_each_frame_body(ctx, conn, data, max, |_ctx, body| {
            big |= body.len() > DECODE_BUFFER;
            let Ok(msg) = wire::decode_body_in(body, max, &mut pool) else {
                warn!("db link: undecodable frame from db-server");
                return;
            };
            let kind = MessageType::try_from(msg.r#type);
            if let Some(i) = matches!(kind, Ok(MessageType::Response | MessageType::Error))
                .then(|| self.subscribing.remove(&msg.message_id))
                .flatten()
            {
                if kind == Ok(MessageType::Error) {
                    let e = wire::ErrorBody::decode(msg.data).unwrap_or_default();
                    warn!("db link {i}: subscription refused: {}", e.message);
                } else {
                    self.slots[i].watched = true;
                    self.notices_from.get_or_insert(i);
                    out.push(Event::Watching(true));
                }
                return;
            }
            if self.asking.is_some_and(|(id, _)| id == msg.message_id) {
                self.asking = None;
                return self.heard_where_writes_go(ctx_loop, &msg);
            }
            if let Some(at) = self.pings.iter().position(|id| *id == msg.message_id) {
                self.pings.swap_remove(at);
                return; // a pong: hearing it was the point
            }
            match kind {
                Ok(MessageType::Response | MessageType::Error) => {
                    if let Some(p) = self.pending.remove(&msg.message_id) {
                        self.breaker.success();
                        out.push(Event::Reply(p.owner, msg));
                    }
                }
                Ok(MessageType::Notification)
                    if self.subscription.as_ref().is_some_and(|s| s.op == msg.op) =>
                {
                    if slot.is_some() && slot == self.notices_from {
                        out.push(Event::Notice(msg));
                    }
                }
                // db-server's shutdown notice: the close that follows reconnects.
                _ => info!("db link: notification from db-server (op {})", msg.op),
            }
        });
        // A large answer grew the buffer: not kept at that size for ever (it goes when that
        // answer does).
        self.decoded = if big {
            prost::bytes::BytesMut::with_capacity(DECODE_BUFFER)
        } else {
            pool
        };
        used
    }

    /// Sends one brief STATS request on an open connection, unless one is in flight (for less
    /// than a ping interval: its connection may have gone without an answer).
    fn ask_where_writes_go<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        now: Instant,
    ) {
        if self
            .asking
            .is_some_and(|(_, sent)| now.duration_since(sent) < self.cfg.ping_interval)
        {
            return;
        }
        let Some(conn) = self.slots.iter().find_map(|s| match s.state {
            SlotState::Up(c) => Some(c),
            _ => None,
        }) else {
            return;
        };
        let id = self.fresh_id();
        let req = DataRequest {
            kind: Some(data_request::Kind::Stats(StatsRequest { brief: true })),
            ..DataRequest::default()
        };
        let msg = wire::message(MessageType::Request, wire::Operation::Data, id, &req);
        if wire::send(ctx, conn, &msg).is_ok() {
            self.asking = Some((id, now));
        }
    }

    /// db-server's answer to [`DbLink::ask_where_writes_go`]. The primary is known by the
    /// loop that heard it first; the others find it already there.
    fn heard_where_writes_go(&mut self, loop_id: usize, msg: &Message) {
        let Ok(resp) = DataResponse::decode(msg.data.clone()) else {
            return;
        };
        let Some(data_response::Kind::Stats(stats)) = resp.kind else {
            return;
        };
        let Ok(mut primary) = self.cfg.primary.lock() else {
            return;
        };
        if *primary != stats.primary {
            if !stats.primary.is_empty() {
                info!(
                    "db link of loop {loop_id}: db-server writes to PostgreSQL at {}",
                    stats.primary
                );
            }
            *primary = stats.primary;
        }
    }
}
