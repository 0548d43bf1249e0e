//! db-server's frame service: decodes DATA requests on the loop, hands them to the worker pool,
//! and writes the answers that come back through the loop's waker.
//!
//! # Lifecycle of a request
//!
//! ```text
//! frame ─► decode Message ─► REQUEST DATA ─► decode DataRequest ─► Pool::submit (staged)
//!   │                         REQUEST PING ─► PONG                        │ end of the pass:
//!   │                         other ─► ERROR UNSUPPORTED                  ▼ Pool::flush
//!   │                                                       worker thread: a group of jobs
//!   └─ undecodable ─► ERROR BAD_MESSAGE                                   │ the group's answers
//!                                                                         ▼ together (reply)
//!                                          on_message ─► RESPONSE DATA (or ERROR) to the peer
//! ```
//!
//! A connection with requests in flight is "busy", so a graceful shutdown waits for its answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{ConnId, ConnMap, Context, Handler};
use prost::Message as _;

use super::error::DbError;
use super::page::Limit;
use super::pool::{Pending, Pool};
use super::reply::ReplyTo;
use super::watch::{self, Subscription, Watchers};
use super::workers::{check_sql, starts_with_keyword, Caller, Job, Work, READ_KEYWORDS};
use protocol::proto::{
    data_request, data_response, DataRequest, DataResponse, ReadConsistency, Statement,
    TablesChanged, Watch,
};
use protocol::view::{DataRequestView, MessageView};
use shared::wire::{self, Compression, ErrorCode, Message, MessageType, Operation};

/// Default cap on a result, before the frame size caps it further.
pub const DEFAULT_RESULT_LIMIT: usize = 10 * 1024 * 1024;
/// Room left in a frame for the response's own fields.
const RESPONSE_OVERHEAD: usize = 4096;

pub use super::reply::{Inbox, Reply};

/// The handler of one loop.
#[derive(Debug)]
pub struct DbService {
    pool: Arc<Pool>,
    watchers: Arc<Watchers<Inbox>>,
    max_message: usize,
    /// The longest a client statement may run.
    statement_timeout: Duration,
    inflight: ConnMap<u32>,
    subscriptions: ConnMap<Subscription>,
    /// This pass's jobs, handed to the workers at its end.
    pending: Pending,
    /// Which large answers are compressed.
    compress: wire::Compress,
    /// Buffers the workers gave back, to carry the next point reads' statements.
    spare: Vec<Vec<u8>>,
}

/// Spare buffers a loop keeps: about as many as reads in flight at once.
const SPARE_BUFFERS: usize = 1024;
/// The largest spare buffer kept (a point read's statement is far smaller): at most
/// `SPARE_BUFFERS` × this (4 MiB) stays with a loop whatever clients send.
const SPARE_BYTES: usize = 4 * 1024;

impl DbService {
    /// A handler for one loop, sharing `pool` and `watchers` with the others.
    pub fn new(pool: Arc<Pool>, watchers: Arc<Watchers<Inbox>>, max_message: usize) -> Self {
        DbService {
            pool,
            watchers,
            max_message,
            statement_timeout: crate::deadline::DEFAULT_STATEMENT_TIMEOUT,
            inflight: ConnMap::default(),
            subscriptions: ConnMap::default(),
            pending: Pending::default(),
            compress: wire::Compress::default(),
            spare: Vec::new(),
        }
    }

    /// Which answers over [`wire::COMPRESS_OVER`] are gzip-compressed (by default: those to
    /// peers on another host).
    pub fn with_compression(self, compress: wire::Compress) -> Self {
        DbService { compress, ..self }
    }

    /// The longest a client statement may run (see [`crate::deadline`]); zero: no maximum.
    pub fn with_statement_timeout(self, max: Duration) -> Self {
        DbService {
            statement_timeout: max,
            ..self
        }
    }

    /// What a request's statements may take: `max_result_bytes` (0: the default) within the
    /// frame size; for a client's (`sandboxed`: its user), a deadline and a session owner.
    fn limit(
        &self,
        max_result_bytes: u64,
        truncate: bool,
        sandboxed: Option<&str>,
        timeout_ms: u32,
    ) -> Limit {
        let max_bytes = match max_result_bytes {
            0 => DEFAULT_RESULT_LIMIT,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
        .min(self.max_message.saturating_sub(RESPONSE_OVERHEAD));
        Limit {
            max_bytes,
            truncate,
            deadline: sandboxed.and_then(|_| self.deadline(timeout_ms)),
            owner: sandboxed.map_or(0, session_owner),
        }
    }

    /// When a client's statements must stop: `timeout_ms` capped by (or, when 0, set to) the
    /// server's maximum.
    fn deadline(&self, timeout_ms: u32) -> Option<Instant> {
        let asked = Some(Duration::from_millis(timeout_ms.into())).filter(|d| !d.is_zero());
        let max = Some(self.statement_timeout).filter(|d| !d.is_zero());
        let time = match (asked, max) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        };
        time.map(|t| Instant::now() + t)
    }

    /// `WATCH` request: (re)subscribes `conn`, answered with the list it now watches.
    fn watch(&mut self, ctx: &mut Context<'_, Inbox>, conn: ConnId, msg: Message) {
        let id = msg.message_id;
        let req = match Watch::decode(msg.data) {
            Ok(w) => w,
            Err(e) => {
                let reply = wire::error(
                    id,
                    Operation::Watch,
                    ErrorCode::BadMessage,
                    format!("bad Watch: {e}"),
                );
                let _ = wire::send(ctx, conn, &reply);
                return;
            }
        };
        let before = self.subscriptions.remove(conn).is_some();
        let now = match Subscription::new(&req.tables) {
            Some(sub) => {
                self.subscriptions.insert(conn, sub);
                true
            }
            None => false,
        };
        if before != now {
            self.watchers.subscribed(now);
        }
        let reply = wire::message(MessageType::Response, Operation::Watch, id, &req);
        let _ = wire::send(ctx, conn, &reply);
    }

    /// Tells this loop's subscribers about a committed change.
    fn notify(&mut self, ctx: &mut Context<'_, Inbox>, changed: &TablesChanged) {
        let mut note: Option<Message> = None;
        for (conn, sub) in self.subscriptions.iter() {
            if sub.wants(changed) {
                let m = note.get_or_insert_with(|| {
                    let mut m =
                        wire::message(MessageType::Notification, Operation::Watch, 0, changed);
                    m.priority = wire::Priority::High as i32;
                    m
                });
                let _ = wire::send(ctx, conn, m);
            }
        }
    }

    /// A point read — an `execute` of a statement that reads — routed from a view of the
    /// request (`data`, a `DataRequest` still encoded) and handed to the readers with its
    /// statement still encoded, in a buffer a worker gave back: nothing allocated on the loop
    /// (but the user's name, for a client's read). False when the request is anything else,
    /// or not readable in place: it is then decoded whole.
    fn read_in_place(
        &mut self,
        ctx: &mut Context<'_, Inbox>,
        conn: ConnId,
        id: u32,
        data: &[u8],
    ) -> bool {
        let Ok(req) = DataRequestView::new(data) else {
            return false;
        };
        let Some(st) = req.execute else {
            return false;
        };
        if !req.idempotency_key.is_empty()
            || !starts_with_keyword(st.sql, READ_KEYWORDS)
            || (self.watchers.any() && watch::written_table(st.sql).is_some())
        {
            return false;
        }
        let caller = Caller {
            sandboxed: req.sandboxed,
            user: req.user.to_string(),
        };
        if let Err(e) = check_sql(st.sql, &caller) {
            self.answer(ctx, conn, id, Err(e));
            return true;
        }
        let limit = self.limit(
            req.max_result_bytes,
            req.allow_truncation,
            req.sandboxed.then_some(req.user),
            req.timeout_ms,
        );
        let mut encoded = self.spare.pop().unwrap_or_default();
        encoded.extend_from_slice(st.encoded);
        let job = Job {
            work: Work::Execute(Statement::default()),
            encoded,
            idempotency_key: String::new(),
            caller,
            limit,
            consistency: ReadConsistency::try_from(req.consistency).unwrap_or_default(),
            after_index: req.after_index,
            reply: self.reply_fn(ctx, conn, id, TablesChanged::default()),
        };
        self.pool.submit_read(job, &mut self.pending);
        true
    }

    /// A DATA request `id` whose payload (a `DataRequest`, inflated) is `data`.
    fn data(&mut self, ctx: &mut Context<'_, Inbox>, conn: ConnId, id: u32, data: &[u8]) {
        let mut req = match DataRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                let reply = wire::error(
                    id,
                    Operation::Data,
                    ErrorCode::BadMessage,
                    format!("bad DataRequest: {e}"),
                );
                let _ = wire::send(ctx, conn, &reply);
                return;
            }
        };
        let limit = self.limit(
            req.max_result_bytes,
            req.allow_truncation,
            req.sandboxed.then_some(&req.user),
            req.timeout_ms,
        );
        let consistency = req.consistency();
        let watched = self.watchers.any();
        let caller = Caller {
            sandboxed: req.sandboxed,
            user: std::mem::take(&mut req.user),
        };
        let work = match req.kind {
            Some(data_request::Kind::Execute(st)) => Work::Execute(st),
            Some(data_request::Kind::Batch(b)) => Work::Batch(b),
            Some(data_request::Kind::Begin(b)) => {
                let reply = self.reply_fn(ctx, conn, id, TablesChanged::default());
                return self.pool.txns().begin(&b, caller, reply);
            }
            Some(data_request::Kind::TxnExecute(t)) => {
                let reply = self.reply_fn(ctx, conn, id, TablesChanged::default());
                let st = t.stmt.unwrap_or_default();
                return self
                    .pool
                    .txns()
                    .execute(t.txn_id, t.seq, &caller, st, limit, reply);
            }
            Some(data_request::Kind::Commit(t)) => {
                let changed = TablesChanged {
                    tables: if watched {
                        vec!["*".into()]
                    } else {
                        Vec::new()
                    },
                    ..TablesChanged::default()
                };
                let reply = self.reply_fn(ctx, conn, id, changed);
                return self.pool.txns().commit(t.txn_id, t.seq, &caller, reply);
            }
            Some(data_request::Kind::Rollback(t) | data_request::Kind::CloseCursor(t)) => {
                let reply = self.reply_fn(ctx, conn, id, TablesChanged::default());
                return self.pool.txns().rollback(t.txn_id, t.seq, &caller, reply);
            }
            Some(data_request::Kind::OpenCursor(c)) => {
                let reply = self.reply_fn(ctx, conn, id, TablesChanged::default());
                return self.pool.txns().open_cursor(c, limit, caller, reply);
            }
            Some(data_request::Kind::Fetch(t)) => {
                let reply = self.reply_fn(ctx, conn, id, TablesChanged::default());
                return self.pool.txns().fetch(t.txn_id, t.seq, &caller, reply);
            }
            // The monitor holds every statement's text (the servers' and every user's, literals
            // included) and the primary's address: db-server's direct callers' business, not
            // a client's.
            Some(data_request::Kind::Stats(_)) if req.sandboxed => {
                let e = DbError::new(
                    ErrorCode::Forbidden,
                    "statistics are for db-server's operators, not for clients' requests",
                );
                return self.answer(ctx, conn, id, Err(e));
            }
            Some(data_request::Kind::Stats(s)) => {
                let resp = DataResponse {
                    kind: Some(data_response::Kind::Stats(self.pool.stats(s.brief))),
                    commit_index: self.pool.committed_index(),
                };
                return self.answer(ctx, conn, id, Ok(resp));
            }
            None => {
                let e = DbError::new(ErrorCode::BadRequest, "DataRequest names no operation");
                return self.answer(ctx, conn, id, Err(e));
            }
        };
        let changed = match watched {
            // Keys narrow a notice to the rows named, which caches trust: only the servers'
            // own writes name them; a client's notice covers its tables whole.
            true if caller.sandboxed => TablesChanged {
                keys: Vec::new(),
                ..watch::changes(&work)
            },
            true => watch::changes(&work),
            false => TablesChanged::default(),
        };
        let reply = self.reply_fn(ctx, conn, id, changed);
        let job = Job {
            work,
            encoded: Vec::new(),
            idempotency_key: caller.scoped_key(req.idempotency_key),
            caller,
            limit,
            consistency,
            after_index: req.after_index,
            reply,
        };
        self.pool.submit(job, &mut self.pending);
    }

    /// Counts one answer owed to `conn` and says where a worker delivers it.
    fn reply_fn(
        &mut self,
        ctx: &mut Context<'_, Inbox>,
        conn: ConnId,
        id: u32,
        changed: TablesChanged,
    ) -> ReplyTo {
        match self.inflight.get_mut(conn) {
            Some(n) => *n += 1,
            None => {
                self.inflight.insert(conn, 1);
            }
        }
        ReplyTo::new(ctx.loop_handle(), conn, id, changed).watched(self.watchers.any())
    }

    fn answer(
        &mut self,
        ctx: &mut Context<'_, Inbox>,
        conn: ConnId,
        id: u32,
        result: Result<DataResponse, DbError>,
    ) {
        let msg = match result {
            Ok(resp) => {
                let header = wire::Header {
                    ty: MessageType::Response,
                    op: Operation::Data,
                    id,
                    priority: wire::Priority::High,
                };
                // Encoded once, straight into the output (an over-long answer is refused whole).
                if header.frame_len(resp.encoded_len()) <= self.max_message {
                    let _ = wire::send_payload_as(ctx, conn, header, &resp, self.compress);
                    return;
                }
                wire::error(
                    id,
                    Operation::Data,
                    ErrorCode::TooLarge,
                    "response over the maximum message size",
                )
            }
            Err(e) => wire::error(id, Operation::Data, e.code, e.message),
        };
        let _ = wire::send(ctx, conn, &msg);
    }
}

impl Handler for DbService {
    type Message = Inbox;
    type Timer = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Inbox>) {
        self.watchers.add_loop(ctx.loop_id(), ctx.loop_handle());
    }

    fn on_data(&mut self, ctx: &mut Context<'_, Inbox>, conn: ConnId, data: &[u8]) -> usize {
        let max = self.max_message;
        wire::for_each_frame_body(ctx, conn, data, max, |ctx, body| {
            if let Ok(m) = MessageView::new(body) {
                // An uncompressed DATA request is read from the frame itself: a point read
                // in place, anything else decoded from the payload (no `Message` built).
                if m.r#type == MessageType::Request as i32
                    && m.op == Operation::Data as i32
                    && m.compression == Compression::None as i32
                {
                    if !self.read_in_place(ctx, conn, m.message_id, m.data) {
                        self.data(ctx, conn, m.message_id, m.data);
                    }
                    return;
                }
            }
            let msg = match wire::decode_body(body, max) {
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
                (Ok(MessageType::Request), Ok(Operation::Data)) => {
                    self.data(ctx, conn, msg.message_id, &msg.data)
                }
                (Ok(MessageType::Request), Ok(Operation::Watch)) => self.watch(ctx, conn, msg),
                _ => wire::reply_unsupported(ctx, conn, &msg),
            }
        })
    }

    fn on_pass_end(&mut self, _ctx: &mut Context<'_, Inbox>) {
        self.pool.flush(&mut self.pending);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Inbox>, msg: Inbox) {
        let reply = match msg {
            Inbox::Reply(r) => r,
            Inbox::Changed(changed) => return self.notify(ctx, &changed),
        };
        if let Some(n) = self.inflight.get_mut(reply.conn) {
            *n = n.saturating_sub(1);
        }
        let mut reply = reply;
        let spare = std::mem::take(&mut reply.spare);
        if spare.capacity() != 0
            && spare.capacity() <= SPARE_BYTES
            && self.spare.len() < SPARE_BUFFERS
        {
            self.spare.push(spare);
        }
        if let (Ok(resp), false) = (&reply.result, reply.changed.tables.is_empty()) {
            // Committed: subscribers hear of it before the writer hears back.
            let changed = Arc::new(TablesChanged {
                commit_index: resp.commit_index,
                ..reply.changed
            });
            self.watchers
                .broadcast(ctx.loop_id(), || Inbox::Changed(Arc::clone(&changed)));
            self.notify(ctx, &changed);
        }
        self.answer(ctx, reply.conn, reply.id, reply.result);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_, Inbox>,
        conn: ConnId,
        _reason: engine::CloseReason,
    ) {
        self.inflight.remove(conn);
        if self.subscriptions.remove(conn).is_some() {
            self.watchers.subscribed(false);
        }
    }

    fn is_busy(&self, conn: ConnId) -> bool {
        self.inflight.get(conn).is_some_and(|n| *n > 0)
    }
}

/// A user's session owner (see [`Limit::owner`]): never 0.
fn session_owner(user: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default()
        .hash_one(user)
        .max(1)
}
