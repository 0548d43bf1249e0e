//! The hottest messages read in place: their fields borrowed from the frame, nothing
//! allocated. A server looks at a request through a view to route it, and decodes it whole
//! (with prost, owned) only where its work runs — on another thread, or not at all.
//!
//! A view reads what prost would: the last value of a repeated scalar field wins, unknown
//! fields are skipped. What prost would merge (a `oneof` set twice) or refuse (a known field
//! of the wrong wire type, a string that is not UTF-8) a view refuses too, with a
//! [`ViewError`]: the caller then decodes the message the owned way, which merges or says
//! precisely what is wrong.
//!
//! ```
//! use prost::Message as _;
//! use protocol::proto::{DataRequest, Value};
//! use protocol::view::DataRequestView;
//! let req = DataRequest::execute("SELECT v FROM kv WHERE id = ?1", vec![Value::int(1)]);
//! let bytes = req.encode_to_vec();
//! let view = DataRequestView::new(&bytes).unwrap();
//! assert_eq!(view.execute.unwrap().sql, "SELECT v FROM kv WHERE id = ?1");
//! assert!(!view.sandboxed);
//! ```

/// Why a message could not be read in place (decode it the owned way to learn more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not readable in place: {0}")]
pub struct ViewError(pub(crate) &'static str);

/// A frame's `Message`, its payload borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageView<'a> {
    /// `MessageType`, as sent.
    pub r#type: i32,
    pub message_id: u32,
    pub timestamp: u64,
    /// The payload (compressed when `compression` says so).
    pub data: &'a [u8],
    /// `Operation`, as sent.
    pub op: i32,
    /// `Compression`, as sent.
    pub compression: i32,
    /// `Priority`, as sent.
    pub priority: i32,
}

impl<'a> MessageView<'a> {
    /// Reads a frame's body.
    ///
    /// # Errors
    /// A malformed field (see the module's doc).
    pub fn new(body: &'a [u8]) -> Result<Self, ViewError> {
        let mut m = MessageView::default();
        for field in Fields(body) {
            match field? {
                (1, Field::Varint(v)) => m.r#type = v as i32,
                (2, Field::Varint(v)) => m.message_id = v as u32,
                (3, Field::Varint(v)) => m.timestamp = v,
                (4, Field::Bytes(b)) => m.data = b,
                (5, Field::Varint(v)) => m.op = v as i32,
                (6, Field::Varint(v)) => m.compression = v as i32,
                (7, Field::Varint(v)) => m.priority = v as i32,
                (1..=7, _) => return Err(ViewError("a field of the wrong wire type")),
                _ => {}
            }
        }
        Ok(m)
    }
}

/// A `DataRequest`, its strings borrowed; of its kinds only `execute` is read (the one a
/// server routes on every request).
#[derive(Debug, Clone, Copy, Default)]
pub struct DataRequestView<'a> {
    /// The statement, when the request is an `execute`; `None` for any other kind.
    pub execute: Option<StatementView<'a>>,
    pub idempotency_key: &'a str,
    /// `ReadConsistency`, as sent.
    pub consistency: i32,
    pub after_index: u64,
    pub max_result_bytes: u64,
    pub allow_truncation: bool,
    pub sandboxed: bool,
    pub user: &'a str,
    pub timeout_ms: u32,
}

impl<'a> DataRequestView<'a> {
    /// Reads an encoded `DataRequest`.
    ///
    /// # Errors
    /// A malformed field, or the `kind` set more than once (see the module's doc).
    pub fn new(buf: &'a [u8]) -> Result<Self, ViewError> {
        let mut r = DataRequestView::default();
        let mut kinds = 0;
        for field in Fields(buf) {
            match field? {
                (1, Field::Bytes(b)) => {
                    kinds += 1;
                    r.execute = Some(StatementView::new(b)?);
                }
                (2..=7 | 15..=17, Field::Bytes(_)) => {
                    kinds += 1;
                    r.execute = None;
                }
                (10, Field::Bytes(b)) => r.idempotency_key = text(b)?,
                (11, Field::Varint(v)) => r.consistency = v as i32,
                (12, Field::Varint(v)) => r.after_index = v,
                (13, Field::Varint(v)) => r.max_result_bytes = v,
                (14, Field::Varint(v)) => r.allow_truncation = v != 0,
                (18, Field::Varint(v)) => r.sandboxed = v != 0,
                (19, Field::Bytes(b)) => r.user = text(b)?,
                (20, Field::Varint(v)) => r.timeout_ms = v as u32,
                (1..=7 | 10..=20, _) => return Err(ViewError("a field of the wrong wire type")),
                _ => {}
            }
        }
        if kinds > 1 {
            return Err(ViewError("the kind is set more than once"));
        }
        Ok(r)
    }
}

/// A `Statement`'s text, borrowed (its arguments and keys are left where they are).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementView<'a> {
    /// The whole statement, encoded (to decode where it runs).
    pub encoded: &'a [u8],
    pub sql: &'a str,
}

impl<'a> StatementView<'a> {
    /// Reads an encoded `Statement`.
    ///
    /// # Errors
    /// A malformed field (see the module's doc).
    pub fn new(buf: &'a [u8]) -> Result<Self, ViewError> {
        let mut s = StatementView {
            encoded: buf,
            ..StatementView::default()
        };
        for field in Fields(buf) {
            match field? {
                (1, Field::Bytes(b)) => s.sql = text(b)?,
                (2..=4, Field::Bytes(_)) => {}
                (1..=4, _) => return Err(ViewError("a field of the wrong wire type")),
                _ => {}
            }
        }
        Ok(s)
    }
}

/// A `DataResponse`: its commit index, and of its kinds what a writer reads of a batch's
/// answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataResponseView<'a> {
    pub commit_index: u64,
    /// The `batch` answer, still encoded; `None` for any other kind.
    batch: Option<&'a [u8]>,
}

impl<'a> DataResponseView<'a> {
    /// Reads an encoded `DataResponse`.
    ///
    /// # Errors
    /// A malformed field, or the `kind` set more than once (see the module's doc).
    pub fn new(buf: &'a [u8]) -> Result<Self, ViewError> {
        let mut r = DataResponseView::default();
        let mut kinds = 0;
        for field in Fields(buf) {
            match field? {
                (2, Field::Bytes(b)) => {
                    kinds += 1;
                    r.batch = Some(b);
                }
                (1 | 3..=6, Field::Bytes(_)) => {
                    kinds += 1;
                    r.batch = None;
                }
                (10, Field::Varint(v)) => r.commit_index = v,
                (1..=6 | 10, _) => return Err(ViewError("a field of the wrong wire type")),
                _ => {}
            }
        }
        if kinds > 1 {
            return Err(ViewError("the kind is set more than once"));
        }
        Ok(r)
    }

    /// Whether it is a batch's answer.
    pub fn is_batch(&self) -> bool {
        self.batch.is_some()
    }

    /// For a batch's answer, its first step: `Some(rows_affected)` when it ran, `None` when it
    /// failed or was skipped. `Ok(None)` too for an answer that is not a batch's or has no step.
    ///
    /// # Errors
    /// A malformed step (see the module's doc).
    pub fn first_step_rows_affected(&self) -> Result<Option<u64>, ViewError> {
        let Some(batch) = self.batch else {
            return Ok(None);
        };
        // BatchResult { repeated StepOutcome steps = 1 }: the first one only.
        let Some(step) = Fields(batch).find_map(|f| match f {
            Ok((1, Field::Bytes(b))) => Some(Ok(b)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }) else {
            return Ok(None);
        };
        // StepOutcome { oneof { StatementResult ok = 1; Error error = 2; bool skipped = 3 } }:
        // the last of the oneof's fields wins.
        let mut ok = None;
        for field in Fields(step?) {
            match field? {
                (1, Field::Bytes(result)) => {
                    // StatementResult.rows_affected = 3 (the last one wins).
                    let mut rows = 0;
                    for f in Fields(result) {
                        if let (3, Field::Varint(v)) = f? {
                            rows = v;
                        }
                    }
                    ok = Some(rows);
                }
                (2 | 3, _) => ok = None,
                _ => {}
            }
        }
        Ok(ok)
    }
}

fn text(b: &[u8]) -> Result<&str, ViewError> {
    std::str::from_utf8(b).map_err(|_| ViewError("a string that is not UTF-8"))
}

/// One field of an encoded message.
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of an encoded message, in order: `(tag, value)`, or one error and the end.
pub(crate) struct Fields<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        use prost::encoding::{decode_key, decode_varint, WireType};
        if self.0.is_empty() {
            return None;
        }
        let step = |buf: &mut &'a [u8]| -> Result<(u32, Field<'a>), ViewError> {
            let (tag, wire) = decode_key(buf).map_err(|_| ViewError("a bad field key"))?;
            let field = match wire {
                WireType::Varint => {
                    Field::Varint(decode_varint(buf).map_err(|_| ViewError("a bad varint"))?)
                }
                WireType::LengthDelimited => {
                    let len = decode_varint(buf).map_err(|_| ViewError("a bad length"))?;
                    let len = usize::try_from(len).map_err(|_| ViewError("length too large"))?;
                    if len > buf.len() {
                        return Err(ViewError("buffer underflow"));
                    }
                    let (b, rest) = buf.split_at(len);
                    *buf = rest;
                    Field::Bytes(b)
                }
                WireType::ThirtyTwoBit | WireType::SixtyFourBit => {
                    let n = if wire == WireType::ThirtyTwoBit { 4 } else { 8 };
                    if n > buf.len() {
                        return Err(ViewError("buffer underflow"));
                    }
                    *buf = &buf[n..];
                    Field::Fixed
                }
                _ => return Err(ViewError("groups are not used")),
            };
            Ok((tag, field))
        };
        let r = step(&mut self.0);
        if r.is_err() {
            self.0 = &[]; // one error, then the end
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{data_request, DataRequest, ReadConsistency, Statement, TxnEnd, Value};
    use crate::wire::{self, MessageType, Operation};
    use prost::Message as _;

    #[test]
    fn a_view_reads_what_prost_reads() {
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(
                Statement::new("SELECT 1", vec![Value::text("x")]).with_keys(vec!["k".into()]),
            )),
            idempotency_key: "key".into(),
            consistency: ReadConsistency::AfterIndex as i32,
            after_index: 42,
            max_result_bytes: 1000,
            allow_truncation: true,
            sandboxed: true,
            user: "alice".into(),
            timeout_ms: 250,
        };
        let bytes = req.encode_to_vec();
        let v = DataRequestView::new(&bytes).unwrap();
        let st = v.execute.unwrap();
        assert_eq!(st.sql, "SELECT 1");
        assert_eq!(v.idempotency_key, "key");
        assert_eq!(v.consistency, ReadConsistency::AfterIndex as i32);
        assert_eq!((v.after_index, v.max_result_bytes), (42, 1000));
        assert!(v.allow_truncation && v.sandboxed);
        assert_eq!((v.user, v.timeout_ms), ("alice", 250));

        let msg = wire::message(MessageType::Request, Operation::Data, 9, &req);
        let body = msg.encode_to_vec();
        let m = MessageView::new(&body).unwrap();
        assert_eq!((m.r#type, m.op), (msg.r#type, msg.op));
        assert_eq!((m.message_id, m.timestamp), (9, msg.timestamp));
        assert_eq!(m.data, &msg.data[..]);
    }

    #[test]
    fn a_batch_answer_is_read_in_place() {
        use crate::proto::{
            data_response, step_outcome, BatchResult, DataResponse, StatementResult, StepOutcome,
        };
        let answer = |steps: Vec<Option<step_outcome::Outcome>>| {
            DataResponse {
                kind: Some(data_response::Kind::Batch(BatchResult {
                    steps: steps
                        .into_iter()
                        .map(|outcome| StepOutcome { outcome })
                        .collect(),
                })),
                commit_index: 17,
            }
            .encode_to_vec()
        };
        let ran = |n| {
            Some(step_outcome::Outcome::Ok(StatementResult {
                rows_affected: n,
                ..Default::default()
            }))
        };
        let read = |b: &[u8]| {
            let v = DataResponseView::new(b).unwrap();
            (v.commit_index, v.first_step_rows_affected().unwrap())
        };
        assert_eq!(read(&answer(vec![ran(1), ran(0)])), (17, Some(1)));
        assert_eq!(read(&answer(vec![ran(0), ran(1)])), (17, Some(0)));
        assert_eq!(
            read(&answer(vec![Some(step_outcome::Outcome::Skipped(true))])),
            (17, None)
        );
        assert_eq!(read(&answer(vec![])), (17, None));
        let other = DataResponse {
            kind: Some(data_response::Kind::Result(StatementResult::default())),
            commit_index: 3,
        }
        .encode_to_vec();
        assert_eq!(read(&other), (3, None));
    }

    #[test]
    fn other_kinds_are_not_an_execute() {
        let req = DataRequest {
            kind: Some(data_request::Kind::Commit(TxnEnd { txn_id: 1, seq: 2 })),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert!(DataRequestView::new(&bytes).unwrap().execute.is_none());
    }

    #[test]
    fn what_prost_would_merge_or_refuse_is_refused() {
        let one = DataRequest::execute("SELECT 1", vec![]).encode_to_vec();
        let two = [one.clone(), one].concat();
        assert!(DataRequestView::new(&two).is_err(), "a kind set twice");
        // Field 1 (execute) as a varint.
        assert!(DataRequestView::new(&[0x08, 0x01]).is_err());
        // A user that is not UTF-8: field 19, length 1.
        assert!(DataRequestView::new(&[0x9a, 0x01, 0x01, 0xff]).is_err());
        assert!(DataRequest::decode(&[0x9a, 0x01, 0x01, 0xff][..]).is_err());
        // Cut short.
        assert!(MessageView::new(&[0x22, 0x05, 0x01]).is_err());
    }
}
