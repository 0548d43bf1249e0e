//! One result of a statement (PgResult): rows, columns, values, the command tag.

use super::*;

/// One result of a statement; freed on drop.
#[derive(Debug)]
pub struct PgResult {
    pub(super) raw: NonNull<ffi::PGresult>,
}

// SAFETY: a PGresult is plain memory owned by this value alone; nothing else points into it.
unsafe impl Send for PgResult {}

impl Drop for PgResult {
    fn drop(&mut self) {
        // SAFETY: `raw` came from libpq and is cleared exactly once.
        unsafe { ffi::PQclear(self.raw.as_ptr()) }
    }
}

/// The text at `p`, trimmed; empty for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(super) unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libpq returns NUL-terminated strings that live as long as their owner.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

impl PgResult {
    pub(super) fn status(&self) -> ffi::ExecStatusType {
        // SAFETY: valid result pointer.
        unsafe { ffi::PQresultStatus(self.raw.as_ptr()) }
    }

    pub(super) fn error(&self) -> PgError {
        // SAFETY: valid result pointer; the returned strings belong to it.
        let (state, msg) = unsafe {
            (
                ffi::PQresultErrorField(self.raw.as_ptr(), ffi::PG_DIAG_SQLSTATE as c_int),
                ffi::PQresultErrorMessage(self.raw.as_ptr()),
            )
        };
        // SAFETY: both are NULL or strings owned by this result, alive while `self` is.
        let (sqlstate, message) = unsafe { (owned(state), owned(msg)) };
        PgError {
            sqlstate,
            message: message.trim_start_matches("ERROR:").trim().to_string(),
        }
    }

    /// Rows in the result.
    pub fn rows(&self) -> usize {
        // SAFETY: valid result pointer.
        usize::try_from(unsafe { ffi::PQntuples(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// Columns in the result.
    pub fn columns(&self) -> usize {
        // SAFETY: valid result pointer.
        usize::try_from(unsafe { ffi::PQnfields(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// The name of column `col`.
    pub fn column_name(&self, col: usize) -> String {
        // SAFETY: valid result pointer; libpq checks the index and returns NULL when out of range.
        unsafe { owned(ffi::PQfname(self.raw.as_ptr(), col as c_int)) }
    }

    /// The type of column `col`.
    pub fn column_type(&self, col: usize) -> Oid {
        // SAFETY: as above; out of range gives 0.
        unsafe { ffi::PQftype(self.raw.as_ptr(), col as c_int) }
    }

    /// The text of a value, `None` for NULL (or out of range).
    pub fn value(&self, row: usize, col: usize) -> Option<&[u8]> {
        if row >= self.rows() || col >= self.columns() {
            return None;
        }
        let (r, c) = (row as c_int, col as c_int);
        // SAFETY: indexes checked above; the bytes live as long as `self`.
        unsafe {
            if ffi::PQgetisnull(self.raw.as_ptr(), r, c) != 0 {
                return None;
            }
            let p = ffi::PQgetvalue(self.raw.as_ptr(), r, c) as *const u8;
            let len = usize::try_from(ffi::PQgetlength(self.raw.as_ptr(), r, c)).unwrap_or(0);
            Some(std::slice::from_raw_parts(p, len))
        }
    }

    /// Rows an INSERT, UPDATE, DELETE or MERGE changed (0 for other commands).
    pub fn rows_affected(&self) -> u64 {
        // SAFETY: valid result pointer; the string belongs to it.
        unsafe { owned(ffi::PQcmdTuples(self.raw.as_ptr())) }
            .parse()
            .unwrap_or(0)
    }

    /// The command tag's first word (`SELECT`, `INSERT`, …).
    pub fn command(&self) -> String {
        // SAFETY: valid result pointer; the string belongs to it.
        let tag = unsafe { owned(ffi::PQcmdStatus(self.raw.as_ptr())) };
        tag.split(' ').next().unwrap_or_default().to_string()
    }
}
