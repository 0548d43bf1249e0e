//! The protocol side of a loop: the [`Handler`] trait and the identifiers it is given.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::context::Context;

/// Identifies a connection within its loop. Stays unique after the connection closes (a
/// generation number guards against slab-slot reuse), so a late worker result for a closed
/// connection is simply refused by [`Context::send`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: u32,
    /// Never zero, so `Option<ConnId>` (and maps of `Option<(ConnId, T)>`) cost no tag.
    pub(crate) gen: std::num::NonZeroU32,
}

impl ConnId {
    /// The slab index (also the `mio::Token`); small and dense, handy to index handler state.
    pub fn index(self) -> usize {
        self.key as usize
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.key, self.gen)
    }
}

/// Names one listening address of a server, as [`crate::Server::add_listener`] returned it;
/// [`Context::listener`] tells which one accepted a connection, so a server speaking two
/// protocols on two ports routes by name rather than by the order of its `listen` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) u16);

impl ListenerId {
    /// Position among the server's listeners, in the order they were added (for indexing
    /// per-listener tables).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Why a connection ended; passed to [`Handler::on_close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// The handler called [`Context::close`] or [`Context::abort`].
    Local,
    /// Nothing was received within the idle timeout.
    IdleTimeout,
    /// Queued output made no progress within the write timeout.
    WriteTimeout,
    /// Queued output passed the hard cap: the peer does not read.
    Overflow,
    /// The peer sent more than the maximum message size without it being consumed.
    TooLarge,
    /// An outbound connection could not be established.
    ConnectFailed(io::ErrorKind),
    /// A socket error.
    Io(io::ErrorKind),
    /// The server is shutting down (graceful drain finished or its grace period ran out).
    Shutdown,
    /// TLS failed: a bad certificate, a protocol error, a handshake that took too long, or
    /// plain text on a TLS port. The text says which.
    Tls(Box<str>),
}

/// For people: `connect failed: connection refused`, `idle timeout`, …
impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Local => f.write_str("closed here"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::WriteTimeout => f.write_str("write timeout (the peer stopped reading)"),
            CloseReason::Overflow => {
                f.write_str("output over the hard cap (the peer does not read)")
            }
            CloseReason::TooLarge => f.write_str("message over the maximum size"),
            CloseReason::ConnectFailed(kind) => write!(f, "connect failed: {kind}"),
            CloseReason::Io(kind) => write!(f, "socket error: {kind}"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::Tls(why) => write!(f, "TLS failed: {why}"),
        }
    }
}

/// Protocol logic plugged into a loop. One handler value per loop thread, made by the factory
/// given to [`crate::Server::run`]; it keeps whatever per-connection state it needs, keyed by
/// [`ConnId`].
///
/// Every method runs on the loop thread and must not block: hand slow work to a thread and send
/// the result back through [`crate::LoopHandle::post`], which arrives in [`Handler::on_message`].
///
/// ```no_run
/// use engine::{Config, Context, ConnId, Handler, Server};
///
/// /// Echoes every byte back.
/// struct Echo;
///
/// impl Handler for Echo {
///     type Message = ();
///     type Timer = ();
///     fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
///         let _ = ctx.send(conn, data);
///         data.len()
///     }
/// }
///
/// let server = Server::new(Config::default())?.listen("127.0.0.1:7000".parse()?)?;
/// engine::signal::shutdown_on_signals(server.handle())?;
/// server.run(|_loop_id| Echo)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Handler: 'static {
    /// What worker threads send to this loop through its [`crate::LoopHandle`].
    type Message: Send + 'static;

    /// What a timer carries back to [`Handler::on_timer`]: `()` for a handler with one kind of
    /// timer (or none), else the handler's own type (an enum naming each kind and whose it is),
    /// so that no handler packs meanings into the bits of a number.
    type Timer: 'static;

    /// The loop is about to start polling; open outbound connections or timers here.
    fn on_start(&mut self, _ctx: &mut Context<'_, Self::Message, Self::Timer>) {}

    /// A peer connected to one of the listeners.
    fn on_accept(
        &mut self,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _conn: ConnId,
        _peer: SocketAddr,
    ) {
    }

    /// An outbound connection from [`Context::connect`] is established (from
    /// `Context::connect_tls`: its handshake is done as well). (A failed one gets
    /// [`Handler::on_close`] with [`CloseReason::ConnectFailed`] instead.)
    fn on_connect(&mut self, _ctx: &mut Context<'_, Self::Message, Self::Timer>, _conn: ConnId) {}

    /// Bytes arrived. `data` is everything received and not yet consumed; return how many bytes
    /// were consumed. Unconsumed bytes are offered again, with more appended, on the next call
    /// (or, after [`Context::wait_for`], once that many are here); the buffer grows up to the
    /// connection's message limit, past which [`Handler::on_oversize`] is called and the peer
    /// closed.
    ///
    /// `data` is never empty, and after [`Context::close`] or [`Context::abort`] of `conn` (from
    /// here or elsewhere) `on_data` is not called for it again. Consume every whole message
    /// `data` holds: the next call comes only when more bytes arrive (or reading resumes after
    /// backpressure), not for what is left.
    fn on_data(
        &mut self,
        ctx: &mut Context<'_, Self::Message, Self::Timer>,
        conn: ConnId,
        data: &[u8],
    ) -> usize;

    /// `conn` sent more than its message limit ([`crate::Config::max_message_size`] or
    /// [`Context::set_max_message`]) without the handler consuming it; `buffered` bytes are
    /// held. Reading from it has stopped; queue an answer here if the protocol has one (Redis
    /// would say `-ERR`, HTTP `413`, the frame protocol `FRAME_TOO_LARGE`). The connection then
    /// closes with [`CloseReason::TooLarge`] once that answer is written.
    fn on_oversize(
        &mut self,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _conn: ConnId,
        _buffered: usize,
    ) {
    }
    /// A connection's output queue fell to the low-water mark after passing the high-water mark
    /// (reading from it resumes by itself); a proxy resumes the connection feeding this one here.
    fn on_drain(&mut self, _ctx: &mut Context<'_, Self::Message, Self::Timer>, _conn: ConnId) {}

    /// A timer set with [`Context::set_timer`] fired; `timer` is what was given there.
    fn on_timer(
        &mut self,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _timer: Self::Timer,
    ) {
    }

    /// A message from another thread arrived.
    fn on_message(
        &mut self,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _msg: Self::Message,
    ) {
    }

    /// The loop has handled this pass's events, messages and timers and is about to write
    /// output and poll again. Work collected during the pass can be handed to other threads
    /// here in one go (one lock and one wake for the pass instead of one per request), as
    /// Redis does in `beforeSleep`.
    fn on_pass_end(&mut self, _ctx: &mut Context<'_, Self::Message, Self::Timer>) {}

    /// The connection is closed; `conn` is invalid from now on. Called exactly once per
    /// connection that was accepted or whose connect was attempted.
    fn on_close(
        &mut self,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _conn: ConnId,
        _reason: CloseReason,
    ) {
    }

    /// A graceful shutdown began: listeners are closed. Tell peers (e.g. a shutdown notice).
    /// Each connection then closes once its output is written and [`Handler::is_busy`] is false,
    /// or when the grace period ends.
    fn on_shutdown(&mut self, _ctx: &mut Context<'_, Self::Message, Self::Timer>) {}

    /// True while the handler still owes `conn` an answer (e.g. a database call in flight).
    /// Graceful closes and shutdown wait for it.
    fn is_busy(&self, _conn: ConnId) -> bool {
        false
    }
}
