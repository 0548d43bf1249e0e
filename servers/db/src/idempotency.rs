//! Idempotency keys: a write sent with a key runs once, however often it is sent.
//!
//! The sequence is the same on every backend, inside the write's own transaction:
//!
//! ```text
//! claim(key) ── stored response? ──► the answer is that response (the write does not run again)
//!     │ first with the key (a concurrent write with it waits, then sees the stored response)
//!     ▼
//! run the write ─► store(key, response) ─► the caller commits: write and record together
//! ```
//!
//! The record holds the response without a commit index: a retry is answered with the commit
//! index of its own time, which is at or past the first write's commit, so reading "after" it
//! sees the write. Nothing is recorded after the commit, so there is no window where a crash
//! leaves a committed write without its record. Keys arrive scoped to their user
//! ([`Caller::scoped_key`](crate::workers::Caller::scoped_key)).

use prost::Message as _;

use crate::error::DbError;
use protocol::proto::{data_response, DataResponse, ErrorCode};

/// Where a backend keeps idempotency records, in the write's open transaction.
pub(crate) trait Ledger {
    /// Claims `key` (at `now`, seconds since the epoch, for pruning): `None` when this write is
    /// the first with it, else the response stored by the first.
    fn claim(&mut self, key: &str, now: i64) -> Result<Option<Vec<u8>>, DbError>;
    /// Stores the response of the write that claimed `key`.
    fn store(&mut self, key: &str, now: i64, response: &[u8]) -> Result<(), DbError>;
}

/// What a keyed write came to.
#[derive(Debug)]
pub(crate) enum Keyed {
    /// It ran, and its record is stored in the open transaction (the caller commits it).
    Ran(data_response::Kind),
    /// An earlier write with the key ran: its answer (the caller rolls back).
    Stored(data_response::Kind),
}

/// Claim → run → store for one write; `key` empty: just run. `run` gets the ledger back (it
/// is the write's connection).
pub(crate) fn run_keyed<L: Ledger>(
    ledger: &mut L,
    key: &str,
    now: i64,
    run: impl FnOnce(&mut L) -> Result<data_response::Kind, DbError>,
) -> Result<Keyed, DbError> {
    if key.is_empty() {
        return run(ledger).map(Keyed::Ran);
    }
    if let Some(bytes) = ledger.claim(key, now)? {
        return decode(&bytes).map(Keyed::Stored);
    }
    let kind = run(ledger)?;
    let record = DataResponse {
        kind: Some(kind.clone()),
        commit_index: 0,
    };
    ledger.store(key, now, &record.encode_to_vec())?;
    Ok(Keyed::Ran(kind))
}

/// A stored response's answer. Records of older builds hold a commit index too; a retry
/// answers with its own.
fn decode(bytes: &[u8]) -> Result<data_response::Kind, DbError> {
    DataResponse::decode(bytes)
        .ok()
        .and_then(|r| r.kind)
        .ok_or_else(|| DbError::new(ErrorCode::Internal, "stored response unreadable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::proto::StatementResult;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Memory {
        records: HashMap<String, Vec<u8>>,
        runs: usize,
    }

    impl Ledger for Memory {
        fn claim(&mut self, key: &str, _now: i64) -> Result<Option<Vec<u8>>, DbError> {
            Ok(self.records.get(key).cloned())
        }
        fn store(&mut self, key: &str, _now: i64, response: &[u8]) -> Result<(), DbError> {
            self.records.insert(key.to_string(), response.to_vec());
            Ok(())
        }
    }

    fn write(m: &mut Memory, key: &str, affected: u64) -> Keyed {
        run_keyed(m, key, 1, |m| {
            m.runs += 1;
            Ok(data_response::Kind::Result(StatementResult {
                rows_affected: affected,
                ..Default::default()
            }))
        })
        .unwrap()
    }

    #[test]
    fn a_key_runs_its_write_once_and_answers_the_first_response() {
        let mut m = Memory::default();
        assert!(matches!(write(&mut m, "c:bob:k", 1), Keyed::Ran(_)));
        match write(&mut m, "c:bob:k", 7) {
            Keyed::Stored(data_response::Kind::Result(r)) => assert_eq!(r.rows_affected, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.runs, 1);
        assert!(matches!(write(&mut m, "c:alice:k", 2), Keyed::Ran(_)));
        assert!(matches!(write(&mut m, "", 3), Keyed::Ran(_)));
        assert!(matches!(write(&mut m, "", 3), Keyed::Ran(_)));
        assert_eq!(m.runs, 4);
        assert_eq!(m.records.len(), 2);
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_rerun() {
        let mut m = Memory::default();
        m.records.insert("k".into(), vec![0xff, 0xff]);
        let r = run_keyed(&mut m, "k", 1, |_| unreachable!());
        assert_eq!(r.unwrap_err().code, ErrorCode::Internal);
    }
}
