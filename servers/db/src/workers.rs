//! What the backends' workers are given: jobs, where they answer, and which statements may be
//! run outside the server's own transaction handling.

use super::error::DbError;
use super::page::Limit;
use super::reply::ReplyTo;
use prost::Message as _;
use protocol::proto::{Batch, ErrorCode, ReadConsistency, Statement};

/// What a job asks for.
#[derive(Debug, Clone)]
pub enum Work {
    /// One statement, autocommit.
    Execute(Statement),
    /// An atomic batch.
    Batch(Batch),
}

/// On whose behalf a request runs: a typed field of every job, transaction and cursor, never a
/// mark in the SQL text.
///
/// A sandboxed caller's statements run on the client connections, under the client identity
/// (see [`crate::sandbox`]); the servers' own statements never share a connection with them.
/// `user` scopes what a user owns on db-server: idempotency keys, transactions and cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Run as a client (`DataRequest.sandboxed`).
    pub sandboxed: bool,
    /// The end user a server forwards the request for (`DataRequest.user`; "" for none).
    pub user: String,
}

impl Caller {
    /// The servers' own work (test-server's logins and documents, db-server's direct clients).
    pub fn server() -> Caller {
        Caller::default()
    }

    /// `key` in this caller's namespace: the same key from another user is another key. The
    /// user's length comes first, so no (user, key) pair can spell another's.
    pub fn scoped_key(&self, key: String) -> String {
        if key.is_empty() || (self.user.is_empty() && !self.sandboxed) {
            return key;
        }
        let who = if self.sandboxed { "c" } else { "s" };
        format!("{who}{}:{}:{key}", self.user.len(), self.user)
    }
}

/// One request for a worker.
pub struct Job {
    /// The work.
    pub work: Work,
    /// A statement the loop only looked at (a point read, routed from a view of the request):
    /// still encoded, decoded into `work` by the worker. Empty otherwise.
    pub encoded: Vec<u8>,
    /// On whose behalf it runs.
    pub caller: Caller,
    /// Writes: the idempotency key, already scoped to the caller ([`Caller::scoped_key`]; ""
    /// for none).
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

impl Job {
    /// Decodes the statement the loop left encoded (see [`Job::encoded`]) into `work`; its
    /// buffer, emptied, goes back to the loop with the answer, to carry another request.
    ///
    /// # Errors
    /// `BAD_MESSAGE` when the statement does not decode (the loop read only its text).
    pub(crate) fn decode(&mut self) -> Result<(), DbError> {
        if self.encoded.is_empty() {
            return Ok(());
        }
        let decoded = Statement::decode(&self.encoded[..]);
        self.encoded.clear();
        self.reply.give_back(std::mem::take(&mut self.encoded));
        let st = decoded
            .map_err(|e| DbError::new(ErrorCode::BadMessage, format!("bad DataRequest: {e}")))?;
        self.work = Work::Execute(st);
        Ok(())
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("work", &self.work)
            .field("caller", &self.caller)
            .finish()
    }
}

/// First SQL keyword, as written, skipping white space and comments (no allocation: this runs
/// on the event loop for every request). Comments are read as PostgreSQL reads them: `--` ends
/// at `\n` or `\r`, and `/* … */` nests.
pub fn first_keyword(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest
                .find(['\n', '\r'])
                .map_or("", |i| &rest[i..])
                .trim_start();
        } else if s.starts_with("/*") {
            s = after_block_comment(s).trim_start();
        } else {
            break;
        }
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

/// `s` (starting with `/*`) after its comment, nested comments included ("" if unterminated).
fn after_block_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &s[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

/// True when `sql` starts with one of `keywords` (upper case), in any case.
pub(crate) fn starts_with_keyword(sql: &str, keywords: &[&str]) -> bool {
    let k = first_keyword(sql);
    keywords.iter().any(|w| w.eq_ignore_ascii_case(k))
}

/// First keywords of statements that may be reads (the backend has the last word).
pub(crate) const READ_KEYWORDS: &[&str] = &["SELECT", "WITH", "VALUES", "EXPLAIN", "SHOW", "TABLE"];

/// Refuses work holding statements that would break the server's own transaction handling.
pub(crate) fn check_allowed(work: &Work, caller: &Caller) -> Result<(), DbError> {
    match work {
        Work::Execute(st) => check_statement(st, caller),
        Work::Batch(b) => b
            .steps
            .iter()
            .filter_map(|step| step.stmt.as_ref())
            .try_for_each(|st| check_statement(st, caller)),
    }
}

/// Refuses a statement that would break the server's own transaction handling.
pub(crate) fn check_statement(st: &Statement, caller: &Caller) -> Result<(), DbError> {
    check_sql(&st.sql, caller)
}

/// [`check_statement`] of a statement's text.
pub(crate) fn check_sql(sql: &str, caller: &Caller) -> Result<(), DbError> {
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
    if caller.sandboxed && starts_with_keyword(sql, super::sandbox::REFUSED_STATEMENTS) {
        // What the sandbox refuses gets the sandbox's code, however it is first noticed.
        return Err(DbError::new(
            ErrorCode::Forbidden,
            "not authorized: ATTACH and DETACH are not for clients",
        ));
    }
    if starts_with_keyword(sql, FORBIDDEN) {
        return Err(DbError::new(
            ErrorCode::BadRequest,
            "transaction control and ATTACH/DETACH/VACUUM are not allowed in statements; use a batch",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{first_keyword, starts_with_keyword, Caller};

    #[test]
    fn keys_are_scoped_to_their_user() {
        let user = |u: &str| Caller {
            sandboxed: true,
            user: u.into(),
        };
        let key = |c: Caller, k: &str| c.scoped_key(k.to_string());
        assert_eq!(key(Caller::server(), "k"), "k");
        assert_eq!(key(user("alice"), ""), "");
        assert_ne!(key(user("alice"), "k"), key(user("bob"), "k"));
        // No pair spells another: the user's length is part of the key.
        assert_ne!(key(user("a:1"), "b"), key(user("a"), "1:b"));
        // A client's key never meets a server's.
        assert_ne!(key(user(""), "k"), key(Caller::server(), "k"));
    }

    #[test]
    fn first_keyword_skips_space_and_comments() {
        assert_eq!(first_keyword("  select 1"), "select");
        assert_eq!(first_keyword("-- note\n /* x */ Insert into t"), "Insert");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("commit;"), "commit");
        assert!(starts_with_keyword("  commit;", &["BEGIN", "COMMIT"]));
        assert!(!starts_with_keyword("committed_rows", &["COMMIT"]));
        // PostgreSQL's comments: nested blocks, and a line comment ended by a carriage return.
        assert_eq!(first_keyword("/* /* */ */ SET ROLE postgres"), "SET");
        assert_eq!(first_keyword("-- x\rDO $$ BEGIN END $$"), "DO");
        assert_eq!(first_keyword("/* a /* b */ c */-- d\n\rselect"), "select");
    }
}
