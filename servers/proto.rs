//! Messages generated from `protos/netmod.proto` (see docs/protocol.md).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/netmod.rs"));

impl Value {
    /// SQL NULL.
    pub fn null() -> Self {
        Value {
            kind: Some(value::Kind::Null(true)),
        }
    }
    /// An integer.
    pub fn int(v: i64) -> Self {
        Value {
            kind: Some(value::Kind::Integer(v)),
        }
    }
    /// A float.
    pub fn real(v: f64) -> Self {
        Value {
            kind: Some(value::Kind::Real(v)),
        }
    }
    /// Text.
    pub fn text(v: impl Into<String>) -> Self {
        Value {
            kind: Some(value::Kind::Text(v.into())),
        }
    }
    /// A blob.
    pub fn blob(v: impl Into<::prost::bytes::Bytes>) -> Self {
        Value {
            kind: Some(value::Kind::Blob(v.into())),
        }
    }
}
