//! Messages generated from `protos/netmod.proto` (see docs/protocol.md).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/netmod.rs"));
