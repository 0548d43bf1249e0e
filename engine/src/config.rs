//! Engine configuration: loop count, buffers, backpressure, timeouts, limits and socket options.
//!
//! Every field has the default of the original design (docs/operations.md lists them); servers
//! map their command-line flags and TOML files onto this struct.

use std::net::IpAddr;
use std::time::Duration;

/// Size of one read from a socket (from the original design).
pub const READ_CHUNK: usize = 8192;
/// Size of one pooled output chunk (from the original design).
pub const WRITE_CHUNK: usize = 9999;
/// Default maximum message size: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Everything the reactor needs to know. Build with [`Config::default`] and change fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of event-loop threads. Each owns a `mio::Poll`, its sessions and its own listening
    /// socket bound with `SO_REUSEPORT`, so the kernel spreads new connections over the loops.
    /// Default: the number of cores.
    pub threads: usize,
    /// Largest message a handler may need buffered at once; the input buffer of a session never
    /// grows past this (plus a small header allowance). Default 1 MiB.
    pub max_message_size: usize,
    /// Output queued for one peer above which reading from that peer pauses (backpressure).
    pub write_high_water: usize,
    /// Reading resumes when the output queue falls to this.
    pub write_low_water: usize,
    /// Output queued for one peer above which it is disconnected: a peer that never reads cannot
    /// make the server buffer without bound.
    pub write_hard_cap: usize,
    /// A peer whose queued output makes no progress for this long is disconnected.
    pub write_timeout: Option<Duration>,
    /// Close a session that has received nothing for this long. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Give up on an outbound connection that is not established after this long.
    pub connect_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight work before closing everything.
    pub shutdown_grace: Duration,
    /// Connection limits applied when accepting.
    pub limits: Limits,
    /// Options applied to every accepted and outbound socket.
    pub socket: SocketOptions,
    /// Bytes written (best effort) to a connection refused at the connection limit before it
    /// is closed, e.g. an ERROR frame. Empty: just close.
    pub refuse_message: Vec<u8>,
    /// The same for a connection refused by the per-IP rate limit.
    pub rate_limited_message: Vec<u8>,
    /// Listen backlog.
    pub backlog: i32,
    /// Read buffers kept per loop for reuse; beyond this, released buffers are freed.
    pub pooled_buffers: usize,
    /// A TLS session whose handshake has not finished this long after it was opened is closed
    /// (a client that opens TLS connections and never completes them holds nothing for long).
    pub tls_handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_message_size: DEFAULT_MAX_MESSAGE,
            write_high_water: 64 * 1024,
            write_low_water: 32 * 1024,
            write_hard_cap: 16 * 1024 * 1024,
            write_timeout: Some(Duration::from_secs(60)),
            idle_timeout: None,
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            limits: Limits::default(),
            socket: SocketOptions::default(),
            refuse_message: Vec::new(),
            rate_limited_message: Vec::new(),
            backlog: 1024,
            pooled_buffers: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accept-time limits.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Most accepted connections open at once across all loops. `None`: what the open-file
    /// limit allows, less a reserve of 64 descriptors for files, pipes, logs and the few
    /// outbound connections a server opens itself (those are not counted here).
    pub max_connections: Option<usize>,
    /// Per-IP new-connection rate limit; `None` (default) disables it.
    pub rate: Option<RateLimit>,
    /// Per-IP limit on connections open at once; `None` (default) disables it.
    pub per_ip: Option<PerIpLimit>,
}

/// Most connections one source address may hold open at once (as nginx's `limit_conn`): one
/// client cannot take every place (and the memory each holds before it authenticates).
#[derive(Debug, Clone)]
pub struct PerIpLimit {
    /// Connections open at once per address.
    pub max: usize,
    /// Addresses never limited (a proxy in front, which carries many clients' connections).
    pub allow: Vec<IpAddr>,
}

/// A token bucket per source address: `burst` new connections at once, refilled at `burst` per
/// `per`. The original design used 10 per minute.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Bucket size: connections allowed back to back.
    pub burst: u32,
    /// Time to refill the whole bucket.
    pub per: Duration,
    /// Addresses never limited. Default: loopback (`127.0.0.1`, `::1`).
    pub allow: Vec<IpAddr>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 10,
            per: Duration::from_secs(60),
            allow: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }
}

/// Socket options (defaults from the original design; docs/operations.md). `None` leaves the kernel default.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// TCP_NODELAY: send small frames at once rather than waiting to coalesce them.
    pub nodelay: bool,
    /// SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT.
    pub keepalive: Option<Keepalive>,
    /// SO_REUSEADDR on listeners, so a restarted server can bind while old connections linger.
    pub reuse_address: bool,
    /// SO_RCVBUF. `None` (the default) leaves the size to the kernel, which grows it with the
    /// connection's bandwidth-delay product; setting it turns that autotuning off.
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF; `None` (the default) as for `recv_buffer`.
    pub send_buffer: Option<usize>,
    /// TCP_USER_TIMEOUT (Linux): drop a connection whose sent data stays unacknowledged this long.
    pub user_timeout: Option<Duration>,
    /// SO_LINGER. `Some(0)` makes close send RST; `None` keeps the normal close.
    pub linger: Option<Duration>,
}

/// TCP keepalive probe timing.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub retries: u32,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                retries: 9,
            }),
            reuse_address: true,
            recv_buffer: None,
            send_buffer: None,
            user_timeout: Some(Duration::from_secs(60)),
            linger: None,
        }
    }
}
