//! The link's settings (LinkConfig) and their defaults.

use super::*;

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// db-server's address.
    pub addr: SocketAddr,
    /// Connections per loop.
    pub conns: usize,
    /// Reconnection backoff: first delay, largest delay, jitter fraction.
    pub backoff: (Duration, Duration, f64),
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a trial request.
    pub breaker_open: Duration,
    /// An answer not back within this fails with TIMEOUT.
    pub request_timeout: Duration,
    /// A connection db-server has been quiet on this long is pinged.
    pub ping_interval: Duration,
    /// A connection db-server has been quiet on this long (pings unanswered) is closed.
    pub silence_limit: Duration,
    /// Largest frame accepted from db-server.
    pub max_message: usize,
    /// Which requests over 10 KiB are gzip-compressed (by default: only to a db-server on
    /// another host).
    pub compress: shared::wire::Compress,
    /// TLS to db-server: the client config (trusted CA, optional client certificate for mutual
    /// TLS) and the name its certificate must carry. `None`: plain TCP.
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Where db-server's writes go, as it last said (the PostgreSQL primary's `host:port`;
    /// empty when none answers, or on SQLite): kept by every loop's link, shared by clones
    /// of this config, shown on the status page.
    pub primary: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LinkConfig {
    /// The original design's defaults for `addr`: 2 connections, backoff 2 s..60 s ±10 %,
    /// breaker 5 failures / 60 s, 30 s request timeout; pinged after 2 s of quiet, closed after
    /// 6 s of silence.
    pub fn new(addr: SocketAddr) -> Self {
        LinkConfig {
            addr,
            conns: 2,
            backoff: (Duration::from_secs(2), Duration::from_secs(60), 0.1),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(2),
            silence_limit: Duration::from_secs(6),
            max_message: engine::DEFAULT_MAX_MESSAGE,
            compress: shared::wire::Compress::default(),
            tls: None,
            primary: std::sync::Arc::default(),
        }
    }
}
