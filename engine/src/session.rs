//! One connection's state inside a loop.
//!
//! # Lifecycle
//!
//! ```text
//!  connect()──► Connecting ──writable, ok──► Open ◄── accept
//!                   │                          │ close() / EOF / error / timeout
//!                   └──failed / timeout──┐     ▼
//!                                        │  Closing { reason, abort }
//!                                        │     │ output written and handler not busy
//!                                        ▼     ▼  (abort: at once)
//!                                   on_close(reason) ── the handler forgets the ConnId
//!                                        │
//!                        read side open? ├─yes─► Lingering: shutdown(Write), discard input
//!                                        │                  until EOF or 2 s, then close
//!                                        └─no──► closed, slab slot freed
//! ```
//!
//! Lingering (as nginx's `lingering_close`) keeps the kernel from answering unread input with an
//! RST that would destroy the last replies still in flight to the peer.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use mio::net::TcpStream;

use crate::handler::CloseReason;
use crate::queue::WriteQueue;
use crate::stats::SessionStats;
use crate::timer::TimerKey;
use crate::tls::Tls;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Connecting,
    Open,
    /// `Session::abort` says whether output still queued is thrown away.
    Closing(CloseReason),
    Lingering,
}

/// Where a connection came from: the listener that accepted it (index in `Server::listen`
/// order), or the kind its handler gave an outbound one ([`crate::Context::set_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    None,
    Listener(u16),
    Kind(u16),
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) stream: TcpStream,
    pub(crate) gen: NonZeroU32,
    pub(crate) state: State,
    /// The peer's address, kept as IP and port (a `SocketAddr` would add 12 bytes to every
    /// session for IPv6 flow and scope ids we never use); see [`Session::peer`].
    pub(crate) peer_ip: IpAddr,
    peer_port: u16,
    /// Read buffer, empty (no allocation) while every received byte is consumed.
    pub(crate) rbuf: Vec<u8>,
    /// Unconsumed input is `rbuf[rstart..rend]` (u32: the buffer never outgrows the maximum
    /// message size, which `read_room` keeps under 4 GiB).
    pub(crate) rstart: u32,
    pub(crate) rend: u32,
    /// Unconsumed bytes the handler waits for before its next `on_data` (0: any); see
    /// [`crate::Context::wait_for`]. Cleared by each delivery.
    pub(crate) want: u32,
    /// This connection's message limit, if [`crate::Context::set_max_message`] replaced the
    /// configured one.
    pub(crate) max_message: Option<NonZeroU32>,
    /// Output queue, taken from the loop's spares when there is output and given back after.
    pub(crate) wq: Option<Box<WriteQueue>>,
    /// The socket reported readable and we have not read to `WouldBlock` yet.
    pub(crate) readable: bool,
    /// Reading stopped because output passed the high-water mark.
    pub(crate) backpressure: bool,
    /// Reading stopped by the handler.
    pub(crate) user_paused: bool,
    /// Resumed with unconsumed input: offer it again before reading more.
    pub(crate) redeliver: bool,
    pub(crate) read_closed: bool,
    /// The poller said the peer closed its side (or the socket errored): read on to EOF rather
    /// than trusting a short read to mean "wait for the next edge".
    pub(crate) hup: bool,
    pub(crate) in_dirty: bool,
    pub(crate) in_ready: bool,
    /// Closing without writing what is queued (set with `State::Closing`).
    pub(crate) abort: bool,
    /// Idle timeout in ms (at most ~49 days; `None`: never).
    pub(crate) idle_timeout_ms: Option<NonZeroU32>,
    /// Tick of the last read (while connecting: when the connection was opened).
    pub(crate) last_read: u64,
    pub(crate) last_write: u64,
    /// The one wheel entry that checks this session's deadlines, and when it fires.
    /// (Its due tick is kept by the wheel: [`crate::timer::TimerWheel::due`].)
    pub(crate) timer: Option<TimerKey>,
    pub(crate) stats: SessionStats,
    /// Which listener accepted it, or which kind of outbound connection it is.
    pub(crate) route: Route,
    /// TLS state; `None` for plain TCP.
    pub(crate) tls: Option<Box<Tls>>,
}

impl Session {
    pub(crate) fn new(
        stream: TcpStream,
        gen: NonZeroU32,
        peer: SocketAddr,
        state: State,
        now: u64,
    ) -> Self {
        Session {
            stream,
            gen,
            state,
            peer_ip: peer.ip(),
            peer_port: peer.port(),
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            want: 0,
            max_message: None,
            wq: None,
            readable: false,
            backpressure: false,
            user_paused: false,
            redeliver: false,
            read_closed: false,
            hup: false,
            in_dirty: false,
            in_ready: false,
            abort: false,
            idle_timeout_ms: None,
            last_read: now,
            last_write: now,
            timer: None,
            stats: SessionStats::default(),
            route: Route::None,
            tls: None,
        }
    }

    /// The peer's address (for an IPv6 peer without its flow and scope ids).
    pub(crate) fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer_ip, self.peer_port)
    }

    /// Output not yet on the wire: the write queue, plus one for records still held by TLS.
    pub(crate) fn queued(&self) -> usize {
        self.wq.as_ref().map_or(0, |q| q.len())
            + usize::from(self.tls.as_ref().is_some_and(|t| t.wants_write()))
    }

    /// Input may be waiting: the socket has unread bytes, or TLS holds decrypted ones.
    pub(crate) fn has_input(&self) -> bool {
        self.readable || self.tls.as_ref().is_some_and(|t| t.plain_pending)
    }

    /// When the handshake of a TLS session still handshaking began.
    pub(crate) fn handshake_started(&self) -> Option<u64> {
        self.tls
            .as_ref()
            .filter(|t| t.conn.is_handshaking())
            .map(|t| t.started)
    }

    /// A TLS session whose handshake has not finished.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.conn.is_handshaking())
    }

    /// Still visible to the handler (not yet given to `on_close`).
    pub(crate) fn is_live(&self) -> bool {
        matches!(
            self.state,
            State::Connecting | State::Open | State::Closing(_)
        )
    }

    pub(crate) fn may_read(&self) -> bool {
        match self.state {
            // A TLS handshake reads on regardless of pauses: output queued meanwhile can only
            // drain once it is done.
            State::Open if self.handshaking() => !self.read_closed,
            State::Open => !self.backpressure && !self.user_paused && !self.read_closed,
            State::Lingering => !self.read_closed,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection pays for one `Session` in the slab (and its slab tag); issue 14
    /// brought it down from 248 bytes; issue 26 added 8 for the handler's input hints
    /// (`wait_for`, `set_max_message`). Growing it is a decision, not an accident.
    #[test]
    fn an_idle_session_stays_small() {
        let size = std::mem::size_of::<Session>();

        assert!(size <= 192, "Session grew to {size} bytes");
        assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 8);
    }
}
