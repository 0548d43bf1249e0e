//! The netmod frame protocol: what every program says to every other (docs/protocol.md).
//!
//! A frame is a 4-byte big-endian length and a protobuf [`wire::Message`]; the messages
//! themselves are generated from `protos/*.proto` by the workspace's `build.rs`.
//!
//! - [`proto`]: the generated messages, and constructors for values.
//! - [`wire`]: operations, error codes, framing, compression, and the engine glue that reads
//!   frames off a connection and writes them back.
//! - [`placeholders`]: the one parameter syntax (`?`, `?N`, `$N`) statements use on every backend.
//!
//! Depends on the engine (its frame codec and `Context`), never on a server.

#![deny(rust_2018_idioms)]

pub mod placeholders;
pub mod proto;
pub mod wire;
