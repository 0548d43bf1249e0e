//! What the backends' workers are given: jobs, where they answer, and which statements may be
//! run outside the server's own transaction handling.

use super::error::DbError;
use super::page::Limit;
use super::reply::ReplyTo;
use protocol::proto::{Batch, ErrorCode, ReadConsistency, Statement};

/// What a job asks for.
#[derive(Debug, Clone)]
pub enum Work {
    /// One statement, autocommit.
    Execute(Statement),
    /// An atomic batch.
    Batch(Batch),
}

/// One request for a worker.
pub struct Job {
    /// The work.
    pub work: Work,
    /// Writes: the idempotency key ("" for none).
    pub idempotency_key: String,
    /// Result size limit.
    pub limit: Limit,
    /// Where a read may run: PRIMARY, ANY_REPLICA, or AFTER_INDEX.
    pub consistency: ReadConsistency,
    /// With AFTER_INDEX: the commit index the read must see.
    pub after_index: u64,
    /// Where the outcome goes.
    pub reply: ReplyTo,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("work", &self.work).finish()
    }
}

/// First SQL keyword, as written, skipping white space and comments (no allocation: this runs
/// on the event loop for every request).
pub fn first_keyword(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

/// True when `sql` starts with one of `keywords` (upper case), in any case.
pub(crate) fn starts_with_keyword(sql: &str, keywords: &[&str]) -> bool {
    let k = first_keyword(sql);
    keywords.iter().any(|w| w.eq_ignore_ascii_case(k))
}

/// First keywords of statements that may be reads (the backend has the last word).
pub(crate) const READ_KEYWORDS: &[&str] = &["SELECT", "WITH", "VALUES", "EXPLAIN", "SHOW", "TABLE"];

/// Refuses work holding statements that would break the server's own transaction handling.
pub(crate) fn check_allowed(work: &Work) -> Result<(), DbError> {
    match work {
        Work::Execute(st) => check_statement(st),
        Work::Batch(b) => b
            .steps
            .iter()
            .filter_map(|step| step.stmt.as_ref())
            .try_for_each(check_statement),
    }
}

/// Refuses a statement that would break the server's own transaction handling.
pub(crate) fn check_statement(st: &Statement) -> Result<(), DbError> {
    const FORBIDDEN: &[&str] = &[
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "ATTACH",
        "DETACH",
        "VACUUM",
    ];
    if super::sandbox::is_marked(&st.sql)
        && starts_with_keyword(&st.sql, super::sandbox::REFUSED_STATEMENTS)
    {
        // What the sandbox refuses gets the sandbox's code, however it is first noticed.
        return Err(DbError::new(
            ErrorCode::Forbidden,
            "not authorized: ATTACH, DETACH, SET, RESET and DO are not for clients",
        ));
    }
    if starts_with_keyword(&st.sql, FORBIDDEN) {
        return Err(DbError::new(
            ErrorCode::BadRequest,
            "transaction control and ATTACH/DETACH/VACUUM are not allowed in statements; use a batch",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{first_keyword, starts_with_keyword};

    #[test]
    fn first_keyword_skips_space_and_comments() {
        assert_eq!(first_keyword("  select 1"), "select");
        assert_eq!(first_keyword("-- note\n /* x */ Insert into t"), "Insert");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("commit;"), "commit");
        assert!(starts_with_keyword("  commit;", &["BEGIN", "COMMIT"]));
        assert!(!starts_with_keyword("committed_rows", &["COMMIT"]));
    }
}
