//! A load generator on the engine itself (client side): N connections, each keeping D requests
//! in flight, matched to their answers by `message_id`, for a fixed time.
//!
//! What a request is comes from a [`Workload`]; [`PingWorkload`] is the first.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::{CloseReason, ConnId, ConnMap, Context, Handler, Server};
use hdrhistogram::Histogram;
use log::warn;

use protocol::wire::{self, Message, MessageType, Next, Operation, Ping};

/// What one load run sends and what counts as a good answer.
pub trait Workload: Send + Sync + 'static {
    /// Request number `id` (ids are per connection, in sending order).
    fn request(&self, id: u32) -> Message;
    /// True when `reply` is a successful answer.
    fn is_success(&self, reply: &Message) -> bool {
        reply.r#type() == MessageType::Response
    }
    /// A request sent first on every connection (e.g. authentication), answered before the
    /// load starts on it; not measured.
    fn handshake(&self) -> Option<Message> {
        None
    }
}

/// Ping requests with a fixed payload.
#[derive(Debug, Clone)]
pub struct PingWorkload {
    data: bytes::Bytes,
}

impl PingWorkload {
    /// Pings carrying `payload` bytes.
    pub fn new(payload: usize) -> Self {
        let ping = Ping {
            payload: vec![b'x'; payload].into(),
        };
        PingWorkload {
            data: prost::Message::encode_to_vec(&ping).into(),
        }
    }
}

impl Workload for PingWorkload {
    fn request(&self, id: u32) -> Message {
        Message {
            r#type: MessageType::Request as i32,
            message_id: id,
            data: self.data.clone(),
            op: Operation::Ping as i32,
            ..Message::default()
        }
    }
}

/// Shape of one run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections in all.
    pub conns: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// How long to send.
    pub duration: Duration,
    /// Loop threads of the generator.
    pub threads: usize,
    /// Close each connection after this many answers and open a new one (connect, requests,
    /// close cycles); `None`: connections live for the whole run.
    pub requests_per_conn: Option<u64>,
    /// TLS: the client config and the name the server's certificate must carry. `None`: plain.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Show a live progress line on standard error (elapsed, answers, rps so far, errors),
    /// rewritten in place each second and erased at the end. For a terminal only.
    pub progress: bool,
}

/// Answers and errors so far, published by each loop a few times a second for the progress
/// line (plain stores of the loop's own totals: nothing shared on the request path).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// How often loops publish their totals.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// What a loop's timers are for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tick {
    /// The end of the run.
    End,
    /// Publish the totals for the progress line.
    Publish,
}

impl LoadConfig {
    /// Opens one load connection on the loop (with TLS when the run uses it); a connect that
    /// fails at once is logged and counted in `report` as an error.
    pub(crate) fn dial(
        &self,
        ctx: &mut Context<'_, (), Tick>,
        report: &mut Report,
    ) -> Option<ConnId> {
        let dialed = match &self.tls {
            Some((config, name)) => ctx.connect_tls(self.addr, Arc::clone(config), name.clone()),
            None => ctx.connect(self.addr),
        };
        dialed
            .map_err(|e| {
                warn!("connect to {} failed: {e}", self.addr);
                report.errors += 1;
            })
            .ok()
    }

    /// One blocking client connection to the server (with TLS when the run uses it), for the
    /// set-up before a run.
    pub fn client(&self) -> Result<crate::client::FrameClient, crate::client::ClientError> {
        let timeout = Duration::from_secs(30);
        match &self.tls {
            Some((config, name)) => crate::client::FrameClient::connect_tls(
                self.addr,
                timeout,
                Arc::clone(config),
                name.clone(),
            ),
            None => Ok(crate::client::FrameClient::connect(self.addr, timeout)?),
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Successful answers.
    pub ok: u64,
    /// ERROR answers, unmatched answers, requests lost with a closed connection, failed connects.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of successful answers, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Connections open (and past their handshake, if any) when the run ended.
    pub open: u64,
    /// Connections closed after their share of requests (`LoadConfig::requests_per_conn`).
    pub cycles: u64,
}

impl Report {
    pub(crate) fn empty() -> Self {
        Report {
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            open: 0,
            cycles: 0,
        }
    }

    /// Counts a successful answer to a request sent at `sent` and answered at `now`.
    pub(crate) fn success(&mut self, sent: Instant, now: Instant) {
        self.ok += 1;
        let us = now.saturating_duration_since(sent).as_micros().max(1);
        let _ = self
            .latency_us
            .record(u64::try_from(us).unwrap_or(u64::MAX));
    }

    /// Successful answers per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64
    }

    /// The contract line other tools parse: `rps=<float> p50_us=<float> p99_us=<float> errors=<int>`.
    pub fn last_line(&self) -> String {
        format!(
            "rps={:.1} p50_us={:.1} p99_us={:.1} errors={}",
            self.rps(),
            self.quantile_us(0.50),
            self.quantile_us(0.99),
            self.errors
        )
    }
}

fn new_histogram() -> Histogram<u64> {
    // invariant: constant, valid bounds (1 µs to 60 s at 3 significant digits)
    let h = Histogram::new_with_bounds(1, 60_000_000, 3);
    h.expect("valid histogram bounds") // invariant: see above
}

#[derive(Debug, Default)]
struct LoadConn {
    next_id: u32,
    inflight: VecDeque<(u32, Instant)>,
    /// Waiting for the handshake's answer.
    handshaking: bool,
    /// Connected and past the handshake.
    ready: bool,
    /// Requests sent on this connection.
    sent: u64,
    /// Closed by us after its share of requests (`LoadConfig::requests_per_conn`).
    retired: bool,
}

/// The handshake's message id (load requests count from 1).
const HANDSHAKE_ID: u32 = 0;

struct LoadHandler<W: Workload> {
    cfg: LoadConfig,
    work: Arc<W>,
    conns: ConnMap<LoadConn>,
    report: Report,
    share: LoopShare,
}

impl<W: Workload> LoadHandler<W> {
    fn open(&mut self, ctx: &mut Context<'_, (), Tick>) {
        if let Some(c) = self.cfg.dial(ctx, &mut self.report) {
            self.conns.insert(c, LoadConn::default());
        }
    }

    fn send_one(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if self.cfg.requests_per_conn.is_some_and(|n| c.sent >= n) {
            if c.inflight.is_empty() {
                c.retired = true;
                ctx.close(conn);
            }
            return;
        }
        c.sent += 1;
        c.next_id = c.next_id.wrapping_add(1);
        let id = c.next_id;
        let msg = self.work.request(id);
        if wire::send(ctx, conn, &msg).is_ok() {
            c.inflight.push_back((id, ctx.now()));
        }
    }
}

impl<W: Workload> Handler for LoadHandler<W> {
    type Message = ();
    type Timer = Tick;

    fn on_start(&mut self, ctx: &mut Context<'_, (), Tick>) {
        for _ in 0..self.share.my_conns {
            self.open(ctx);
        }
        self.share.begin(ctx, self.cfg.duration);
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId) {
        if let Some(mut hello) = self.work.handshake() {
            hello.message_id = HANDSHAKE_ID;
            if let Some(c) = self.conns.get_mut(conn) {
                c.handshaking = true;
            }
            let _ = wire::send(ctx, conn, &hello);
            return;
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.ready = true;
        }
        for _ in 0..self.cfg.pipeline {
            self.send_one(ctx, conn);
        }
    }

    fn on_data(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId, data: &[u8]) -> usize {
        let mut used = 0;
        let now = ctx.now();
        loop {
            match wire::next_frame(&data[used..], engine::DEFAULT_MAX_MESSAGE) {
                Next::Frame(body, n) => {
                    used += n;
                    let Ok(mut reply) = wire::decode(body) else {
                        self.report.errors += 1;
                        continue;
                    };
                    if wire::decompress(&mut reply, engine::DEFAULT_MAX_MESSAGE).is_err() {
                        self.report.errors += 1;
                        continue;
                    }
                    if reply.r#type() == MessageType::Request && reply.op() == Operation::Ping {
                        // The server checking we are alive.
                        let _ = wire::send(ctx, conn, &wire::pong(reply));
                        continue;
                    }
                    let Some(c) = self.conns.get_mut(conn) else {
                        continue;
                    };
                    if c.handshaking && reply.message_id == HANDSHAKE_ID {
                        if reply.r#type() != MessageType::Response {
                            self.report.errors += 1;
                            if self.report.errors <= 3 {
                                warn!("handshake refused: {}", crate::client::server_error(&reply));
                            }
                            ctx.close(conn);
                            continue;
                        }
                        c.handshaking = false;
                        c.ready = true;
                        for _ in 0..self.cfg.pipeline {
                            self.send_one(ctx, conn);
                        }
                        continue;
                    }
                    let pos = c
                        .inflight
                        .iter()
                        .position(|(id, _)| *id == reply.message_id);
                    let Some((_, sent)) = pos.and_then(|p| c.inflight.remove(p)) else {
                        // A notification, or an answer to nothing we sent.
                        if reply.r#type() != MessageType::Notification {
                            self.report.errors += 1;
                        }
                        continue;
                    };
                    if self.work.is_success(&reply) {
                        self.report.success(sent, now);
                    } else {
                        self.report.errors += 1;
                        if self.report.errors <= 3 {
                            warn!("error reply: {}", crate::client::server_error(&reply));
                        }
                    }
                    if !self.share.stopping() {
                        self.send_one(ctx, conn);
                    }
                }
                Next::NeedMore => return used,
                Next::Fatal(_) => {
                    self.report.errors += 1;
                    ctx.abort(conn);
                    return data.len();
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, (), Tick>, tick: Tick) {
        let open = match tick {
            Tick::End => self
                .conns
                .iter()
                .filter(|(conn, c)| c.ready && ctx.is_open(*conn))
                .count() as u64,
            Tick::Publish => 0, // not used
        };
        self.share.on_tick(ctx, tick, &mut self.report, open);
    }

    fn on_close(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        if self.share.stopping() {
            return;
        }
        if c.retired {
            self.report.cycles += 1;
            self.open(ctx);
            return;
        }
        warn!("connection to {} closed: {reason}", self.cfg.addr);
        // A connection that never became usable (refused, or its TLS handshake failed) is an
        // error of its own; one lost later costs the requests it had in flight.
        let unusable = matches!(reason, CloseReason::ConnectFailed(_) | CloseReason::Tls(_));
        self.report.errors += c.inflight.len() as u64 + u64::from(unusable);
        self.open(ctx);
    }
}

/// What each loop of a run shares with the others and with [`run_loops`].
pub(crate) struct LoopShare {
    /// Connections this loop opens.
    pub my_conns: usize,
    /// Where the loop leaves its report when the run ends.
    pub results: Arc<Mutex<Vec<Report>>>,
    /// Its slot for the progress line, when one is shown.
    pub progress: Option<Arc<Progress>>,
    /// When this loop began.
    started: Instant,
    /// The run's time is up: answers are no longer followed by new requests.
    stopping: bool,
}

impl LoopShare {
    /// Starts the loop's clock and timers (the end of the run; publishing if a line is shown).
    pub fn begin(&mut self, ctx: &mut Context<'_, (), Tick>, duration: Duration) {
        self.started = ctx.now();
        ctx.set_timer(duration, Tick::End);
        if self.progress.is_some() {
            ctx.set_timer(PUBLISH_EVERY, Tick::Publish);
        }
    }

    /// True once the run's time is up.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// A timer fired: publishes `report`'s totals for the progress line, or at the end of the
    /// run hands the report in (with `open`, the connections still usable; read at the end
    /// only) and ends the loop.
    pub fn on_tick(
        &mut self,
        ctx: &mut Context<'_, (), Tick>,
        tick: Tick,
        report: &mut Report,
        open: u64,
    ) {
        match tick {
            Tick::Publish if !self.stopping => {
                if let Some(p) = &self.progress {
                    p.ok.store(report.ok, Ordering::Relaxed);
                    p.errors.store(report.errors, Ordering::Relaxed);
                    ctx.set_timer(PUBLISH_EVERY, Tick::Publish);
                }
            }
            Tick::Publish => {}
            Tick::End => {
                self.stopping = true;
                let mut done = std::mem::replace(report, Report::empty());
                done.elapsed = ctx.now().saturating_duration_since(self.started);
                done.open = open;
                if let Ok(mut r) = self.results.lock() {
                    r.push(done);
                }
                ctx.exit();
            }
        }
    }
}

/// Runs one load of `cfg.conns` connections on loops made by `make` (given the loop's index and
/// its share), with the progress line when asked, and sums what every loop measured.
pub(crate) fn run_loops<H, F>(cfg: &LoadConfig, make: F) -> std::io::Result<Report>
where
    H: Handler<Message = (), Timer = Tick>,
    F: Fn(usize, LoopShare) -> H + Send + Sync + 'static,
{
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let engine_cfg = engine::Config {
        threads,
        // Client sockets keep the kernel's buffer auto-tuning.
        socket: engine::SocketOptions {
            recv_buffer: None,
            send_buffer: None,
            ..engine::SocketOptions::default()
        },
        ..engine::Config::default()
    };
    let server: Server<H> = Server::new(engine_cfg)?;
    let results = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&results);
    let slots: Vec<Arc<Progress>> = (0..threads).map(|_| Arc::default()).collect();
    let line = cfg
        .progress
        .then(|| ProgressLine::start(slots.clone(), cfg.duration));
    let (conns, progress) = (cfg.conns, cfg.progress);
    let run = server.run(move |i| {
        make(
            i,
            LoopShare {
                my_conns: conns / threads + usize::from(i < conns % threads),
                results: Arc::clone(&shared),
                progress: progress.then(|| Arc::clone(&slots[i])),
                started: Instant::now(),
                stopping: false,
            },
        )
    });
    drop(line); // erased before the report is printed
    run?;
    let mut total = Report::empty();
    let parts = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    for r in parts {
        total.ok += r.ok;
        total.errors += r.errors;
        total.elapsed = total.elapsed.max(r.elapsed);
        total.open += r.open;
        total.cycles += r.cycles;
        let _ = total.latency_us.add(&r.latency_us);
    }
    Ok(total)
}

/// Runs one load of frames and sums what every loop measured.
pub fn run<W: Workload>(cfg: LoadConfig, work: W) -> std::io::Result<Report> {
    let work = Arc::new(work);
    let c = cfg.clone();
    run_loops(&cfg, move |_, share| LoadHandler {
        cfg: c.clone(),
        work: Arc::clone(&work),
        conns: ConnMap::default(),
        report: Report::empty(),
        share,
    })
}

/// The live progress line: a thread that rewrites one line of standard error each second until
/// dropped, then erases it.
struct ProgressLine {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    fn start(slots: Vec<Arc<Progress>>, duration: Duration) -> ProgressLine {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let (lock, cv) = &*s;
            let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*done {
                done = cv
                    .wait_timeout(done, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if *done {
                    break;
                }
                let ok: u64 = slots.iter().map(|p| p.ok.load(Ordering::Relaxed)).sum();
                let errors: u64 = slots.iter().map(|p| p.errors.load(Ordering::Relaxed)).sum();
                let t = started.elapsed().as_secs_f64();
                eprint!(
                    "\r\x1b[K{t:.0}/{} s  {ok} answers  {:.0} rps so far  {errors} errors",
                    duration.as_secs_f64(),
                    ok as f64 / t.max(1e-9),
                );
            }
            eprint!("\r\x1b[K");
        });
        ProgressLine {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `loadgen db` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbMode {
    /// Point reads by primary key.
    Read,
    /// Single-row durable inserts.
    Write,
    /// 90 % reads, 10 % writes.
    Mixed,
}

/// What `loadgen frames` sends through test-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOp {
    /// Ping (answered by test-server itself).
    Ping,
    /// Read a document (a point read through test-server to db-server).
    Get,
    /// Replace a document (a durable write through test-server to db-server).
    Put,
}

/// Authenticated requests to test-server: every connection presents a token first.
#[derive(Debug)]
pub struct FramesWorkload {
    op: FrameOp,
    token: String,
    docs: u64,
    counter: std::sync::atomic::AtomicU64,
}

impl FramesWorkload {
    /// Logs in as `user` and, for `get` and `put`, stores documents `bench-0` … `bench-<docs-1>`
    /// (over one blocking connection), so a run can start from an empty database.
    pub fn prepare(
        load: &LoadConfig,
        op: FrameOp,
        user: &str,
        secret: &str,
        docs: u64,
    ) -> Result<Self, crate::client::ClientError> {
        use protocol::proto::Value;
        let mut c = load.client()?;
        let token = c.login(user, secret)?.token;
        if op != FrameOp::Ping {
            for i in 0..docs {
                c.execute(
                    "INSERT INTO docs (name, content, updated) VALUES (?1, ?2, 0) \
                     ON CONFLICT (name) DO NOTHING",
                    vec![
                        Value::text(format!("bench-{i}")),
                        Value::text(format!("document {i} of the frames benchmark")),
                    ],
                )?;
            }
        }
        Ok(FramesWorkload {
            op,
            token,
            docs: docs.max(1),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn next(&self) -> u64 {
        let z = self
            .counter
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    }
}

impl Workload for FramesWorkload {
    fn request(&self, id: u32) -> Message {
        use protocol::proto::{data_request, DataRequest, Statement, Value};
        let name = || Value::text(format!("bench-{}", self.next() % self.docs));
        let (sql, args) = match self.op {
            FrameOp::Ping => {
                return wire::message(MessageType::Request, Operation::Ping, id, &Ping::default())
            }
            FrameOp::Get => ("SELECT content FROM docs WHERE name = ?1", vec![name()]),
            FrameOp::Put => (
                "UPDATE docs SET content = ?2, updated = ?3 WHERE name = ?1",
                vec![
                    name(),
                    Value::text(format!("v{id}")),
                    Value::int(i64::from(id)),
                ],
            ),
        };
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                sql: sql.into(),
                args,
                named_args: Vec::new(),
            })),
            ..DataRequest::default()
        };
        wire::message(MessageType::Request, Operation::Data, id, &req)
    }

    fn handshake(&self) -> Option<Message> {
        Some(wire::message(
            MessageType::Request,
            Operation::AuthToken,
            0,
            &wire::AuthToken {
                token: self.token.clone(),
                expires_at: 0,
            },
        ))
    }
}

/// SQL requests against db-server's `loadgen_kv` table.
#[derive(Debug)]
pub struct DbWorkload {
    mode: DbMode,
    rows: u64,
    counter: std::sync::atomic::AtomicU64,
}

/// The table `loadgen db` works on.
pub const DB_TABLE: &str = "loadgen_kv";

impl DbWorkload {
    /// Creates `loadgen_kv` if missing and seeds it to at least `rows` rows (ids 1..=rows), over
    /// one blocking connection, so a run can start from an empty database.
    pub fn prepare(
        load: &LoadConfig,
        mode: DbMode,
        rows: u64,
    ) -> Result<Self, crate::client::ClientError> {
        use protocol::proto::Value;
        let mut c = load.client()?;
        let rows_arg = vec![Value::int(i64::try_from(rows).unwrap_or(i64::MAX))];
        // The same table on either backend: ids given for the seed, made by the database for
        // the writes. `sqlite_version()` exists on SQLite only.
        if c.execute("SELECT sqlite_version()", vec![]).is_ok() {
            c.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {DB_TABLE} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
                ),
                vec![],
            )?;
            c.execute(
                &format!(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
                     INSERT OR IGNORE INTO {DB_TABLE} (id, v) SELECT x, 'seed-' || x FROM n"
                ),
                rows_arg,
            )?;
        } else {
            c.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {DB_TABLE} \
                     (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v TEXT NOT NULL)"
                ),
                vec![],
            )?;
            c.execute(
                &format!(
                    "INSERT INTO {DB_TABLE} (id, v) SELECT g, 'seed-' || g \
                     FROM generate_series(1, ?1) g ON CONFLICT (id) DO NOTHING"
                ),
                rows_arg,
            )?;
            // Writes after the seed must not collide with the seeded ids.
            c.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{DB_TABLE}', 'id'), \
                     (SELECT max(id) FROM {DB_TABLE}))"
                ),
                vec![],
            )?;
        }
        Ok(DbWorkload {
            mode,
            rows: rows.max(1),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn next(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, well spread, no locking.
        let mut z = self
            .counter
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Workload for DbWorkload {
    fn request(&self, id: u32) -> Message {
        use protocol::proto::{data_request, DataRequest, Statement, Value};
        let r = self.next();
        let write = match self.mode {
            DbMode::Read => false,
            DbMode::Write => true,
            DbMode::Mixed => r % 10 == 0,
        };
        let (sql, arg) = if write {
            (
                format!("INSERT INTO {DB_TABLE} (v) VALUES (?1)"),
                Value::text(format!("w{r:x}")),
            )
        } else {
            let key = (r >> 8) % self.rows + 1;
            (
                format!("SELECT v FROM {DB_TABLE} WHERE id = ?1"),
                Value::int(i64::try_from(key).unwrap_or(1)),
            )
        };
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                sql,
                args: vec![arg],
                named_args: Vec::new(),
            })),
            ..DataRequest::default()
        };
        wire::message(MessageType::Request, Operation::Data, id, &req)
    }
}
