//! Code every netmod server shares, one module per concept.
//!
//! - [`addr`]: `HOST:PORT` as people type it, resolved once, with errors that say what is wrong.
//! - [`http1`]: HTTP/1.1 request parsing and response writing (test-server's front and the proxy).
//! - [`settings`]: TOML configuration files and the duration syntax of flags.
//! - [`logging`]: the log line format and escaping of peer bytes.
//! - [`tls`]: certificate and key files into rustls configs (every program's TLS options).
//! - [`backoff`], [`breaker`]: reconnect timing and the circuit breaker.
//! - [`memory`]: the C allocator's settings for a long-running server.
//! - [`clock`]: seconds since the epoch, the one way every program reads the time of day.
//! - [`page`]: the style and script helpers of the servers' HTML pages.
//! - `wire` (feature `frames`): the frame protocol on an engine connection.
//!
//! May depend on the engine, and with `frames` on the protocol codec; never on a database or a
//! program.

#![deny(rust_2018_idioms)]

pub mod addr;
pub mod backoff;
pub mod breaker;
pub mod clock;
pub mod http1;
pub mod logging;
pub mod memory;
pub mod page;
pub mod proxy_protocol;
pub mod settings;
pub mod tls;
#[cfg(feature = "frames")]
pub mod wire;

/// What `-V` prints after a binary's name: the package version and the commit it was built
/// from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("NETMOD_GIT_REV"), ")");
