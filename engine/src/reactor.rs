//! The event loop: one `mio::Poll`, its listeners, and its sessions in a slab.
//!
//! Each pass: poll; dispatch events (accept, connect, read, write); continue sessions that
//! still had input when their per-event read budget ran out; fire due timers; flush every session
//! that got output this pass (one `writev` each, as Redis flushes before sleeping); finish closing
//! sessions; and while shutting down, close sessions as they go quiet.
//!
//! Registration is edge-triggered for both directions, once, at open: a socket's `readable` flag
//! remembers an edge we have not read to `WouldBlock` yet (paused by backpressure, or out of
//! budget), so work resumes without waiting for another edge that would never come.

use std::io::{self, Read, Write};
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::config::Config;
use crate::context::Context;
use crate::handler::{CloseReason, ConnId, Handler};
use crate::pool::BufferPool;
use crate::queue::{Flush, Priority, WriteQueue};
use crate::server::{Mailbox, Shared};
use crate::session::{Session, State};
use crate::socket;
use crate::stats::{bump, Counters, ErrorKind};
use crate::timer::{TimerKey, TimerWheel};
use crate::tls::{Tls, TlsListener, TlsRead};

pub(crate) const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1;
/// Reads of one session per pass before others get their turn (16 × 8 KiB).
const READS_PER_PASS: usize = 16;
/// Accepts per listener per pass.
const ACCEPTS_PER_PASS: usize = 256;
/// How long a closed session's read side drains before the socket is dropped.
const LINGER_MS: u64 = 2000;
/// Room beyond the maximum message size for a frame header or request line.
const READ_SLACK: usize = 1024;

/// What a wheel entry stands for.
#[derive(Debug)]
pub(crate) enum Timer {
    Session(ConnId),
    User(u64),
}

/// Why `send` refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// Queued output would pass the hard cap; the connection is being closed.
    #[error("output queue over its hard cap; connection closed")]
    Overflow,
}

/// Everything of a loop except its handler, so that the handler can be given `&mut Core` (as a
/// [`Context`]) while being called.
pub(crate) struct Core<M> {
    pub(crate) loop_id: usize,
    pub(crate) registry: Registry,
    pub(crate) sessions: Slab<Session>,
    pub(crate) timers: TimerWheel<Timer>,
    pub(crate) pool: BufferPool,
    /// Sessions hold `Option<Box<WriteQueue>>` (8 bytes when idle); spares are those same boxes.
    #[allow(clippy::vec_box)]
    spare_queues: Vec<Box<WriteQueue>>,
    pub(crate) cfg: Arc<Config>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) mailbox: Arc<Mailbox<M>>,
    epoch: Instant,
    pub(crate) now: Instant,
    pub(crate) tick: u64,
    next_gen: u32,
    dirty: Vec<ConnId>,
    ready: Vec<ConnId>,
    closing: Vec<ConnId>,
    /// Graceful closes waiting for the handler to stop being busy: re-checked after each batch
    /// of messages and timers, which is how a busy handler's work completes.
    waiting_on_handler: Vec<ConnId>,
    pub(crate) exit: bool,
    pub(crate) draining: bool,
    /// The drain check has not run since the shutdown began: poll without blocking.
    drain_unchecked: bool,
    drain_deadline: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<M> Core<M> {
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.stats.loops[self.loop_id]
    }

    /// The live session `id` names, if it still exists.
    pub(crate) fn session(&self, id: ConnId) -> Option<&Session> {
        self.sessions
            .get(id.key as usize)
            .filter(|s| s.gen == id.gen && s.is_live())
    }

    pub(crate) fn session_mut(&mut self, id: ConnId) -> Option<&mut Session> {
        self.sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen && s.is_live())
    }

    fn update_now(&mut self) {
        self.now = Instant::now();
        self.tick = ms(self.now.duration_since(self.epoch));
    }

    pub(crate) fn tick_after(&self, d: Duration) -> u64 {
        self.tick.saturating_add(ms(d))
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.sessions.get_mut(id.key as usize) {
            if !s.in_dirty {
                s.in_dirty = true;
                self.dirty.push(id);
            }
        }
    }

    pub(crate) fn mark_ready(&mut self, id: ConnId) {
        if let Some(s) = self.sessions.get_mut(id.key as usize) {
            if !s.in_ready {
                s.in_ready = true;
                self.ready.push(id);
            }
        }
    }

    /// Queues one message; see [`Context::send_with`].
    pub(crate) fn send_with<R>(
        &mut self,
        id: ConnId,
        prio: Priority,
        size_hint: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, SendError> {
        let hard_cap = self.cfg.write_hard_cap;
        let high = self.cfg.write_high_water;
        let Some(s) = self.session_mut(id) else {
            return Err(SendError::Closed);
        };
        if matches!(s.state, State::Closing { .. }) {
            return Err(SendError::Closed);
        }
        if s.queued().saturating_add(size_hint) > hard_cap {
            let peer = s.peer;
            warn!(
                "Closing {peer}: {} bytes of output queued, over the hard cap of {hard_cap}",
                s.queued() + size_hint
            );
            self.counters().error(ErrorKind::Overflow);
            self.begin_close(id, CloseReason::Overflow, true);
            return Err(SendError::Overflow);
        }
        let Core {
            sessions,
            spare_queues,
            pool,
            ..
        } = self;
        let s = &mut sessions[id.key as usize];
        let wq =
            s.wq.get_or_insert_with(|| spare_queues.pop().unwrap_or_default());
        let r = wq.push_with(prio, size_hint, pool, fill);
        s.stats.messages_out += 1;
        if wq.len() > high {
            s.backpressure = true;
        }
        bump(&self.counters().messages_out, 1);
        self.mark_dirty(id);
        Ok(r)
    }

    /// Starts closing `id`: gracefully (after its output is written and the handler is not busy)
    /// or, with `abort`, at the end of this pass.
    pub(crate) fn begin_close(&mut self, id: ConnId, reason: CloseReason, abort: bool) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        match &mut s.state {
            State::Closing { abort: a, .. } => *a |= abort,
            State::Lingering => return,
            _ => s.state = State::Closing { reason, abort },
        }
        self.closing.push(id);
    }

    /// Opens an outbound connection; see [`Context::connect`].
    /// Outbound connections are not counted against the connection limit, which is about
    /// clients: the server opens few of them, from the descriptors the limit keeps in reserve.
    pub(crate) fn connect(&mut self, addr: SocketAddr) -> io::Result<ConnId> {
        let stream = match socket::connect(addr, &self.cfg.socket) {
            Ok(s) => s,
            Err(e) => {
                self.counters().error(ErrorKind::Connect);
                return Err(e);
            }
        };
        self.insert(stream, addr, State::Connecting)
    }

    /// Opens an outbound TLS connection; see [`Context::connect_tls`].
    #[cfg(feature = "tls")]
    pub(crate) fn connect_tls(
        &mut self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<ConnId> {
        let tls = Tls::client(config, name).map_err(io::Error::other)?;
        let id = self.connect(addr)?;
        self.sessions[id.key as usize].tls = Some(Box::new(tls));
        Ok(id)
    }

    /// Makes room in the session's read buffer for at least one byte: takes a pooled buffer,
    /// compacts, or grows it up to the maximum message size. False when the peer sent more than
    /// that without it being consumed (the session is then being closed).
    fn read_room(&mut self, id: ConnId) -> bool {
        let limit = self.cfg.max_message_size + READ_SLACK;
        let s = &mut self.sessions[id.key as usize];
        if s.rbuf.is_empty() {
            s.rbuf = self.pool.take_read();
            s.rstart = 0;
            s.rend = 0;
        }
        if s.rend == s.rbuf.len() {
            if s.rstart > 0 {
                s.rbuf.copy_within(s.rstart..s.rend, 0);
                s.rend -= s.rstart;
                s.rstart = 0;
            } else if s.rbuf.len() < limit {
                let n = (s.rbuf.len() * 2).min(limit);
                s.rbuf.resize(n, 0);
            } else {
                warn!(
                    "Closing {}: message over {} bytes",
                    s.peer, self.cfg.max_message_size
                );
                self.counters().error(ErrorKind::TooLarge);
                self.begin_close(id, CloseReason::TooLarge, true);
                return false;
            }
        }
        true
    }

    /// Registers a stream and puts a session for it in the slab.
    fn insert(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        state: State,
    ) -> io::Result<ConnId> {
        let entry = self.sessions.vacant_entry();
        // Keys stay under 2^31 so that `ConnId::to_u64` keeps its top bit free.
        let key = u32::try_from(entry.key())
            .ok()
            .filter(|k| *k < 1 << 31)
            .ok_or_else(|| io::Error::other("too many sessions"))?;
        self.registry.register(
            &mut stream,
            Token(key as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let mut s = Session::new(stream, gen, peer, state, self.tick);
        s.idle_timeout_ms = self.cfg.idle_timeout.map(ms);
        entry.insert(s);
        let c = self.counters();
        bump(&c.connections_total, 1);
        bump(&c.connections_active, 1);
        let id = ConnId { key, gen };
        self.arm(id);
        Ok(id)
    }

    /// Makes sure the session's deadline check fires no later than its nearest deadline.
    pub(crate) fn arm(&mut self, id: ConnId) {
        let (connect_ms, write_ms) = (ms(self.cfg.connect_timeout), self.cfg.write_timeout.map(ms));
        let handshake_ms = ms(self.cfg.tls_handshake_timeout);
        let Some(s) = self
            .sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
        else {
            return;
        };
        let mut due: Option<u64> = None;
        let mut consider = |d: u64| due = Some(due.map_or(d, |x: u64| x.min(d)));
        match s.state {
            State::Connecting => consider(s.created.saturating_add(connect_ms)),
            State::Lingering => consider(s.last_read.saturating_add(LINGER_MS)),
            State::Open | State::Closing { .. } => {
                if let (Some(idle), State::Open) = (s.idle_timeout_ms, &s.state) {
                    consider(s.last_read.saturating_add(idle));
                }
                if s.state == State::Open && s.handshaking() {
                    consider(s.created.saturating_add(handshake_ms));
                }
                if let (Some(w), true) = (write_ms, s.queued() > 0) {
                    consider(s.last_write.saturating_add(w));
                }
            }
        }
        let Some(due) = due else {
            return;
        };
        if let Some((_, at)) = s.timer {
            if at <= due {
                return;
            }
        }
        if let Some((k, _)) = s.timer.take() {
            self.timers.cancel(k);
        }
        let k = self.timers.insert(due, Timer::Session(id));
        self.sessions[id.key as usize].timer = Some((k, due));
    }

    pub(crate) fn set_user_timer(&mut self, after: Duration, token: u64) -> TimerKey {
        let due = self.tick_after(after);
        self.timers.insert(due, Timer::User(token))
    }

    /// Frees the slab slot and the socket. The handler has already been told, or never knew.
    fn release(&mut self, key: usize) {
        self.return_queue(key);
        let Some(mut s) = self.sessions.try_remove(key) else {
            return;
        };
        let _ = self.registry.deregister(&mut s.stream);
        if let Some((k, _)) = s.timer.take() {
            self.timers.cancel(k);
        }
        if !s.rbuf.is_empty() {
            self.pool.put_read(mem::take(&mut s.rbuf));
        }
        if s.listener.is_some() {
            // Only accepted connections hold a place under the limit.
            self.shared.gate.release();
        }
        let c = &self.shared.stats.loops[self.loop_id];
        bump(&c.connections_active, u64::MAX); // wrapping: minus one
    }

    /// Takes the session's output queue back into the spares, emptied.
    fn return_queue(&mut self, key: usize) {
        let Some(mut q) = self.sessions.get_mut(key).and_then(|s| s.wq.take()) else {
            return;
        };
        q.clear(&mut self.pool);
        if self.spare_queues.len() < self.cfg.pooled_buffers {
            self.spare_queues.push(q);
        }
    }
}

/// One loop: its poll, handler, listeners and core.
pub(crate) struct Loop<H: Handler> {
    poll: Poll,
    handler: H,
    core: Core<H::Message>,
    listeners: Vec<TcpListener>,
    /// TLS settings per listener (same index), `None` for plain ones.
    tls: Vec<Option<Arc<TlsListener>>>,
    accept_pending: Vec<usize>,
    inbox: Vec<H::Message>,
    refusals: RefusalLog,
}

/// Logs refused connections at most once a second per loop, counting the rest.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl<H: Handler> Loop<H> {
    #[allow(clippy::too_many_arguments)] // crate-private; each part comes from `Server::run`
    pub(crate) fn new(
        loop_id: usize,
        poll: Poll,
        handler: H,
        listeners: Vec<TcpListener>,
        tls: Vec<Option<Arc<TlsListener>>>,
        cfg: Arc<Config>,
        shared: Arc<Shared>,
        mailbox: Arc<Mailbox<H::Message>>,
    ) -> io::Result<Self> {
        let registry = poll.registry().try_clone()?;
        let now = Instant::now();
        Ok(Loop {
            poll,
            handler,
            core: Core {
                loop_id,
                registry,
                sessions: Slab::with_capacity(64),
                timers: TimerWheel::new(),
                pool: BufferPool::new(cfg.pooled_buffers),
                spare_queues: Vec::new(),
                cfg,
                shared,
                mailbox,
                epoch: now,
                now,
                tick: 0,
                next_gen: 0,
                dirty: Vec::new(),
                ready: Vec::new(),
                closing: Vec::new(),
                waiting_on_handler: Vec::new(),
                exit: false,
                draining: false,
                drain_unchecked: false,
                drain_deadline: 0,
            },
            listeners,
            tls,
            accept_pending: Vec::new(),
            inbox: Vec::new(),
            refusals: RefusalLog::default(),
        })
    }

    fn ctx(&mut self) -> (&mut H, Context<'_, H::Message>) {
        (
            &mut self.handler,
            Context {
                core: &mut self.core,
            },
        )
    }

    /// Runs until the server stops, this loop exits, or a graceful shutdown has drained.
    pub(crate) fn run(mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            self.core
                .registry
                .register(l, Token(LISTENER_BASE - i), Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        {
            let (h, mut ctx) = self.ctx();
            h.on_start(&mut ctx);
        }
        self.finish_pass();
        loop {
            if self.core.shared.stop.load(Ordering::Acquire) || self.core.exit {
                break;
            }
            if self.core.shared.shutdown.load(Ordering::Acquire) && !self.core.draining {
                // Quiet sessions are closed only at the end of a pass, after this pass's poll
                // has read whatever peers sent before the shutdown began.
                self.begin_drain();
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.close_all();
                    return Err(e);
                }
            }
            self.core.update_now();
            for ev in events.iter() {
                let token = ev.token();
                if token == WAKER {
                    self.drain_mailbox();
                } else if token.0 > LISTENER_BASE - self.listeners.len() {
                    self.accept(LISTENER_BASE - token.0);
                } else {
                    let hup = ev.is_read_closed() || ev.is_error();
                    let readable = ev.is_readable() || hup;
                    let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                    self.session_event(token.0, readable, writable, hup);
                }
            }
            self.run_ready();
            self.run_timers();
            // Messages and timers are how a busy handler finishes: re-check closes waiting on it.
            let waiting = mem::take(&mut self.core.waiting_on_handler);
            self.core.closing.extend(waiting);
            self.finish_pass();
            if self.core.draining && self.drain_step() {
                break;
            }
        }
        self.close_all();
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let c = &self.core;
        if !c.ready.is_empty()
            || !self.accept_pending.is_empty()
            || !c.dirty.is_empty()
            || !c.closing.is_empty()
            || c.drain_unchecked
        {
            return Some(Duration::ZERO);
        }
        let mut wait = c.timers.next_wait();
        if c.draining {
            let left = c.drain_deadline.saturating_sub(c.tick);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        wait.map(Duration::from_millis)
    }

    fn drain_mailbox(&mut self) {
        {
            let mut q = match self.core.mailbox.queue.lock() {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
            mem::swap(&mut *q, &mut self.inbox);
        }
        let mut inbox = mem::take(&mut self.inbox);
        for msg in inbox.drain(..) {
            let (h, mut ctx) = self.ctx();
            h.on_message(&mut ctx, msg);
        }
        self.inbox = inbox;
    }

    fn accept(&mut self, li: usize) {
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = self.listeners.get(li) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, li),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: the next connection's edge retries.
                    self.core.counters().error(ErrorKind::Accept);
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
        if !self.accept_pending.contains(&li) {
            self.accept_pending.push(li);
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, li: usize) {
        let shared = Arc::clone(&self.core.shared);
        if !shared.gate.try_acquire() {
            self.core.counters().error(ErrorKind::RefusedLimit);
            let max = shared.gate.max();
            let cfg = Arc::clone(&self.core.cfg);
            self.refuse(
                stream,
                peer,
                &cfg.refuse_message,
                &format!("connection limit of {max} reached"),
            );
            return;
        }
        if let Some(rl) = &shared.rate {
            if !rl.allow(peer.ip(), self.core.now) {
                shared.gate.release();
                self.core.counters().error(ErrorKind::RefusedRate);
                let cfg = Arc::clone(&self.core.cfg);
                self.refuse(
                    stream,
                    peer,
                    &cfg.rate_limited_message,
                    "per-IP connection rate limit",
                );
                return;
            }
        }
        if let Err(e) = socket::apply(&stream, &self.core.cfg.socket) {
            debug!("dropping {peer}: setting socket options failed: {e}");
            shared.gate.release();
            return;
        }
        let id = match self.core.insert(stream, peer, State::Open) {
            Ok(id) => id,
            Err(e) => {
                error!("dropping {peer}: cannot register: {e}");
                shared.gate.release();
                return;
            }
        };
        if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
            s.listener = u16::try_from(li).ok();
        }
        if let Some(Some(listener)) = self.tls.get(li) {
            match Tls::server(listener) {
                Ok(tls) => {
                    self.core.sessions[id.key as usize].tls = Some(Box::new(tls));
                    self.core.arm(id); // the handshake deadline
                }
                Err(e) => {
                    error!("dropping {peer}: cannot start TLS: {e}");
                    self.core.release(id.key as usize);
                    return;
                }
            }
        }
        let (h, mut ctx) = self.ctx();
        h.on_accept(&mut ctx, id, peer);
    }

    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, message: &[u8], why: &str) {
        if !message.is_empty() {
            let _ = (&stream).write(message);
        }
        drop(stream);
        let now = self.core.now;
        let log = &mut self.refusals;
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let more = mem::take(&mut log.suppressed);
            if more > 0 {
                warn!(
                    "Refused connection from {}: {why} ({more} more refused since the last line)",
                    peer.ip()
                );
            } else {
                warn!("Refused connection from {}: {why}", peer.ip());
            }
            log.last = Some(now);
        } else {
            log.suppressed += 1;
        }
    }

    fn session_event(&mut self, key: usize, readable: bool, writable: bool, hup: bool) {
        let Some(s) = self.core.sessions.get_mut(key) else {
            return;
        };
        let id = ConnId {
            key: key as u32,
            gen: s.gen,
        };
        if writable {
            if s.state == State::Connecting {
                self.finish_connect(id);
            } else if s.queued() > 0 {
                self.flush(id);
            }
        }
        if readable {
            if let Some(s) = self.core.sessions.get_mut(key) {
                s.readable = true;
                s.hup |= hup;
            }
            self.read(id);
        }
    }

    fn finish_connect(&mut self, id: ConnId) {
        let s = &mut self.core.sessions[id.key as usize];
        let failed = match s.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.kind()),
            Ok(None) => match s.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => Some(e.kind()),
            },
        };
        if let Some(kind) = failed {
            self.core.counters().error(ErrorKind::Connect);
            self.core
                .begin_close(id, CloseReason::ConnectFailed(kind), true);
            return;
        }
        s.state = State::Open;
        s.last_read = self.core.tick;
        s.last_write = self.core.tick;
        let tls = s.tls.is_some();
        self.core.arm(id);
        if tls {
            // The handler hears of it once the handshake is done (see `read_tls`); for now the
            // ClientHello goes out.
            self.flush(id);
            return;
        }
        {
            let (h, mut ctx) = self.ctx();
            h.on_connect(&mut ctx, id);
        }
        if self.core.session(id).is_some_and(|s| s.queued() > 0) {
            self.flush(id);
        }
    }

    /// Reads until `WouldBlock`, the pass budget, backpressure or a close, handing data to the
    /// handler after every read so pipelined input never needs a larger buffer.
    fn read(&mut self, id: ConnId) {
        let mut reads = 0;
        loop {
            let core = &mut self.core;
            let tick = core.tick;
            let Some(s) = core
                .sessions
                .get_mut(id.key as usize)
                .filter(|s| s.gen == id.gen)
            else {
                return;
            };
            if s.redeliver {
                // Resumed with input left over: offer it before reading more.
                s.redeliver = false;
                if s.may_read() && s.rstart < s.rend {
                    self.deliver(id);
                    continue;
                }
            }
            // TLS sessions read through rustls (a lingering one just discards, as below).
            if s.tls.is_some() && s.state == State::Open {
                return self.read_tls(id);
            }
            if !s.readable || !s.may_read() {
                return;
            }
            if reads == READS_PER_PASS {
                core.mark_ready(id);
                return;
            }
            if !core.read_room(id) {
                return;
            }
            let s = &mut core.sessions[id.key as usize];
            reads += 1;
            let space = s.rbuf.len() - s.rend;
            let lingering = s.state == State::Lingering;
            match (&s.stream).read(&mut s.rbuf[s.rend..]) {
                Ok(0) => {
                    s.readable = false;
                    s.read_closed = true;
                    if lingering {
                        core.release(id.key as usize);
                    } else {
                        if s.rstart < s.rend {
                            debug!(
                                "{} closed with {} unconsumed bytes",
                                s.peer,
                                s.rend - s.rstart
                            );
                        }
                        core.begin_close(id, CloseReason::PeerClosed, false);
                    }
                    return;
                }
                Ok(n) => {
                    if n < space && !s.hup {
                        // A short read drained the socket: new data will raise a new edge.
                        s.readable = false;
                    }
                    if lingering {
                        continue; // discard: nobody listens any more
                    }
                    s.rend += n;
                    s.stats.bytes_in += n as u64;
                    s.last_read = tick;
                    bump(&core.counters().bytes_in, n as u64);
                    self.deliver(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    s.readable = false;
                    s.read_closed = true;
                    if lingering {
                        core.release(id.key as usize);
                    } else {
                        debug!("read from {} failed: {e}", s.peer);
                        core.counters().error(ErrorKind::Io);
                        core.begin_close(id, CloseReason::Io(e.kind()), true);
                    }
                    return;
                }
            }
        }
    }

    /// The TLS form of [`Loop::read`]: socket bytes go through rustls, plaintext into the read
    /// buffer, each batch handed to the handler as it comes.
    fn read_tls(&mut self, id: ConnId) {
        let mut reads = 0;
        loop {
            let core = &mut self.core;
            let tick = core.tick;
            let Some(s) = core.session(id) else {
                return;
            };
            if !s.has_input() || !s.may_read() {
                return;
            }
            if reads == READS_PER_PASS {
                core.mark_ready(id);
                return;
            }
            if !core.read_room(id) {
                return;
            }
            let s = &mut core.sessions[id.key as usize];
            let Some(tls) = s.tls.as_mut() else {
                return;
            };
            let step = tls.read(&s.stream, &mut s.rbuf[s.rend..], s.readable);
            let wants_write = tls.wants_write();
            match step {
                TlsRead::Plain(n) => {
                    s.rend += n;
                    self.deliver(id);
                }
                TlsRead::Wire(n) => {
                    reads += 1;
                    s.stats.bytes_in += n as u64;
                    s.last_read = tick;
                    let connected = tls.connect_pending && !tls.conn.is_handshaking();
                    if connected {
                        tls.connect_pending = false;
                    }
                    let queued = s.queued() > 0;
                    bump(&core.counters().bytes_in, n as u64);
                    if wants_write || queued {
                        // Handshake messages to answer, or output that waited for the
                        // handshake to end.
                        core.mark_dirty(id);
                    }
                    if connected {
                        let (h, mut ctx) = self.ctx();
                        h.on_connect(&mut ctx, id);
                    }
                }
                TlsRead::WouldBlock => {
                    s.readable = false;
                    return;
                }
                TlsRead::Eof => {
                    s.readable = false;
                    s.read_closed = true;
                    core.begin_close(id, CloseReason::PeerClosed, false);
                    return;
                }
                TlsRead::NotTls(listener) => {
                    debug!("Closing {}: plain text on a TLS port", s.peer);
                    if !listener.plaintext_reply.is_empty() {
                        let _ = (&s.stream).write(&listener.plaintext_reply);
                    }
                    core.counters().error(ErrorKind::Tls);
                    let why = "plain text on a TLS port".to_string();
                    core.begin_close(id, CloseReason::Tls(why), true);
                    return;
                }
                TlsRead::Failed(why) => {
                    info!("Closing {}: TLS failed: {why}", s.peer);
                    let mut wire = 0;
                    let _ = tls.push(&s.stream, &mut wire); // the alert, best effort
                    core.counters().error(ErrorKind::Tls);
                    core.begin_close(id, CloseReason::Tls(why), true);
                    return;
                }
                TlsRead::Io(e) => {
                    s.readable = false;
                    s.read_closed = true;
                    debug!("read from {} failed: {e}", s.peer);
                    core.counters().error(ErrorKind::Io);
                    core.begin_close(id, CloseReason::Io(e.kind()), true);
                    return;
                }
            }
        }
    }

    /// Offers the unconsumed input to the handler and keeps what it leaves.
    fn deliver(&mut self, id: ConnId) {
        let s = &mut self.core.sessions[id.key as usize];
        let buf = mem::take(&mut s.rbuf);
        let (a, b) = (s.rstart, s.rend);
        let consumed = {
            let (h, mut ctx) = self.ctx();
            h.on_data(&mut ctx, id, &buf[a..b]).min(b - a)
        };
        // Removal from the slab is deferred to the end of the pass, so the session is still here.
        let s = &mut self.core.sessions[id.key as usize];
        s.rstart = a + consumed;
        if s.rstart == s.rend {
            s.rstart = 0;
            s.rend = 0;
            self.core.pool.put_read(buf);
        } else {
            s.rbuf = buf;
        }
    }

    fn flush(&mut self, id: ConnId) {
        let Core {
            sessions,
            pool,
            shared,
            loop_id,
            tick,
            cfg,
            ..
        } = &mut self.core;
        let Some(s) = sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
        else {
            return;
        };
        if matches!(s.state, State::Connecting | State::Lingering) {
            return;
        }
        let before = s.stats.bytes_out;
        let res = match (s.tls.as_mut(), s.wq.as_mut()) {
            (Some(tls), wq) => flush_tls(tls, &s.stream, wq, pool, &mut s.stats.bytes_out),
            (None, Some(wq)) => wq.flush(&mut &s.stream, pool, &mut s.stats.bytes_out),
            (None, None) => return,
        };
        let wrote = s.stats.bytes_out - before;
        if wrote > 0 {
            s.last_write = *tick;
            bump(&shared.stats.loops[*loop_id].bytes_out, wrote);
        }
        let queued = s.wq.as_ref().map_or(0, |q| q.len());
        let relieved = s.backpressure && queued <= cfg.write_low_water;
        if relieved {
            s.backpressure = false;
        }
        let closing = matches!(s.state, State::Closing { .. });
        let readable = s.has_input();
        match res {
            Ok(Flush::Done) => {
                self.core.return_queue(id.key as usize);
                if closing {
                    self.core.closing.push(id);
                }
            }
            Ok(Flush::Blocked) => self.core.arm(id),
            Err(e) => {
                debug!("write to {id:?} failed: {e}");
                self.core.counters().error(ErrorKind::Io);
                self.core.begin_close(id, CloseReason::Io(e.kind()), true);
                return;
            }
        }
        if relieved {
            if readable {
                self.core.mark_ready(id);
            }
            let (h, mut ctx) = self.ctx();
            h.on_drain(&mut ctx, id);
        }
    }

    fn run_ready(&mut self) {
        let ready = mem::take(&mut self.core.ready);
        for id in &ready {
            if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
                s.in_ready = false;
            }
        }
        for id in ready {
            self.read(id);
        }
        for li in mem::take(&mut self.accept_pending) {
            self.accept(li);
        }
    }

    fn run_timers(&mut self) {
        let mut fired = Vec::new();
        self.core.timers.expire(self.core.tick, &mut fired);
        for t in fired {
            match t {
                Timer::User(token) => {
                    let (h, mut ctx) = self.ctx();
                    h.on_timer(&mut ctx, token);
                }
                Timer::Session(id) => self.check_deadlines(id),
            }
        }
    }

    fn check_deadlines(&mut self, id: ConnId) {
        let core = &mut self.core;
        let tick = core.tick;
        let Some(s) = core
            .sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
        else {
            return;
        };
        s.timer = None;
        let write_stalled = core
            .cfg
            .write_timeout
            .is_some_and(|w| s.queued() > 0 && tick >= s.last_write.saturating_add(ms(w)));
        match s.state {
            State::Lingering => {
                if tick >= s.last_read.saturating_add(LINGER_MS) {
                    core.release(id.key as usize);
                    return;
                }
            }
            State::Connecting => {
                if tick >= s.created.saturating_add(ms(core.cfg.connect_timeout)) {
                    core.counters().error(ErrorKind::Connect);
                    core.begin_close(
                        id,
                        CloseReason::ConnectFailed(io::ErrorKind::TimedOut),
                        true,
                    );
                    return;
                }
            }
            State::Open | State::Closing { .. } if write_stalled => {
                info!("Closing {}: output stalled for the write timeout", s.peer);
                core.counters().error(ErrorKind::Timeout);
                core.begin_close(id, CloseReason::WriteTimeout, true);
                return;
            }
            State::Open
                if s.handshaking()
                    && tick >= s.created.saturating_add(ms(core.cfg.tls_handshake_timeout)) =>
            {
                debug!("Closing {}: TLS handshake timed out", s.peer);
                core.counters().error(ErrorKind::Tls);
                let why = "handshake timed out".to_string();
                core.begin_close(id, CloseReason::Tls(why), true);
                return;
            }
            State::Open => {
                if s.idle_timeout_ms
                    .is_some_and(|t| tick >= s.last_read.saturating_add(t))
                {
                    debug!("Closing {}: idle timeout", s.peer);
                    core.counters().error(ErrorKind::Timeout);
                    core.begin_close(id, CloseReason::IdleTimeout, false);
                    return;
                }
            }
            State::Closing { .. } => {}
        }
        core.arm(id);
    }

    /// Flushes what this pass queued and finishes closes, until nothing more is pending (closes
    /// can queue output elsewhere, e.g. a proxy answering a client when its backend dies).
    fn finish_pass(&mut self) {
        for _ in 0..4 {
            if self.core.dirty.is_empty() && self.core.closing.is_empty() {
                return;
            }
            let dirty = mem::take(&mut self.core.dirty);
            for id in dirty {
                if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
                    s.in_dirty = false;
                }
                self.flush(id);
            }
            let closing = mem::take(&mut self.core.closing);
            for id in closing {
                self.try_finish_close(id);
            }
        }
    }

    fn try_finish_close(&mut self, id: ConnId) {
        let Some(s) = self.core.session(id) else {
            return;
        };
        let State::Closing { reason, abort } = s.state.clone() else {
            return;
        };
        if !abort && s.queued() > 0 {
            return; // the final flush brings it back here
        }
        if !abort && self.handler.is_busy(id) {
            self.core.waiting_on_handler.push(id);
            return;
        }
        let s = &mut self.core.sessions[id.key as usize];
        s.state = State::Lingering;
        if let (Some(tls), false) = (s.tls.as_mut(), abort) {
            tls.close_notify(&s.stream);
        }
        let linger = !abort && !s.read_closed;
        {
            let (h, mut ctx) = self.ctx();
            h.on_close(&mut ctx, id, reason);
        }
        let key = id.key as usize;
        if !linger {
            self.core.release(key);
            return;
        }
        self.core.return_queue(key);
        let s = &mut self.core.sessions[key];
        let _ = s.stream.shutdown(std::net::Shutdown::Write);
        s.last_read = self.core.tick;
        let readable = s.readable;
        self.core.arm(id);
        if readable {
            self.core.mark_ready(id);
        }
    }

    fn begin_drain(&mut self) {
        self.core.draining = true;
        self.core.drain_unchecked = true;
        self.core.drain_deadline = self.core.tick_after(self.core.cfg.shutdown_grace);
        for mut l in self.listeners.drain(..) {
            let _ = self.core.registry.deregister(&mut l);
        }
        self.accept_pending.clear();
        info!(
            "Loop {} shutting down: {} connections to drain",
            self.core.loop_id,
            self.core.sessions.len()
        );
        {
            let (h, mut ctx) = self.ctx();
            h.on_shutdown(&mut ctx);
        }
        self.finish_pass();
    }

    /// Closes sessions that have gone quiet; true when the loop may exit.
    fn drain_step(&mut self) -> bool {
        self.core.drain_unchecked = false;
        if self.core.tick >= self.core.drain_deadline {
            warn!(
                "Loop {}: grace period over, closing {} connections",
                self.core.loop_id,
                self.core.sessions.len()
            );
            return true;
        }
        let quiet: Vec<ConnId> = self
            .core
            .sessions
            .iter()
            .filter(|(_, s)| s.state == State::Open && s.queued() == 0 && s.rstart == s.rend)
            .map(|(k, s)| ConnId {
                key: k as u32,
                gen: s.gen,
            })
            .filter(|id| !self.handler.is_busy(*id))
            .collect();
        for id in quiet {
            self.core.begin_close(id, CloseReason::Shutdown, false);
        }
        self.finish_pass();
        self.core.sessions.is_empty()
    }

    /// Ends every session (the loop is exiting).
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.core.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            let s = &mut self.core.sessions[key];
            let id = ConnId {
                key: key as u32,
                gen: s.gen,
            };
            if s.is_live() {
                let reason = match &s.state {
                    State::Closing { reason, .. } => reason.clone(),
                    _ => CloseReason::Shutdown,
                };
                s.state = State::Lingering;
                let (h, mut ctx) = self.ctx();
                h.on_close(&mut ctx, id, reason);
            }
            self.core.release(key);
        }
        self.core.mailbox.closed.store(true, Ordering::Release);
    }
}

/// Moves a TLS session's queued plaintext into rustls and its records to the socket.
fn flush_tls(
    tls: &mut Tls,
    stream: &TcpStream,
    wq: Option<&mut Box<WriteQueue>>,
    pool: &mut BufferPool,
    wire: &mut u64,
) -> io::Result<Flush> {
    if let Some(wq) = wq {
        let mut plain = 0;
        if wq.flush(&mut tls.writer(stream, wire), pool, &mut plain)? == Flush::Blocked {
            return Ok(Flush::Blocked);
        }
    }
    Ok(if tls.push(stream, wire)? {
        Flush::Done
    } else {
        Flush::Blocked
    })
}
