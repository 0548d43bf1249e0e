//! test-server: the client-facing logic server.
//!
//! - [`service`](mod@service): one loop assembled from a service per kind of connection (frame clients,
//!   the HTTP front, the db link) around the frame side's hub.
//! - [`frames`]: the frame service — login, tokens, data requests forwarded to db-server,
//!   liveness pings, shutdown and migration notices.
//! - [`config`]: settings every loop shares; [`events`]: what the loops wait for.
//! - [`verifier`]: secrets checked against stored hashes off the loops.
//! - [`http_front`]: the HTTP/1.1 front on the same loops (`/docs`, `/health`, `/metrics`).
//! - [`dblink`]: the multiplexed links to db-server, with reconnect backoff and the breaker.
//! - [`auth`]: signed, expiring tokens and stored secrets.
//!
//! Depends on the engine, the protocol and the shared server code; never on a database.

#![deny(rust_2018_idioms)]

pub mod auth;
pub mod config;
pub mod dblink;
pub mod events;
pub mod frames;
pub mod http_front;
pub mod rtt;
pub mod service;
pub mod verifier;

pub use config::{AuthConfig, Liveness, RttTotals};
pub use events::{DocOp, Note, Owner, UserChange};
pub use frames::{
    migrate, rate_limited_frame, refuse_frame, ServiceConfig, DEFAULT_MAX_CONNECTIONS_PER_IP,
    PRE_LOGIN_MAX_MESSAGE, USERS_TABLE,
};
pub use service::{service, FrameService};
pub use verifier::Verifier;
