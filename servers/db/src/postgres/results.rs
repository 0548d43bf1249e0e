//! Reading one statement's results into a response, and why a pipelined statement has none.

use super::*;

/// Why a statement of a pipeline has no result.
pub(super) enum Fail {
    /// Another statement of its transaction failed first; it did not run.
    Aborted,
    Db(DbError),
}

impl From<PgError> for Fail {
    fn from(e: PgError) -> Self {
        if e.sqlstate == libpq::ABORTED {
            Fail::Aborted
        } else {
            Fail::Db(e.into())
        }
    }
}

/// Reads one statement's results from `stream` into a result under `limit`; also says whether
/// the statement may have written.
pub(super) fn read_result(
    stream: &mut RowStream<'_>,
    limit: Limit,
    start: Instant,
) -> Result<(StatementResult, bool), Fail> {
    struct Collect {
        out: StatementResult,
        types: Vec<libpq::Oid>,
        pending: std::vec::IntoIter<SizedRow>,
        last: Option<PgResult>,
    }
    impl Collect {
        fn take(&mut self, res: PgResult) {
            if self.out.columns.is_empty() && res.columns() > 0 {
                self.out.columns = columns(&res);
                self.types = (0..res.columns()).map(|c| res.column_type(c)).collect();
            }
            self.pending = rows_of(&res, &self.types);
            self.last = Some(res);
        }
    }
    let mut c = Collect {
        out: StatementResult::default(),
        types: Vec::new(),
        pending: Vec::new().into_iter(),
        last: None,
    };
    // The first result apart: an aborted statement says so there.
    if let Some(res) = stream.next_result()? {
        c.take(res);
    }
    let (rows, done) = page::fill(usize::MAX, limit, None, || loop {
        if let Some(r) = c.pending.next() {
            return Ok(Some(r));
        }
        let Some(res) = stream.next_result()? else {
            return Ok(None);
        };
        c.take(res);
    })
    .map_err(Fail::Db)?;
    // Read what is left (a cut result), so the final command tag is known.
    while let Some(res) = stream.next_result()? {
        c.last = Some(res);
    }
    let (mut out, last) = (c.out, c.last);
    let command = last.as_ref().map(PgResult::command).unwrap_or_default();
    let wrote = !reads_only(&command);
    out.rows = rows;
    out.truncated = !done;
    out.rows_read = out.rows.len() as u64;
    if wrote {
        out.rows_affected = last.as_ref().map_or(0, PgResult::rows_affected);
        out.rows_written = out.rows_affected;
    }
    out.duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok((out, wrote))
}
