//! Engine configuration: loop count, buffers, backpressure, timeouts, limits and socket options.
//!
//! Every field has the default of the original design (docs/operations.md lists them); servers
//! map their command-line flags and TOML files onto this struct.

use std::net::IpAddr;
use std::time::Duration;

/// Size of one read from a socket (from the original design).
pub(crate) const READ_CHUNK: usize = 8192;
/// Size of one pooled output chunk (from the original design).
pub(crate) const WRITE_CHUNK: usize = 9999;
/// Default maximum message size: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Everything the reactor needs to know. Build one with [`Config::builder`], which checks the
/// result, or start from [`Config::default`] and change fields (then [`Server::new`] checks
/// it). Every field's default is in its documentation.
///
/// The struct is `#[non_exhaustive]`: new settings can be added without breaking programs,
/// which therefore cannot write it as a struct literal.
///
/// ```
/// use std::time::Duration;
///
/// let cfg = engine::Config::builder()
///     .threads(2)
///     .idle_timeout(Some(Duration::from_secs(300)))
///     .build()?;
/// assert_eq!(cfg.max_message_size, 1 << 20);
/// # Ok::<(), engine::ConfigError>(())
/// ```
///
/// [`Server::new`]: crate::Server::new
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Number of event-loop threads. Each owns a `mio::Poll`, its sessions and its own listening
    /// socket bound with `SO_REUSEPORT`, so the kernel spreads new connections over the loops.
    /// Default: the number of cores.
    pub threads: usize,
    /// Largest message a handler may need buffered at once; the input buffer of a session never
    /// grows past this (plus a small header allowance). Default 1 MiB.
    pub max_message_size: usize,
    /// Output queued for one peer above which reading from that peer pauses (backpressure).
    /// Default 64 KiB.
    pub write_high_water: usize,
    /// Reading resumes when the output queue falls to this. Default 32 KiB; at most
    /// `write_high_water` ([`Config::validate`]).
    pub write_low_water: usize,
    /// Output queued for one peer above which it is disconnected: a peer that never reads cannot
    /// make the server buffer without bound. Default 16 MiB; at least `write_high_water`.
    pub write_hard_cap: usize,
    /// A peer whose queued output makes no progress for this long is disconnected. Default
    /// 60 s; `None`: never.
    pub write_timeout: Option<Duration>,
    /// Close a session that has received nothing for this long. Default `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Give up on an outbound connection that is not established after this long. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight work before closing everything.
    /// Default 30 s.
    pub shutdown_grace: Duration,
    /// Connection limits applied when accepting. Default: [`Limits::default`] (the open-file
    /// limit, no rate or per-address limit).
    pub limits: Limits,
    /// Options applied to every accepted and outbound socket. Default:
    /// [`SocketOptions::default`].
    pub socket: SocketOptions,
    /// Bytes written (best effort) to a connection refused at the connection limit before it
    /// is closed, e.g. an ERROR frame. Default empty: just close.
    pub refuse_message: Vec<u8>,
    /// The same for a connection refused by the per-IP rate limit. Default empty.
    pub rate_limited_message: Vec<u8>,
    /// Listen backlog. Default 1024.
    pub backlog: i32,
    /// Read buffers kept per loop for reuse; beyond this, released buffers are freed.
    /// Default 1024.
    pub pooled_buffers: usize,
    /// A TLS session whose handshake has not finished this long after it was opened is closed
    /// (a client that opens TLS connections and never completes them holds nothing for long).
    /// Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Messages a loop's inbox holds before [`LoopHandle::post`](crate::LoopHandle::post)
    /// waits (on a worker thread) or refuses with `Full` (on a loop thread). Default 65,536.
    pub mailbox_capacity: usize,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        impl ConfigBuilder {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.0.$name = value;
                    self
                }
            )*
        }
    };
}

/// Builds a checked [`Config`]: start from [`Config::builder`] (all defaults), set what
/// differs, then [`ConfigBuilder::build`]. Each setter sets the [`Config`] field of the same
/// name; see there for meanings and defaults.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

setters! {
    /// [`Config::threads`].
    threads: usize,
    /// [`Config::max_message_size`].
    max_message_size: usize,
    /// [`Config::write_high_water`].
    write_high_water: usize,
    /// [`Config::write_low_water`].
    write_low_water: usize,
    /// [`Config::write_hard_cap`].
    write_hard_cap: usize,
    /// [`Config::write_timeout`].
    write_timeout: Option<Duration>,
    /// [`Config::idle_timeout`].
    idle_timeout: Option<Duration>,
    /// [`Config::connect_timeout`].
    connect_timeout: Duration,
    /// [`Config::shutdown_grace`].
    shutdown_grace: Duration,
    /// [`Config::limits`].
    limits: Limits,
    /// [`Config::socket`].
    socket: SocketOptions,
    /// [`Config::refuse_message`].
    refuse_message: Vec<u8>,
    /// [`Config::rate_limited_message`].
    rate_limited_message: Vec<u8>,
    /// [`Config::backlog`].
    backlog: i32,
    /// [`Config::pooled_buffers`].
    pooled_buffers: usize,
    /// [`Config::tls_handshake_timeout`].
    tls_handshake_timeout: Duration,
    /// [`Config::mailbox_capacity`].
    mailbox_capacity: usize,
}

impl ConfigBuilder {
    /// The configuration, once [`Config::validate`] accepts it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first broken invariant.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// A [`Config`] the engine cannot run with: what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("engine configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// Checks the invariants [`Server::new`](crate::Server::new) relies on:
    /// `write_low_water ≤ write_high_water ≤ write_hard_cap`, a `max_message_size` of at least
    /// one read (8,192 bytes), a positive backlog, non-zero durations where zero would mean
    /// "at once" (the connect and TLS handshake timeouts), and rate limits that refill.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting that breaks one.
    ///
    /// ```
    /// let mut cfg = engine::Config::default();
    /// assert!(cfg.validate().is_ok());
    /// cfg.write_low_water = cfg.write_high_water + 1;
    /// assert!(cfg.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |s: &str| Err(ConfigError(s.to_string()));
        if self.write_low_water > self.write_high_water
            || self.write_high_water > self.write_hard_cap
        {
            return fail("need write_low_water ≤ write_high_water ≤ write_hard_cap");
        }
        if self.max_message_size < READ_CHUNK {
            return fail(&format!(
                "max_message_size must be at least one read ({READ_CHUNK} bytes)"
            ));
        }
        if self.backlog <= 0 {
            return fail("backlog must be positive");
        }
        if self.connect_timeout.is_zero() || self.tls_handshake_timeout.is_zero() {
            return fail("connect_timeout and tls_handshake_timeout must be more than zero");
        }
        if self.mailbox_capacity == 0 {
            return fail("mailbox_capacity must be at least 1");
        }
        if self.limits.max_connections == Some(0) {
            return fail("max_connections must be at least 1 (None: the open-file limit)");
        }
        if let Some(r) = &self.limits.rate {
            if r.burst == 0 || r.per.is_zero() {
                return fail("a rate limit needs a burst of at least 1 and a refill time");
            }
        }
        if self.limits.per_ip.as_ref().is_some_and(|l| l.max == 0) {
            return fail("a per-address limit must allow at least 1 connection");
        }
        Ok(())
    }
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
            mailbox_capacity: 1 << 16,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_each_broken_invariant_is_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        type Breaks = fn(&mut Config);
        let broken: [(&str, Breaks); 7] = [
            ("write_low_water", |c| {
                c.write_low_water = c.write_high_water + 1
            }),
            ("write_hard_cap", |c| {
                c.write_hard_cap = c.write_high_water - 1
            }),
            ("max_message_size", |c| c.max_message_size = 100),
            ("backlog", |c| c.backlog = 0),
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
            ("max_connections", |c| c.limits.max_connections = Some(0)),
            ("mailbox_capacity", |c| c.mailbox_capacity = 0),
        ];
        for (name, breaks) in broken {
            let mut c = Config::default();
            breaks(&mut c);
            let e = c.validate().expect_err(name);
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn server_new_refuses_a_broken_config() {
        struct Nothing;
        impl crate::Handler for Nothing {
            type Message = ();
            type Timer = ();
            fn on_data(
                &mut self,
                _: &mut crate::Context<'_, ()>,
                _: crate::ConnId,
                d: &[u8],
            ) -> usize {
                d.len()
            }
        }
        let cfg = Config {
            backlog: -1,
            ..Config::default()
        };
        let e = crate::Server::<Nothing>::new(cfg).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_builder_sets_fields_and_refuses_what_validate_refuses() {
        let c = Config::builder()
            .threads(3)
            .write_high_water(1000)
            .write_low_water(10)
            .build()
            .unwrap();
        assert_eq!(
            (c.threads, c.write_high_water, c.write_low_water),
            (3, 1000, 10)
        );
        let e = Config::builder()
            .write_low_water(1 << 20)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("write_low_water"), "{e}");
    }
}
