//! execute_many over libpq's pipeline mode: statements back to back in one round trip, with a reset before each on a client connection.

use super::*;

impl Pg {
    /// `execute_many` over a pipeline. On a client connection each statement is preceded by a
    /// reset, in the same round trip (see the body).
    #[allow(clippy::type_complexity)]
    pub(super) fn pipelined(
        &mut self,
        sts: &[(&Statement, Limit)],
        together: bool,
        then: Option<&str>,
        start: Instant,
    ) -> Result<
        (
            Vec<Option<Result<(StatementResult, bool), DbError>>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        self.pipelined_once(sts, together, then, start, false)
    }

    /// [`Pg::pipelined`]; `retried`: this is the one run again (see the end).
    #[allow(clippy::type_complexity)]
    pub(super) fn pipelined_once(
        &mut self,
        sts: &[(&Statement, Limit)],
        together: bool,
        then: Option<&str>,
        start: Instant,
        retried: bool,
    ) -> Result<
        (
            Vec<Option<Result<(StatementResult, bool), DbError>>>,
            Option<Vec<u8>>,
        ),
        DbError,
    > {
        let mut outcomes: Vec<Option<Result<(StatementResult, bool), DbError>>> =
            (0..sts.len()).map(|_| None).collect();
        let mut bound = Vec::with_capacity(sts.len());
        let mut which = Vec::with_capacity(sts.len());
        for (i, (st, _)) in sts.iter().enumerate() {
            match self.bind(st) {
                Ok(b) => {
                    bound.push(b);
                    which.push(i);
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        // The statements on the wire: each one's index in `sts`, or `None` for a reset.
        // On a shared client connection each statement is preceded, in its transaction
        // segment, by a reset: the full one (`_netmod_reset`) when the statement's owner is not
        // the one whose statement ran last here (or is unknown), else a light one (session
        // advisory locks released, its own statement_timeout). So the state one user's
        // statement leaves reaches only that user's next statements, and a run of one user's
        // statements pays the full reset once. On a client connection of one caller (a
        // transaction, a cursor) only the statement_timeout goes first.
        let session = self.session.join("\n");
        let reset_sql = self.reset_sql.clone();
        let standing = self.standing_timeout_ms;
        let mut owner = self.owner;
        // Per statement, its prefix if any: the timeout (ms) it sets, and whether it is the
        // full reset.
        let mut prefixes: Vec<Option<(u64, bool)>> = Vec::with_capacity(which.len());
        for &i in &which {
            let limit = &sts[i].1;
            let left = limit
                .deadline
                .map_or(standing, crate::deadline::remaining_ms);
            if !self.client {
                prefixes.push(None);
            } else if self.resets {
                let same = limit.owner != 0 && owner == Some(limit.owner);
                prefixes.push(Some((left, !same)));
                owner = (limit.owner != 0).then_some(limit.owner);
            } else {
                prefixes.push(limit.deadline.map(|_| (left, false)));
            }
        }
        // For a full reset, the value it leaves for the check after it; else the timeout.
        let texts: Vec<String> = prefixes
            .iter()
            .map(|p| match p {
                Some((_, true)) => reset_token(),
                Some((left, false)) => left.to_string(),
                None => String::new(),
            })
            .collect();
        let params: Vec<Vec<Param<'_>>> = prefixes
            .iter()
            .zip(&texts)
            .map(|(p, text)| match p {
                Some((left, true)) => vec![
                    Param::Text(&session),
                    Param::Int(i64::try_from(*left).unwrap_or(i64::MAX)),
                    Param::Text(text),
                ],
                Some((_, false)) => vec![Param::Text(text)],
                None => Vec::new(),
            })
            .collect();
        let checks: Vec<[Param<'_>; 1]> = texts.iter().map(|t| [Param::Text(t)]).collect();
        let reset_done_sql = self.reset_done_sql.clone();
        let mut stmts: Vec<(&str, &[Param<'_>])> = Vec::with_capacity(bound.len() * 2);
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(bound.len() * 2);
        // Where the question of what the transaction wrote goes (see `track_written`).
        let mut written_at: Vec<usize> = Vec::new();
        let mut syncs: Vec<usize> = Vec::new();
        // The statements that deallocate the session's prepared statements: the full reset,
        // and a client's own DEALLOCATE or DISCARD (one hidden in a function is caught by the
        // connection itself, see `PgConn::take_lost_names`).
        let mut forgets: Vec<usize> = Vec::new();
        for (k, ((t, p), &i)) in bound.iter().zip(&which).enumerate() {
            match prefixes[k] {
                Some((_, true)) => {
                    forgets.push(stmts.len());
                    stmts.push((reset_sql.as_str(), &params[k][..]));
                    slot.push(None);
                    // In a transaction of its own before the statement's: a transaction takes
                    // its read-only mode (a setting the reset restores) when it begins. Its
                    // end is checked first thing in the statement's transaction: a reset cut
                    // short (by the last user's statement_timeout) fails that transaction
                    // instead of letting the statement run in the old session. Inside a
                    // group's transaction (another owner's statement in a group of reads) the
                    // reset runs inline: cut short, it fails the transaction itself.
                    if k == 0 || !together {
                        syncs.push(stmts.len() - 1);
                        stmts.push((reset_done_sql.as_str(), &checks[k][..]));
                        slot.push(None);
                    }
                }
                Some((_, false)) if self.resets => {
                    stmts.push((LIGHT_RESET, &params[k][..]));
                    slot.push(None);
                }
                Some((_, false)) => {
                    stmts.push((SET_TIMEOUT, &params[k][..]));
                    slot.push(None);
                }
                None => {}
            }
            if self.client
                && crate::workers::starts_with_keyword(&t.sql, &["DEALLOCATE", "DISCARD"])
            {
                forgets.push(stmts.len());
            }
            stmts.push((t.sql.as_str(), p.as_slice()));
            slot.push(Some(i));
            if !together {
                if self.track_written {
                    written_at.push(stmts.len());
                    stmts.push((WRITTEN, &[]));
                    slot.push(None);
                }
                syncs.push(stmts.len() - 1);
            }
        }
        if together && !stmts.is_empty() {
            if self.track_written {
                written_at.push(stmts.len());
                stmts.push((WRITTEN, &[]));
                slot.push(None);
            }
            syncs.push(stmts.len() - 1);
        }
        let n = stmts.len();
        if let Some(sql) = then {
            stmts.push((sql, &[]));
        }
        if stmts.is_empty() {
            return Ok((outcomes, None));
        }
        let mut then_value = None;
        let written = &mut self.written;
        // The questions of what a transaction wrote that failed, with why.
        let mut rolled_back: Vec<(usize, DbError)> = Vec::new();
        // A reset that failed (other than skipped in a failed transaction) leaves the session
        // in a state nobody knows: the connection is given up.
        let mut reset_failed = false;
        self.conn
            .pipeline_forgetting(&stmts, &syncs, &forgets, CHUNK_ROWS, |k, stream| {
                if k >= n {
                    if let Ok(s) = stream {
                        if let Ok(Some(res)) = s.next_result() {
                            then_value = res.value(0, 0).map(<[u8]>::to_vec);
                        }
                    }
                    return;
                }
                if written_at.contains(&k) {
                    // Aborted with its statement's transaction, it is not asked: nothing was
                    // written. Failed itself (the client's own statement_timeout, say), it
                    // took the transaction with it: its statements did not commit.
                    let r = stream.and_then(|s| s.next_result());
                    match r.map_err(Fail::from) {
                        Ok(Some(res)) => {
                            if let Some(tables) = res.value(0, 0) {
                                for t in String::from_utf8_lossy(tables).split(',') {
                                    if !written.iter().any(|w| w == t) {
                                        written.push(t.to_string());
                                    }
                                }
                            }
                        }
                        Err(Fail::Db(e)) => rolled_back.push((k, e)),
                        Ok(None) | Err(Fail::Aborted) => {}
                    }
                    return;
                }
                let Some(i) = slot[k] else {
                    let failed = match stream {
                        Ok(s) => loop {
                            match s.next_result() {
                                Ok(Some(_)) => {}
                                Ok(None) => break None,
                                Err(e) => break Some(e),
                            }
                        },
                        Err(e) => Some(e),
                    };
                    if let Some(Fail::Db(e)) = failed.map(Fail::from) {
                        log::warn!("resetting a client connection failed: {}", e.message);
                        reset_failed = true;
                    }
                    return;
                };
                let r = match stream {
                    Ok(s) => read_result(s, sts[i].1, start),
                    Err(e) => Err(Fail::from(e)),
                };
                outcomes[i] = match r {
                    Ok(r) => Some(Ok(r)),
                    Err(Fail::Db(e)) => Some(Err(e)),
                    Err(Fail::Aborted) => None,
                };
            })?;
        // A transaction that failed after its statements answered: none of them committed.
        for (k, e) in rolled_back {
            let e = DbError::new(
                e.code,
                format!("the write's transaction failed after it ran: {}", e.message),
            );
            if together {
                for o in outcomes.iter_mut().filter(|o| matches!(o, Some(Ok(_)))) {
                    *o = Some(Err(e.clone()));
                }
            } else if let Some(i) = k.checked_sub(1).and_then(|j| slot[j]) {
                outcomes[i] = Some(Err(e));
            }
        }
        if reset_failed {
            // What ran before the reset is dropped with what did not: reads (run again
            // elsewhere), or a write of a group of one user, whose transaction the check
            // refused.
            self.conn.give_up();
            self.reset_failed = true;
            return Err(DbError::new(
                ErrorCode::Unavailable,
                "a client session could not be reset after another user's statement",
            ));
        }
        // A name of ours was missing or taken: what the session holds is unknown, so the next
        // statement resets it fully (DEALLOCATE ALL among the rest).
        let lost_names = self.conn.take_lost_names();
        // A statement that failed (its transaction rolled back, the resets in it with it)
        // leaves the session in a state of no known owner: the next statement resets fully.
        self.owner = if !lost_names && outcomes.iter().all(|o| matches!(o, Some(Ok(_)))) {
            owner
        } else {
            None
        };
        // A lone statement that failed only because the session lost a name of ours (the
        // caller's own DEALLOCATE inside a function, or a PREPARE of a name like ours) did not
        // run: it goes again, now with the full reset and a fresh Parse.
        // (Not inside a transaction block: the failure has ended that transaction.)
        if lost_names
            && !retried
            && sts.len() == 1
            && then.is_none()
            && self.txn_state() == TxnState::Idle
        {
            if let Some(Some(Err(e))) = outcomes.first() {
                if e.message.ends_with("(SQLSTATE 26000)")
                    || e.message.ends_with("(SQLSTATE 42P05)")
                {
                    return self.pipelined_once(sts, together, then, start, true);
                }
            }
        }
        let created = sts
            .iter()
            .zip(&outcomes)
            .any(|((st, _), o)| matches!(o, Some(Ok(_))) && !self.client && creates(&st.sql));
        if created {
            self.after_create();
        }
        Ok((outcomes, then_value))
    }
}

/// The tables the current transaction wrote rows of, comma-separated (NULL: none): asked
/// last in a client's write transaction, since its text does not say (a function, a trigger
/// on the client's own table may write elsewhere). Every name qualified, operators too: the
/// session's search path is the client's.
const WRITTEN: &str = "SELECT pg_catalog.string_agg(relname::pg_catalog.text, ',') \
    FROM pg_catalog.pg_stat_xact_user_tables \
    WHERE (n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd OPERATOR(pg_catalog.+) n_tup_del) \
    OPERATOR(pg_catalog.>) 0";

/// A value nobody can guess before a reset leaves it (see `_netmod_reset`): keyed hashes
/// (SipHash, with the keys std draws at random once per process) of a counter.
fn reset_token() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static KEYS: OnceLock<(std::hash::RandomState, std::hash::RandomState)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (a, b) =
        KEYS.get_or_init(|| (std::hash::RandomState::new(), std::hash::RandomState::new()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}", a.hash_one(n), b.hash_one(n))
}
