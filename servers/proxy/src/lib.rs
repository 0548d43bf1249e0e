//! The reverse proxy and load balancer, on the engine: HTTP/1.1 (keep-alive, pipelining,
//! streamed bodies, upgrades) or raw TCP, over a shared [`pool::Pool`] of backends with active
//! and passive health checks, and an admin API on a second listener.
//!
//! # One HTTP exchange
//!
//! ```text
//! client bytes ─► head parsed ─► backend chosen (strategy, healthy, not draining)
//!      │                            └─► idle keep-alive connection, or a new one
//!      ├─ head rewritten (hop-by-hop out, X-Forwarded-*, X-Request-Id) and sent
//!      ├─ body streamed as it arrives (Content-Length or chunked), paused while the backend
//!      │  connection's output is above the high-water mark
//! backend bytes ─► response head rewritten ─► body streamed back, paused the same way
//!      └─ done: backend connection back to this loop's idle list, next pipelined request
//! ```
//!
//! A backend connection that fails before any response byte is retried on another backend if
//! the request is idempotent (or the connection never opened) and fits the retry budget
//! (≤ 20 % of requests); otherwise the client gets 502. No backend up: 503. No answer within the
//! response timeout: 504. Every error body is JSON.
//!
//! Each loop keeps its own connections and idle lists; the pool (membership, health,
//! counters, strategy) is shared. Health checks and the periodic `[METRIC]` lines run on loop 0.

pub mod admin;
pub mod config;
mod handler;
pub mod headers;
pub mod pool;
pub mod strategy;

pub use config::{CheckConfig, Mode, ProxyConfig};
pub use handler::{assemble, Admin, Checks, Clients, Proxy, Timer, Upstreams, CHECK, UPSTREAM};
