//! What a handler may do while it is being called: send, close, connect, set timers.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::handler::ConnId;
use crate::mailbox::LoopHandle;
use crate::queue::Priority;
use crate::reactor::{Core, SendError};
use crate::server::ServerHandle;
use crate::session::Route;
use crate::session::State;
use crate::stats::{bump, ErrorKind, SessionStats};
use crate::timer::TimerKey;

/// A handle to one user timer, for [`Context::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(TimerKey);

/// The loop as seen from inside a [`crate::Handler`] callback.
///
/// Output is queued, never written in place: every connection with new output is flushed once
/// at the end of the loop pass (one `writev`), so a burst of pipelined replies costs one syscall.
///
/// `M` is the handler's [`crate::Handler::Message`], `T` its [`crate::Handler::Timer`] (`()`
/// for a handler with at most one kind of timer, so that the common case reads
/// `Context<'_, M>`).
pub struct Context<'a, M, T = ()> {
    pub(crate) core: &'a mut Core<M, T>,
}

impl<M, T> std::fmt::Debug for Context<'_, M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("loop_id", &self.core.loop_id)
            .field("sessions", &self.core.sessions.len())
            .finish()
    }
}

impl<M: Send + 'static, T> Context<'_, M, T> {
    /// This loop's index, `0..threads`.
    pub fn loop_id(&self) -> usize {
        self.core.loop_id
    }

    /// The time this loop pass started (cheaper than `Instant::now()` and the same for every
    /// callback of the pass).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Queues `data` as one NORMAL-priority message (bytes to the peer; a message to another
    /// loop goes through [`crate::LoopHandle::post`]). Costs: see [`Context::send_with`].
    ///
    /// # Errors
    ///
    /// As [`Context::send_with`]: [`SendError`] when `conn` is closed or closing, or its
    /// output is over the hard cap.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.send_with(conn, Priority::Normal, data.len(), |b| {
            b.extend_from_slice(data)
        })
    }

    /// Queues `data` as one message of the given priority.
    ///
    /// # Errors
    ///
    /// As [`Context::send_with`].
    pub fn send_priority(
        &mut self,
        conn: ConnId,
        prio: Priority,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.send_with(conn, prio, data.len(), |b| b.extend_from_slice(data))
    }

    /// Queues one message that `fill` appends straight into the output buffer (no intermediate
    /// copy). `size_hint` is its expected size.
    ///
    /// Cost: no allocation when the message fits the lane's tail chunk (messages append to
    /// pooled chunks of 9,999 bytes, or 512 when a small message finds the queue empty; one
    /// larger than a chunk gets a chunk of its own), and no system call: the connection's
    /// queue is written with one `writev` at the end of the loop pass, so the replies to a
    /// burst of pipelined requests leave together. Send each reply as it is made rather than
    /// gathering them yourself. A `fill` that appends nothing queues nothing to write (it is
    /// still counted as a message).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when the connection is closed or closing; [`SendError::Overflow`]
    /// when the queue would pass [`crate::Config::write_hard_cap`] — the connection is then
    /// aborted.
    pub fn send_with<R>(
        &mut self,
        conn: ConnId,
        prio: Priority,
        size_hint: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, SendError> {
        self.core.send_with(conn, prio, size_hint, fill)
    }

    /// Closes `conn` once its queued output is written and the handler is no longer busy with it.
    /// Calling it again re-checks those conditions.
    pub fn close(&mut self, conn: ConnId) {
        self.core
            .begin_close(conn, crate::CloseReason::Local, false);
    }

    /// Closes `conn` at the end of this pass, dropping its queued output.
    pub fn abort(&mut self, conn: ConnId) {
        self.core.begin_close(conn, crate::CloseReason::Local, true);
    }

    /// Opens a connection to `addr` on this loop. [`crate::Handler::on_connect`] follows when it
    /// is established; messages sent before then are queued and written at that point.
    ///
    /// # Errors
    ///
    /// The OS error when the socket cannot be made or the connect is refused at once (a
    /// connect that fails later arrives as [`crate::CloseReason::ConnectFailed`]).
    pub fn connect(&mut self, addr: SocketAddr) -> io::Result<ConnId> {
        self.core.connect(addr)
    }

    /// Opens a TLS connection to `addr`, verifying the server as `name` with `config` (build it
    /// with [`crate::tls::client_config_builder`]). The handler sees plaintext as with
    /// [`Context::connect`]; [`crate::Handler::on_connect`] comes once the handshake is done.
    /// A failed handshake (e.g. an untrusted certificate) closes the connection with
    /// [`crate::CloseReason::Tls`]. (Cargo feature `tls`, on by default.)
    ///
    /// # Errors
    ///
    /// As [`Context::connect`], and when rustls refuses `config` for `name`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<ConnId> {
        self.core.connect_tls(addr, config, name)
    }

    /// True when `conn` is a TLS connection.
    pub fn is_tls(&self, conn: ConnId) -> bool {
        self.core.session(conn).is_some_and(|s| s.tls.is_some())
    }

    /// Calls [`crate::Handler::on_timer`] with `timer` after `after` (1 ms resolution).
    pub fn set_timer(&mut self, after: Duration, timer: T) -> TimerId {
        TimerId(self.core.set_user_timer(after, timer))
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.timers.cancel(timer.0).is_some()
    }

    /// Sets (or, with `None`, removes) the idle timeout of one connection, replacing the
    /// configured default.
    pub fn set_idle_timeout(&mut self, conn: ConnId, timeout: Option<Duration>) {
        if let Some(s) = self.core.session_mut(conn) {
            s.idle_timeout_ms = timeout.and_then(crate::reactor::idle_ms);
            self.core.arm(conn);
        }
    }

    /// Asks for the next [`crate::Handler::on_data`] of `conn` only once at least `bytes`
    /// unconsumed bytes are buffered (counting what the current call leaves), as tokio-util's
    /// `Decoder` reserves: a handler that has read a header announcing a large message says so,
    /// and the message is parsed once, when its last byte is here, rather than on each of its
    /// pieces; the buffer grows toward it in as few steps as it can (never more than 64 KiB past
    /// what has arrived, so an announced size costs nothing until its bytes come). The hint
    /// holds for the next call only (each delivery clears it); a `bytes` over the connection's message limit
    /// ends as that limit does ([`crate::Handler::on_oversize`]).
    ///
    /// ```
    /// # use engine::{ConnId, Context};
    /// /// A 4-byte length prefix, then the body.
    /// fn on_data(ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
    ///     let mut used = 0;
    ///     while let Some(head) = data[used..].first_chunk::<4>() {
    ///         let len = 4 + u32::from_be_bytes(*head) as usize;
    ///         if data.len() - used < len {
    ///             ctx.wait_for(conn, len); // not called again before the body is whole
    ///             break;
    ///         }
    ///         let _ = ctx.send(conn, &data[used..used + len]); // echo the frame
    ///         used += len;
    ///     }
    ///     used
    /// }
    /// ```
    pub fn wait_for(&mut self, conn: ConnId, bytes: usize) {
        if let Some(s) = self.core.session_mut(conn) {
            s.want = u32::try_from(bytes).unwrap_or(u32::MAX);
        }
    }

    /// Replaces the configured [`crate::Config::max_message_size`] for one connection (e.g.
    /// larger after a login, smaller before it). Input over it that the handler has not
    /// consumed ends the connection after [`crate::Handler::on_oversize`]. One read (8 KiB) is
    /// always taken whatever the limit, so a limit under that acts at the next read's end.
    pub fn set_max_message(&mut self, conn: ConnId, bytes: usize) {
        if let Some(s) = self.core.session_mut(conn) {
            let capped = bytes.clamp(1, u32::MAX as usize - 64 * 1024);
            s.max_message = std::num::NonZeroU32::new(capped as u32);
        }
    }

    /// Stops reading from `conn` (its input stays in the kernel, so TCP flow control pushes back
    /// on the sender) until [`Context::resume_reading`].
    pub fn pause_reading(&mut self, conn: ConnId) {
        if let Some(s) = self.core.session_mut(conn) {
            s.user_paused = true;
        }
    }

    /// Resumes reading after [`Context::pause_reading`]. Input the handler left unconsumed is
    /// offered again to [`crate::Handler::on_data`] in this pass, even if nothing new arrives
    /// (a handler that waits on other work before taking the next request relies on this).
    pub fn resume_reading(&mut self, conn: ConnId) {
        if let Some(s) = self.core.session_mut(conn) {
            s.user_paused = false;
            s.want = 0;
            s.redeliver = s.rstart < s.rend;
            if s.has_input() || s.redeliver {
                self.core.mark_ready(conn);
            }
        }
    }

    /// The peer's address; still known inside [`crate::Handler::on_close`] (for its log line).
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core
            .sessions
            .get(conn.key as usize)
            .filter(|s| s.gen == conn.gen)
            .map(|s| s.peer())
    }

    /// The local address of `conn` (for an accepted connection: the address the peer
    /// connected to).
    pub fn local_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core
            .sessions
            .get(conn.key as usize)
            .filter(|s| s.gen == conn.gen)
            .and_then(|s| s.stream.local_addr().ok())
    }

    /// Which listener accepted `conn` (the id [`crate::Server::add_listener`] gave; still
    /// known inside [`crate::Handler::on_close`]); `None` for outbound connections. A server
    /// serving two protocols tells them apart by it.
    pub fn listener(&self, conn: ConnId) -> Option<crate::ListenerId> {
        match self.route(conn)? {
            Route::Listener(l) => Some(crate::ListenerId(l)),
            _ => None,
        }
    }

    /// The kind given to the outbound connection `conn` with [`Context::set_kind`]; `None` for
    /// accepted connections and outbound ones without a kind.
    pub fn kind(&self, conn: ConnId) -> Option<crate::Kind> {
        match self.route(conn)? {
            Route::Kind(k) => Some(crate::Kind(k)),
            _ => None,
        }
    }

    /// Where `conn` came from; still known inside [`crate::Handler::on_close`], so that a
    /// composed loop gives the close to the right service.
    pub(crate) fn route(&self, conn: ConnId) -> Option<Route> {
        self.core
            .sessions
            .get(conn.key as usize)
            .filter(|s| s.gen == conn.gen)
            .map(|s| s.route)
    }

    /// Names what the outbound connection `conn` is for (a database link, an upstream, a
    /// health check), so that a [`crate::compose::Composed`] loop gives its events to the
    /// service registered for that kind. Call it right after [`Context::connect`]; no event of
    /// the connection comes before. Accepted connections keep their listener: for them this
    /// does nothing.
    pub fn set_kind(&mut self, conn: ConnId, kind: crate::Kind) {
        if let Some(s) = self.core.session_mut(conn) {
            if !matches!(s.route, Route::Listener(_)) {
                s.route = Route::Kind(kind.0);
            }
        }
    }

    /// Bytes queued for `conn` and not yet written.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.core.session(conn).map_or(0, |s| s.queued())
    }

    /// True while `conn` is open (or connecting) and not closing.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.core
            .session(conn)
            .is_some_and(|s| matches!(s.state, State::Open | State::Connecting))
    }

    /// The connection's counters.
    pub fn session_stats(&self, conn: ConnId) -> Option<SessionStats> {
        self.core.session(conn).map(|s| s.stats)
    }

    /// Counts one received message (the engine sees bytes; the handler knows messages).
    pub fn count_message_in(&mut self, conn: ConnId) {
        if let Some(s) = self.core.session_mut(conn) {
            s.stats.messages_in += 1;
        }
        bump(&self.core.counters().messages_in, 1);
    }

    /// Counts an error the handler detected, e.g. [`ErrorKind::Protocol`].
    pub fn count_error(&mut self, kind: ErrorKind) {
        self.core.counters().error(kind);
    }

    /// Number of connections on this loop.
    pub fn connections(&self) -> usize {
        self.core.sessions.len()
    }

    /// A handle other threads use to send this loop messages.
    pub fn loop_handle(&self) -> LoopHandle<M> {
        LoopHandle {
            mailbox: std::sync::Arc::clone(&self.core.mailbox),
        }
    }

    /// A handle on the whole server (shutdown, stop, counters).
    pub fn server(&self) -> ServerHandle {
        ServerHandle {
            shared: std::sync::Arc::clone(&self.core.shared),
        }
    }

    /// True once a graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.core.draining
    }

    /// Ends this loop after the current pass, closing its connections (other loops go on).
    pub fn exit(&mut self) {
        self.core.exit = true;
    }
}
