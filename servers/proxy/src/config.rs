//! What a proxy is told at start: mode, backends' health checks, timeouts, limits.

use std::time::Duration;

/// What the proxy balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 requests.
    Http,
    /// Whole TCP connections (e.g. frame-protocol clients), tunnelled byte for byte.
    Tcp,
}

/// Active health checks.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Between two checks of a backend.
    pub interval: Duration,
    /// A check not answered within this fails.
    pub timeout: Duration,
    /// `GET` this path (HTTP mode; TCP mode checks that a connection opens).
    pub path: String,
}

/// Proxy settings (the engine's are separate).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// HTTP or TCP.
    pub mode: Mode,
    /// Largest request or response head.
    pub max_head: usize,
    /// Largest request body (over it: 413).
    pub max_body: u64,
    /// A backend connection not open within this counts as failed.
    pub connect_timeout: Duration,
    /// A backend that sends nothing for this long after the request: 504.
    pub response_timeout: Duration,
    /// A request (head and body) must be whole this long after its first byte (else 408).
    pub client_timeout: Duration,
    /// Idle keep-alive connections (client and backend) close after this long between
    /// requests.
    pub keepalive_timeout: Duration,
    /// Idle connections kept per backend and loop; more are closed as they come back.
    pub idle_per_backend: usize,
    /// Health checks.
    pub check: CheckConfig,
    /// Period of the `[METRIC]` log lines (none: off).
    pub metrics_interval: Option<Duration>,
    /// The admin API's listener (its connections get the admin API, not the proxy).
    pub admin_listener: Option<engine::ListenerId>,
    /// What the admin API's changes (POST, DELETE) must present as `Authorization: Bearer`;
    /// none: the admin API trusts whoever reaches its address.
    pub admin_token: Option<String>,
    /// TCP mode: open each backend connection with a PROXY protocol v2 header naming the
    /// client (HAProxy's `send-proxy-v2`), for backends that trust this proxy to say it.
    pub send_proxy_v2: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: Mode::Http,
            max_head: 8192,
            max_body: 1 << 30,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(30),
            client_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            idle_per_backend: 512,
            check: CheckConfig {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                path: "/health".into(),
            },
            metrics_interval: Some(Duration::from_secs(10)),
            admin_listener: None,
            admin_token: None,
            send_proxy_v2: false,
        }
    }
}
