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

impl Statement {
    /// `sql` with positional arguments.
    pub fn new(sql: impl Into<String>, args: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            args,
            named_args: Vec::new(),
        }
    }
}

impl BatchStep {
    /// A step that always runs.
    pub fn new(sql: impl Into<String>, args: Vec<Value>) -> Self {
        BatchStep {
            stmt: Some(Statement::new(sql, args)),
            ..Default::default()
        }
    }
}

impl DataRequest {
    /// One statement on its own.
    pub fn execute(sql: impl Into<String>, args: Vec<Value>) -> Self {
        DataRequest {
            kind: Some(data_request::Kind::Execute(Statement::new(sql, args))),
            ..Default::default()
        }
    }

    /// An atomic batch of `steps`.
    pub fn batch(steps: Vec<BatchStep>) -> Self {
        DataRequest {
            kind: Some(data_request::Kind::Batch(Batch { steps })),
            ..Default::default()
        }
    }
}
