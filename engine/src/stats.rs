//! Counters per server (shared by all loops) and per session, and an RTT window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an error counter moved. Each kind has its own counter ([`StatsSnapshot::error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `accept` failed (e.g. out of descriptors).
    Accept,
    /// A read or write on a socket failed.
    Io,
    /// An outbound connection could not be established.
    Connect,
    /// A connection was refused at the connection limit.
    RefusedLimit,
    /// A connection was refused by the per-IP rate limit.
    RefusedRate,
    /// A session was closed for idleness or a stalled write.
    Timeout,
    /// A peer's output passed the hard cap.
    Overflow,
    /// A peer sent a message over the maximum size.
    TooLarge,
    /// A protocol error reported by a handler (bad frame, bad message).
    Protocol,
    /// A TLS handshake or record failed, or a peer spoke plain text to a TLS port.
    Tls,
}

impl ErrorKind {
    /// All kinds, in counter order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Accept,
        ErrorKind::Io,
        ErrorKind::Connect,
        ErrorKind::RefusedLimit,
        ErrorKind::RefusedRate,
        ErrorKind::Timeout,
        ErrorKind::Overflow,
        ErrorKind::TooLarge,
        ErrorKind::Protocol,
        ErrorKind::Tls,
    ];

    /// A short snake_case name, used as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Accept => "accept",
            ErrorKind::Io => "io",
            ErrorKind::Connect => "connect",
            ErrorKind::RefusedLimit => "refused_limit",
            ErrorKind::RefusedRate => "refused_rate",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overflow => "overflow",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Tls => "tls",
        }
    }
}

/// One loop's counters. Only that loop writes them (plain load + store, no locked
/// instruction on the hot path); anyone may read them. Padded to its own cache lines so loops
/// on different cores do not invalidate each other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) errors: [AtomicU64; ErrorKind::ALL.len()],
}

/// Adds to a counter that only the calling loop writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Counters {
    pub(crate) fn error(&self, kind: ErrorKind) {
        bump(&self.errors[kind as usize], 1);
    }
}

/// Server-wide counters: one block of counters per loop, summed when read.
#[derive(Debug)]
pub(crate) struct ServerStats {
    pub(crate) loops: Vec<Counters>,
}

/// A copy of the server's counters at one moment, summed over its loops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted or opened since start.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages handled, as counted by handlers through `Context::count_message_in`.
    pub messages_in: u64,
    /// Messages queued for sending (one per `Context::send*` call).
    pub messages_out: u64,
    /// Error counts, in the order of [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
}

impl StatsSnapshot {
    /// The count for one error kind.
    pub fn error(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize]
    }
}

impl ServerStats {
    pub(crate) fn new(loops: usize) -> Self {
        ServerStats {
            loops: (0..loops).map(|_| Counters::default()).collect(),
        }
    }

    /// Connections open now on each loop, in loop order (how evenly the kernel spreads them).
    pub fn connections_by_loop(&self) -> Vec<u64> {
        self.loops
            .iter()
            .map(|c| c.connections_active.load(Relaxed))
            .collect()
    }

    /// Reads every counter of every loop.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for c in &self.loops {
            s.connections_total += c.connections_total.load(Relaxed);
            s.connections_active += c.connections_active.load(Relaxed);
            s.bytes_in += c.bytes_in.load(Relaxed);
            s.bytes_out += c.bytes_out.load(Relaxed);
            s.messages_in += c.messages_in.load(Relaxed);
            s.messages_out += c.messages_out.load(Relaxed);
            for (slot, e) in s.errors.iter_mut().zip(&c.errors) {
                *slot += e.load(Relaxed);
            }
        }
        s
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Messages received (counted by the handler).
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
}
