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
//!
//! Here: the loop and the session table ([`Core`], what a `Context` acts on). Submodules:
//! `accept` (admission and refusal), `readiness` (connect, read, flush), `lifecycle` (timers,
//! deadlines, closes and the shutdown drain).

mod accept;
mod lifecycle;
mod readiness;

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
use crate::mailbox::Mailbox;
use crate::pool::BufferPool;
use crate::queue::{Flush, Priority, WriteQueue};
use crate::server::Shared;
use crate::session::{Route, Session, State};
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

/// How far past the bytes received a read buffer may grow for a message the handler waits for
/// ([`Context::wait_for`]): a peer that announces a large message without sending it makes the
/// server hold no more than this beyond what it sent.
const RESERVE_AHEAD: usize = 64 * 1024;

/// What a wheel entry stands for.
#[derive(Debug)]
pub(crate) enum Timer<T> {
    Session(ConnId),
    User(T),
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

/// One of the id lists a pass works through.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Batch {
    Ready,
    Dirty,
    Closing,
}

/// Everything of a loop except its handler, so that the handler can be given `&mut Core` (as a
/// [`Context`]) while being called.
pub(crate) struct Core<M, T> {
    pub(crate) loop_id: usize,
    pub(crate) registry: Registry,
    pub(crate) sessions: Slab<Session>,
    pub(crate) timers: TimerWheel<Timer<T>>,
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
    /// An empty list with capacity, swapped with `ready`, `dirty` or `closing` while one of
    /// them is worked through, so no pass allocates once the lists have grown.
    spare_ids: Vec<ConnId>,
    pub(crate) exit: bool,
    pub(crate) draining: bool,
    /// The drain check has not run since the shutdown began: poll without blocking.
    drain_unchecked: bool,
    drain_deadline: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An idle timeout as a session keeps it: whole ms, at least 1, at most `u32::MAX` (~49 days).
pub(crate) fn idle_ms(d: Duration) -> Option<std::num::NonZeroU32> {
    std::num::NonZeroU32::new(u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1))
}

impl<M, T> Core<M, T> {
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
        if matches!(s.state, State::Closing(_)) {
            return Err(SendError::Closed);
        }
        if s.queued().saturating_add(size_hint) > hard_cap {
            let peer = s.peer();
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
            State::Closing(_) => s.abort |= abort,
            State::Lingering => return,
            _ => {
                s.state = State::Closing(reason);
                s.abort = abort;
            }
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
        let tls = Tls::client(config, name, self.tick).map_err(io::Error::other)?;
        let id = self.connect(addr)?;
        self.sessions[id.key as usize].tls = Some(Box::new(tls));
        Ok(id)
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
        let gen = std::num::NonZeroU32::new(self.next_gen).unwrap_or(std::num::NonZeroU32::MIN);
        let mut s = Session::new(stream, gen, peer, state, self.tick);
        s.idle_timeout_ms = self.cfg.idle_timeout.and_then(idle_ms);
        entry.insert(s);
        let c = self.counters();
        bump(&c.connections_total, 1);
        bump(&c.connections_active, 1);
        let id = ConnId { key, gen };
        self.arm(id);
        Ok(id)
    }

    /// Takes the ids in `list` out for working through, leaving it empty but with the spare's
    /// capacity; give the batch back with [`Core::put_batch`].
    pub(crate) fn take_batch(&mut self, which: Batch) -> Vec<ConnId> {
        let spare = mem::take(&mut self.spare_ids);
        let list = match which {
            Batch::Ready => &mut self.ready,
            Batch::Dirty => &mut self.dirty,
            Batch::Closing => &mut self.closing,
        };
        mem::replace(list, spare)
    }

    /// Returns a worked-through batch's list as the spare (`take_batch` left none).
    pub(crate) fn put_batch(&mut self, mut batch: Vec<ConnId>) {
        batch.clear();
        self.spare_ids = batch;
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
            // While connecting, `last_read` is when the connection was opened.
            State::Connecting => consider(s.last_read.saturating_add(connect_ms)),
            State::Lingering => consider(s.last_read.saturating_add(LINGER_MS)),
            State::Open | State::Closing(_) => {
                if let (Some(idle), State::Open) = (s.idle_timeout_ms, &s.state) {
                    consider(s.last_read.saturating_add(u64::from(idle.get())));
                }
                if let (State::Open, Some(started)) = (&s.state, s.handshake_started()) {
                    consider(started.saturating_add(handshake_ms));
                }
                if let (Some(w), true) = (write_ms, s.queued() > 0) {
                    consider(s.last_write.saturating_add(w));
                }
            }
        }
        let Some(due) = due else {
            return;
        };
        if let Some(k) = s.timer {
            match self.timers.due(k) {
                Some(at) if at <= due => return,
                Some(_) => {
                    self.timers.cancel(k);
                }
                None => {}
            }
        }
        let k = self.timers.insert(due, Timer::Session(id));
        self.sessions[id.key as usize].timer = Some(k);
    }

    pub(crate) fn set_user_timer(&mut self, after: Duration, token: T) -> TimerKey {
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
        if let Some(k) = s.timer.take() {
            self.timers.cancel(k);
        }
        if !s.rbuf.is_empty() {
            self.pool.put_read(mem::take(&mut s.rbuf));
        }
        if matches!(s.route, Route::Listener(_)) {
            // Only accepted connections hold a place under the limit.
            self.shared.gate.release(s.peer_ip);
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
    core: Core<H::Message, H::Timer>,
    listeners: Vec<TcpListener>,
    /// TLS settings per listener (same index), `None` for plain ones.
    tls: Vec<Option<Arc<TlsListener>>>,
    accept_pending: Vec<usize>,
    /// Swapped with `accept_pending` while it is worked through (keeps both capacities).
    accepting: Vec<usize>,
    inbox: Vec<H::Message>,
    /// Timers fired in this pass (capacity kept between passes).
    fired: Vec<Timer<H::Timer>>,
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
                spare_ids: Vec::new(),
                exit: false,
                draining: false,
                drain_unchecked: false,
                drain_deadline: 0,
            },
            listeners,
            tls,
            accept_pending: Vec::new(),
            accepting: Vec::new(),
            inbox: Vec::new(),
            fired: Vec::new(),
            refusals: RefusalLog::default(),
        })
    }

    fn ctx(&mut self) -> (&mut H, Context<'_, H::Message, H::Timer>) {
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
            {
                let (h, mut ctx) = self.ctx();
                h.on_pass_end(&mut ctx);
            }
            // Messages and timers are how a busy handler finishes: re-check closes waiting on it.
            let core = &mut self.core;
            core.closing.append(&mut core.waiting_on_handler);
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
        self.core.mailbox.take(&mut self.inbox);
        let mut inbox = mem::take(&mut self.inbox);
        for msg in inbox.drain(..) {
            let (h, mut ctx) = self.ctx();
            h.on_message(&mut ctx, msg);
        }
        self.inbox = inbox;
    }
}
