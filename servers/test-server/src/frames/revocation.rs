//! Revoked tokens: a user removed or re-keyed on one instance loses every older token on all.
//!
//! The instance that makes the change writes a row in [`REVOCATIONS_TABLE`] in the same
//! transaction as the change, and revokes at once in its own list; every instance watches the
//! table (db-server's change notices) and reads it again when it changes, when its watch is
//! (re)taken and once its setup is done. A connection logged in with a revoked token is told
//! (`ERROR UNAUTHENTICATED`, message id 0) and closed; a token presented later is refused.

use super::*;

/// Where user changes revoke tokens: one row per change, kept twice the token lifetime.
pub const REVOCATIONS_TABLE: &str = "_netmod_revocations";

/// The table's definition (both backends).
pub(super) fn create_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {REVOCATIONS_TABLE} (name TEXT NOT NULL, at BIGINT NOT NULL)"
    )
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v?.kind.as_ref()? {
        protocol::proto::value::Kind::Text(t) => Some(t),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v?.kind.as_ref()? {
        protocol::proto::value::Kind::Integer(i) => Some(*i),
        _ => None,
    }
}

/// The steps a user change adds to its transaction: the revocation, and old rows pruned.
pub(super) fn revoke_steps(
    name: &str,
    at_ms: u64,
    lifetime: std::time::Duration,
) -> Vec<BatchStep> {
    let keep = u64::try_from(lifetime.as_millis())
        .unwrap_or(u64::MAX / 4)
        .saturating_mul(2);
    let int = |v: u64| Value::int(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        BatchStep::new(
            format!("INSERT INTO {REVOCATIONS_TABLE} (name, at) VALUES (?1, ?2)"),
            vec![Value::text(name), int(at_ms)],
        ),
        BatchStep::new(
            format!("DELETE FROM {REVOCATIONS_TABLE} WHERE at < ?1"),
            vec![int(at_ms.saturating_sub(keep))],
        ),
    ]
}

impl Frames {
    /// Reads the revocations again (see the module docs).
    pub(super) fn refresh_revocations(&mut self, ctx: &mut Context<'_, Note, Timer>) {
        let (Some(link), Some(_)) = (self.link.as_mut(), self.cfg.auth.as_ref()) else {
            return;
        };
        let req = DataRequest::execute(
            format!("SELECT name, at FROM {REVOCATIONS_TABLE} ORDER BY name, at"),
            vec![],
        );
        if let Err((_, _, text)) = link.request(ctx, req_message(&req), Owner::Revocations) {
            debug!("reading {REVOCATIONS_TABLE}: {text}");
        }
    }

    /// db-server answered [`Frames::refresh_revocations`].
    pub(super) fn revocations_read(&mut self, ctx: &mut Context<'_, Note, Timer>, m: Message) {
        let Some(auth) = self.cfg.auth.clone() else {
            return;
        };
        let rows = match DataResponse::decode(m.data).ok().and_then(|r| r.kind) {
            Some(data_response::Kind::Result(r)) => r.rows,
            _ => return,
        };
        // Rows come by user, then in the order they were made.
        let mut changed = false;
        let mut at = 0;
        while at < rows.len() {
            let Some(name) = text(rows[at].values.first()) else {
                at += 1;
                continue;
            };
            let mut ats = Vec::new();
            while at < rows.len() && text(rows[at].values.first()) == Some(name) {
                ats.extend(int(rows[at].values.get(1)).and_then(|v| u64::try_from(v).ok()));
                at += 1;
            }
            changed |= auth.revocations.merge(name, ats);
        }
        if changed {
            self.close_revoked(ctx);
        }
    }

    /// True when `user`'s token expiring at `expires_at` is revoked.
    pub(super) fn is_revoked(&self, user: &str, expires_at: u64) -> bool {
        self.cfg
            .auth
            .as_ref()
            .is_some_and(|a| a.revocations.revoked(user, a.signer.issued_at(expires_at)))
    }

    /// Tells this loop's clients whose tokens are revoked, and closes them.
    pub(super) fn close_revoked(&mut self, ctx: &mut Context<'_, Note, Timer>) {
        let revoked: Vec<ConnId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.user
                    .as_deref()
                    .is_some_and(|(name, exp)| self.is_revoked(name, *exp))
            })
            .map(|(conn, _)| conn)
            .collect();
        for conn in revoked {
            Self::refuse_revoked(ctx, conn, 0, Operation::Data);
        }
    }

    /// Answers `id` (0: a notice) that the connection's token is revoked, and closes it.
    pub(super) fn refuse_revoked(
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        id: u32,
        op: Operation,
    ) {
        Self::reply_error(
            ctx,
            conn,
            id,
            op,
            ErrorCode::Unauthenticated,
            "this session's token was revoked (the user was removed or its secret changed); \
             log in again",
        );
        ctx.close(conn);
    }
}
