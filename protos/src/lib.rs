//! The netmod frame protocol: what every program says to every other (docs/protocol.md).
//!
//! A frame is a 4-byte big-endian length and a protobuf [`wire::Message`]; the messages
//! themselves are generated from `protos/*.proto` by the workspace's `build.rs`.
//!
//! - [`frame`]: the 4-byte length prefix, checked against the maximum before anything is read.
//! - [`proto`]: the generated messages, and constructors for values.
//! - [`wire`]: operations, error codes, message encoding and decoding, compression, and the
//!   frame-by-frame reading of a byte stream ([`wire::next_frame`]).
//! - [`view`]: the hottest messages read in place, nothing allocated, for routing.
//! - [`placeholders`]: the one parameter syntax (`?`, `?N`, `$N`) statements use on every backend.
//!
//! A codec and nothing more: it depends on no event loop (neither the engine nor any other), so
//! the blocking client, a tokio program or a test links it alone. The glue that reads frames
//! off an engine connection and writes them back is `shared::wire` (servers/shared).

#![deny(rust_2018_idioms)]

pub mod frame;
pub mod placeholders;
pub mod proto;
pub mod view;
pub mod wire;
