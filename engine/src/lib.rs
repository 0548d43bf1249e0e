//! A hand-rolled reactor on [`mio`]: the network engine under every server of this project,
//! usable alone (the package is `netmod-engine`, the library `engine`; see README.md).
//!
//! An echo server:
//!
//! ```no_run
//! use engine::{Config, ConnId, Context, Handler, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type Message = ();
//!     type Timer = ();
//!
//!     fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
//!         let _ = ctx.send(conn, data); // queued; never blocks the loop
//!         data.len() // bytes consumed; the rest is offered again with more appended
//!     }
//! }
//!
//! let server = Server::new(Config::default())?.listen("127.0.0.1:7007".parse()?)?;
//! engine::signal::shutdown_on_signals(server.handle())?; // Ctrl-C drains, then stops
//! server.run(|_loop_id| Echo)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/` has more: `frames.rs` (length-prefixed requests, a worker thread answering
//! through the loop's waker, a periodic timer), `http_hello.rs` (keep-alive HTTP/1.1) and
//! `mini_redis.rs` (a Redis whose keys every loop shares).
//! The engine logs through the `log` facade: install a logger (e.g. `env_logger`) to see it.
//!
//! - **Loops**: one `mio::Poll` per thread ([`Config::threads`], default: cores), each with its
//!   own `SO_REUSEPORT` listening socket; sessions live in a `slab::Slab` whose key is the
//!   `mio::Token`.
//! - **Handlers**: protocol logic implements [`Handler`] (accept, data, drain, timer, message,
//!   close, shutdown) and acts through a [`Context`] (send, close, connect, timers). A server
//!   with several kinds of connection is assembled from one [`compose::Service`] per kind
//!   around a [`compose::Hub`] ([`compose`]). A handler can say how many bytes it waits for
//!   ([`Context::wait_for`]) and answer input over its limit ([`Handler::on_oversize`]).
//! - **Buffers**: reads of 8192 bytes, output in pooled 9999-byte chunks written with `writev`;
//!   idle sessions hold no buffer. Messages up to [`Config::max_message_size`] (1 MiB).
//! - **Backpressure**: past the high-water mark reading from a peer pauses until its output
//!   drains; past the hard cap, or with no write progress for the write timeout, it is closed.
//! - **Timers**: a hashed timing wheel; one entry per session covers its idle, write and connect
//!   deadlines, so a busy session does no timer work per read.
//! - **Cross-thread**: [`LoopHandle::post`] into a bounded inbox + a `mio::Waker`.
//! - **Limits**: a connection limit (default from the open-file limit) and optional per-IP rate
//!   limit; refused connections get [`Config::refuse_message`] and a log line.
//! - **TLS** (cargo feature `tls`, on by default): per listener (`Server::listen_tls`) and per
//!   outbound connection (`Context::connect_tls`), with rustls 0.23 under the same buffers; see
//!   the `tls` module.
//! - **Shutdown**: [`ServerHandle::shutdown`] (wired to SIGTERM/SIGINT by
//!   [`signal::shutdown_on_signals`]) closes listeners, lets handlers notify peers, and drains.
//!
//! # Panics
//!
//! A handler that panics stops the server; it never keeps serving with a dead loop. The panic
//! is caught on its loop's thread and logged at ERROR (Rust's panic hook prints the message);
//! that loop's connections close with it; its [`LoopHandle`]s refuse further messages
//! ([`LoopHandle::post`] gives them back as [`PostError::Closed`]), so worker threads answering into it notice; the
//! other loops stop at once (no graceful drain: the server's state is suspect); and
//! [`Server::run`] returns an error naming the loop and the panic message, so `main` returning
//! it exits non-zero. Programs that would rather abort can set `panic = "abort"` in their profile.
//!
//! # State shared across loops
//!
//! Each loop owns its connections; what every loop must see (a key space, a pool of backends,
//! counters) goes in an `Arc` the factory clones into each loop's handler. Keep the lock short
//! and sharded, as `examples/mini_redis.rs` does (64 shards of a `Mutex<HashMap>`, one lock
//! per command, never held across a send); for counters use atomics; and for work that must
//! happen on another loop, post it to that loop's [`LoopHandle`] rather than sharing its state.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use engine::{Config, ConnId, Context, Handler, Server};
//!
//! struct Counting { served: Arc<AtomicU64> }
//! impl Handler for Counting {
//!     type Message = ();
//!     type Timer = ();
//!     fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
//!         let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
//!         let _ = ctx.send(conn, format!("{n}\n").as_bytes());
//!         data.len()
//!     }
//! }
//!
//! let served = Arc::new(AtomicU64::new(0)); // one counter, every loop
//! let server = Server::new(Config::default())?.listen("127.0.0.1:7009".parse()?)?;
//! server.run(move |_| Counting { served: Arc::clone(&served) })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The engine knows nothing of any protocol: a handler parses its own (see the examples: 4-byte
//! length prefixes, HTTP/1.1, RESP).

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod compose;
mod config;
mod conn_map;
mod context;
mod handler;
mod limits;
mod mailbox;
mod pool;
mod queue;
mod reactor;
mod server;
mod session;
pub mod signal;
mod socket;
mod stats;
// Public only with the `bench-internals` feature, for benches/timer.rs; not part of the API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod timer;
#[cfg(not(feature = "bench-internals"))]
mod timer;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;

pub use compose::Kind;
pub use config::{
    Config, ConfigBuilder, ConfigError, Keepalive, Limits, PerIpLimit, RateLimit, SocketOptions,
    DEFAULT_MAX_MESSAGE,
};
pub use conn_map::ConnMap;
pub use context::{Context, TimerId};
pub use handler::{CloseReason, ConnId, Handler, ListenerId};
pub use limits::RateLimiter;
pub use mailbox::{LoopHandle, PostError};
pub use queue::Priority;
pub use reactor::SendError;
pub use server::{Server, ServerHandle};
pub use socket::raise_open_file_limit;
pub use stats::{ErrorKind, SessionStats, StatsSnapshot};
