//! The tools around the servers.
//!
//! - [`client`]: a blocking frame client, for people (the `client` binary) and for tests.
//! - [`loadgen`]: the load generator, itself an engine client (`loadgen` binary).
//! - [`httpload`]: its HTTP/1.1 mode (`loadgen http`).
//! - [`output`]: standard output that ends quietly on a closed pipe ([`say!`]).
//!
//! The `stack` binary (one machine's whole system: db-server, test-servers, proxy) lives in
//! `src/bin/stack.rs` and runs the other binaries as child processes.
//!
//! Depends on the engine, the protocol and the shared server code; never on a server crate.

#![deny(rust_2018_idioms)]

pub mod client;
pub mod httpload;
pub mod loadgen;
pub mod output;
