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
            ..Default::default()
        }
    }

    /// The same statement naming the keys of the rows it writes, for change notices (see
    /// `Statement.keys` in data.proto).
    #[must_use]
    pub fn with_keys(mut self, keys: Vec<String>) -> Self {
        self.keys = keys;
        self
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

use crate::view::{Field, Fields};

/// A `TablesChanged` notice read in place: its tables and keys borrowed from the frame, nothing
/// allocated (a cache hears one per write).
///
/// ```
/// use prost::Message as _;
/// let notice = protocol::proto::TablesChanged {
///     tables: vec!["docs".into()],
///     commit_index: 7,
///     keys: vec!["a".into(), "b".into()],
/// };
/// let bytes = notice.encode_to_vec();
/// let view = protocol::proto::ChangeNotice::new(&bytes).unwrap();
/// assert_eq!(view.tables().collect::<Vec<_>>(), ["docs"]);
/// assert_eq!(view.keys().collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(view.commit_index(), 7);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ChangeNotice<'a> {
    buf: &'a [u8],
    commit_index: u64,
}

impl<'a> ChangeNotice<'a> {
    /// Checks `buf` (an encoded `TablesChanged`) once; the iterators then read it again.
    ///
    /// # Errors
    /// The bytes are not a `TablesChanged` (a malformed field, a name that is not UTF-8).
    pub fn new(buf: &'a [u8]) -> Result<Self, NoticeError> {
        let mut commit_index = 0;
        for field in Fields(buf) {
            match field.map_err(|e| NoticeError(e.0))? {
                (1 | 3, Field::Bytes(b)) => {
                    std::str::from_utf8(b).map_err(|_| NoticeError("a name that is not UTF-8"))?;
                }
                (2, Field::Varint(v)) => commit_index = v,
                _ => {}
            }
        }
        Ok(ChangeNotice { buf, commit_index })
    }

    /// The tables the write changed (`"*"`: any).
    pub fn tables(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.strings(1)
    }

    /// The keys of the rows changed; none: any row of the tables.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.strings(3)
    }

    /// The commit index of the write.
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    fn strings(&self, tag: u32) -> impl Iterator<Item = &'a str> + 'a {
        Fields(self.buf).filter_map(move |f| match f {
            // Checked in `new`.
            Ok((t, Field::Bytes(b))) if t == tag => std::str::from_utf8(b).ok(),
            _ => None,
        })
    }
}

/// Why a change notice could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed change notice: {0}")]
pub struct NoticeError(&'static str);
