//! Interactive transactions and cursors on PostgreSQL: a connection of their own each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::values::{columns, rows_of};
use super::{Endpoint, Pg};
use crate::error::DbError;
use crate::libpq::{self, TxnState};
use crate::page::{self, Limit, SizedRow};
use crate::txn::{Opener, Page, Purpose, TxnConn};
use protocol::proto::{Column, ErrorCode, Statement, StatementResult};

/// A PostgreSQL connection holding an interactive transaction or a cursor.
struct PgTxn(Pg);

/// Opens connections for interactive transactions (REPEATABLE READ: one snapshot, and a write
/// that conflicts with a concurrent commit fails BUSY) and cursors (the same, read-only): to
/// `primary` for db-server's own callers, to `client` (the client login) for clients'. A
/// client's connection serves that transaction only and is closed with it.
pub fn txn_opener(primary: Endpoint, client: Endpoint) -> Opener {
    Arc::new(move |purpose: Purpose, sandboxed: bool| {
        let mut pg = if sandboxed {
            let mut pg = client.connect()?;
            pg.owned_by_one();
            pg
        } else {
            primary.connect()?
        };
        pg.exec(match purpose {
            Purpose::Transaction => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Purpose::Cursor => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        Ok(Box::new(PgTxn(pg)) as Box<dyn TxnConn>)
    })
}

impl TxnConn for PgTxn {
    fn execute(
        &mut self,
        st: &Statement,
        limit: Limit,
    ) -> Result<(StatementResult, bool), DbError> {
        self.0.execute(st, limit)
    }

    fn commit(&mut self, wrote: bool, committed: &AtomicU64) -> Result<u64, DbError> {
        if self.0.txn_state() == TxnState::Failed {
            return Err(DbError::new(
                ErrorCode::BadRequest,
                "a statement of this transaction failed, so it can only roll back",
            ));
        }
        self.0.exec("COMMIT")?;
        if wrote {
            self.0.current_lsn()
        } else {
            Ok(committed.load(Ordering::Acquire))
        }
    }

    fn rollback(&mut self) {
        let _ = self.0.exec("ROLLBACK");
    }

    fn cursor(
        &mut self,
        st: &Statement,
        page_rows: usize,
        limit: Limit,
        page: &mut dyn FnMut(Result<Page, DbError>) -> bool,
    ) {
        if let Some(at) = limit.deadline.filter(|_| self.0.is_client()) {
            // The cursor's statement stops at the cursor's end (its connection is its own).
            let set = format!(
                "SET statement_timeout = {}",
                crate::deadline::remaining_ms(at)
            );
            if let Err(e) = self.0.exec(&set) {
                page(Err(e));
                return;
            }
        }
        let (t, params) = match self.0.bind(st) {
            Ok(b) => b,
            Err(e) => {
                page(Err(e));
                return;
            }
        };
        let mut stream = match self.0.conn.stream(&t.sql, &params, page_rows.min(4096)) {
            Ok(s) => s,
            Err(e) => {
                page(Err(e.into()));
                return;
            }
        };
        let mut columns_sent = false;
        let mut types: Vec<libpq::Oid> = Vec::new();
        let mut pending: std::vec::IntoIter<SizedRow> = Vec::new().into_iter();
        let mut carry = None;
        let mut cols: Vec<Column> = Vec::new();
        loop {
            let r = page::fill(page_rows, limit, Some(&mut carry), || loop {
                if let Some(r) = pending.next() {
                    return Ok(Some(r));
                }
                let Some(res) = stream.next_result()? else {
                    return Ok(None);
                };
                if types.is_empty() && res.columns() > 0 {
                    cols = columns(&res);
                    types = (0..res.columns()).map(|c| res.column_type(c)).collect();
                }
                pending = rows_of(&res, &types);
            });
            let done = !matches!(r, Ok((_, false)));
            let more = page(r.map(|(rows, done)| Page {
                columns: if columns_sent {
                    Vec::new()
                } else {
                    columns_sent = true;
                    std::mem::take(&mut cols)
                },
                rows,
                done,
            }));
            if done {
                return;
            }
            if !more {
                // Closed early: stop the server rather than read the rest.
                return stream.cancel();
            }
        }
    }
}
