//! The programs of the system and the code they share, on top of the `engine` crate.
//!
//! - [`wire`]: the frame protocol (`Message` over 4-byte length-prefixed frames).
//! - [`test_server`]: test-server's frame service.
//! - [`loadgen`]: the load generator, itself an engine client.
//! - [`client`]: a blocking client for people and tests.
//! - [`proxy`]: the reverse proxy and load balancer.
//! - [`http1`], [`http_front`]: HTTP/1.1 framing (shared) and test-server's HTTP front.
//! - [`auth`]: signed, expiring tokens and stored secrets (test-server).
//! - [`settings`], [`logging`]: configuration files and log format shared by every binary.
//! - [`tls`]: certificate and key files into rustls configs (every program's TLS options).

#![deny(rust_2018_idioms)]

pub mod auth;
pub mod backoff;
pub mod breaker;
pub mod client;
pub mod db;
pub mod dblink;
pub mod http1;
pub mod http_front;
pub mod loadgen;
pub mod logging;
pub mod proto;
pub mod proxy;
pub mod settings;
pub mod test_server;
pub mod tls;
pub mod wire;

/// What `-V` prints after a binary's name: the package version and the commit it was built
/// from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("NETMOD_GIT_REV"), ")");
