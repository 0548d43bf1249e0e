//! test-server: the client-facing logic server.
//!
//! - [`frames`]: the frame service — login, tokens, data requests forwarded to db-server,
//!   liveness pings, shutdown and migration notices.
//! - [`http_front`]: the HTTP/1.1 front on the same loops (`/docs`, `/health`, `/metrics`).
//! - [`dblink`]: the multiplexed links to db-server, with reconnect backoff and the breaker.
//! - [`auth`]: signed, expiring tokens and stored secrets.
//!
//! Depends on the engine, the protocol and the shared server code; never on a database.

#![deny(rust_2018_idioms)]

pub mod auth;
pub mod dblink;
pub mod frames;
pub mod http_front;

pub use frames::*;
