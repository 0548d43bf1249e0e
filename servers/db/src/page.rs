//! Rows into results and cursor pages under a size limit, the same way on every backend.

use super::error::DbError;
use protocol::proto::{ErrorCode, Row};

/// What one request's statements may take: result size, and time.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Bytes of rows (estimated as encoded) a result may carry.
    pub max_bytes: usize,
    /// Over the limit: cut and flag `truncated` instead of failing with TOO_LARGE.
    pub truncate: bool,
    /// When the statements must have stopped (see [`crate::deadline`]); `None`: no deadline.
    pub deadline: Option<std::time::Instant>,
    /// Whose session state the statements may see, on a PostgreSQL client connection: the
    /// state one user's statements leave there reaches only that user's next ones (a hash of
    /// the user; 0: nobody's, always reset first).
    pub owner: u64,
}

/// A row and its estimated encoded size.
pub type SizedRow = (Row, usize);

/// Collects rows from `next` until `max_rows`, the size limit, or the end. Returns the rows and
/// whether the end was reached.
///
/// Over the limit, `limit.truncate` cuts the rows (else TOO_LARGE). With `carry` (a cursor),
/// the row that did not fit is kept there for the next page, and a page always takes at least
/// one row, so that a cursor moves on even past a row bigger than a page.
pub fn fill(
    max_rows: usize,
    limit: Limit,
    mut carry: Option<&mut Option<SizedRow>>,
    mut next: impl FnMut() -> Result<Option<SizedRow>, DbError>,
) -> Result<(Vec<Row>, bool), DbError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < max_rows {
        let held = carry.as_deref_mut().and_then(Option::take);
        let Some((row, size)) = (match held {
            Some(r) => Some(r),
            None => next()?,
        }) else {
            return Ok((out, true));
        };
        if bytes + size > limit.max_bytes && !(carry.is_some() && out.is_empty()) {
            if !limit.truncate {
                return Err(DbError::new(
                    ErrorCode::TooLarge,
                    format!("result over the limit of {} bytes", limit.max_bytes),
                ));
            }
            if let Some(c) = carry {
                *c = Some((row, size));
            }
            return Ok((out, false));
        }
        bytes += size;
        out.push(row);
    }
    Ok((out, false))
}
