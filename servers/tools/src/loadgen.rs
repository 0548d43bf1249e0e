//! A load generator on the engine itself (client side): N connections, each keeping D requests
//! in flight, matched to their answers by `message_id`, for a fixed time.
//!
//! What a request is comes from a [`Workload`]; [`PingWorkload`] is the first.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{CloseReason, ConnId, ConnMap, Context, Handler};
use hdrhistogram::Histogram;
use log::warn;

use shared::wire::{self, Message, MessageType, Next, Operation};

mod loops;
mod progress;
mod workloads;

pub(crate) use loops::{run_loops, LoopShare, Tick};
pub use workloads::{DbMode, DbWorkload, FrameOp, FramesWorkload, PingWorkload};

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
                if report.errors < 3 {
                    warn!("connect to {} failed: {e}", self.addr);
                }
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
    /// Connections lost before the end of the run (refused, closed by the server, …).
    pub lost: u64,
    /// Why the last of them was lost.
    pub last_loss: String,
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
            lost: 0,
            last_loss: String::new(),
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
                        self.share.answered();
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
            Tick::Reopen => {
                if !self.share.stopping() {
                    self.open(ctx);
                }
                return;
            }
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
        // A connection that never became usable (refused, or its TLS handshake failed) is an
        // error of its own; one lost later costs the requests it had in flight.
        let unusable = matches!(reason, CloseReason::ConnectFailed(_) | CloseReason::Tls(_));
        self.report.errors += c.inflight.len() as u64 + u64::from(unusable);
        if self
            .share
            .lost(ctx, &mut self.report, self.cfg.addr, &reason)
        {
            self.open(ctx);
        }
    }
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
