//! Rows of one statement read as they come (RowStream), and the names of common types.

use super::*;

/// The results of one statement started by [`PgConn::stream`]: chunks of rows, then a last,
/// row-less result carrying the command tag. Dropping it early reads and discards the rest,
/// so the connection is ready for the next statement.
pub struct RowStream<'c> {
    pub(super) conn: &'c mut PgConn,
    pub(super) finished: bool,
}

impl RowStream<'_> {
    /// The next result (a chunk of rows, or the final one), `None` after the last.
    pub fn next_result(&mut self) -> Result<Option<PgResult>, PgError> {
        if self.finished {
            return Ok(None);
        }
        // SAFETY: valid connection pointer.
        let r = unsafe { ffi::PQgetResult(self.conn.raw.as_ptr()) };
        if r.is_null() {
            self.finished = true;
            return Ok(None);
        }
        // SAFETY: a fresh result of this connection, owned by nobody yet.
        let r = unsafe { self.conn.check(r) };
        if let Err(e) = &r {
            // A name of ours gone (a client's DEALLOCATE) or taken (its PREPARE): what the
            // cache says of the session is wrong.
            if self.conn.inline && (e.sqlstate == "26000" || e.sqlstate == "42P05") {
                self.conn.forget_prepared();
                self.conn.lost_names = true;
            }
            self.drain();
        }
        r.map(Some)
    }

    /// Asks the server to stop the statement, then discards what already came: for a reader
    /// that wants no more rows of a large result. Inside a transaction this fails it.
    pub fn cancel(mut self) {
        if self.finished {
            return;
        }
        // SAFETY: valid connection pointer; the cancel object is freed here.
        unsafe {
            let c = ffi::PQgetCancel(self.conn.raw.as_ptr());
            if !c.is_null() {
                let mut buf = [0 as c_char; 256];
                ffi::PQcancel(c, buf.as_mut_ptr(), buf.len() as c_int);
                ffi::PQfreeCancel(c);
            }
        }
        self.drain();
    }

    pub(super) fn drain(&mut self) {
        // SAFETY: valid connection pointer; every result is cleared.
        unsafe {
            loop {
                let r = ffi::PQgetResult(self.conn.raw.as_ptr());
                if r.is_null() {
                    break;
                }
                ffi::PQclear(r);
            }
        }
        self.finished = true;
    }
}

impl Drop for RowStream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.drain();
        }
    }
}

/// The name PostgreSQL gives a common type; empty for others.
pub fn type_name(t: Oid) -> &'static str {
    match t {
        oid::BOOL => "bool",
        oid::BYTEA => "bytea",
        18 => "char",
        19 => "name",
        oid::INT8 => "int8",
        oid::INT2 => "int2",
        oid::INT4 => "int4",
        25 => "text",
        oid::OID => "oid",
        114 => "json",
        oid::FLOAT4 => "float4",
        oid::FLOAT8 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1700 => "numeric",
        2950 => "uuid",
        3220 => "pg_lsn",
        3802 => "jsonb",
        _ => "",
    }
}
