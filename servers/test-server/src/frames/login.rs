//! Logins (secret checked on a verifier thread, token issued), token resumes, and the admin's
//! user management, for the frame service.

use super::*;

impl Frames {
    pub(super) fn login(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId, msg: Message) {
        let id = msg.message_id;
        let op = Operation::AuthLogin;
        let Ok(login) = AuthLogin::decode(msg.data) else {
            return Self::reply_error(ctx, conn, id, op, ErrorCode::BadMessage, "bad AuthLogin");
        };
        let Some(auth) = self.cfg.auth.clone() else {
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Unavailable,
                "authentication is not configured",
            );
        };
        // Every attempt takes a token from the bucket of its address and user; only wrong
        // secrets keep it (see `refund_login`). Per user: one user's failures (or an
        // attacker's guesses at one account) never lock another user out of the same address,
        // which all clients behind a proxy share.
        let ip = self.client_ip(ctx, conn);
        if !auth.login_allowed(ip, &login.user) {
            debug!(
                "login from {} refused: too many failed logins",
                ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
            );
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::RateLimited,
                "too many failed logins for this user from this address; retry later",
            );
        }
        if !auth::valid_user(&login.user) {
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Unauthenticated,
                "wrong user or secret",
            );
        }
        let req = DataRequest::execute(
            format!("SELECT secret_hash FROM {USERS_TABLE} WHERE name = ?1"),
            vec![Value::text(login.user.clone())],
        );
        let owner = Owner::Login {
            conn,
            id,
            user: login.user,
            secret: login.secret,
        };
        self.forward(ctx, conn, req_message(&req), owner);
    }

    /// Authenticates the connection with an existing token.
    pub(super) fn resume(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        msg: &Message,
    ) {
        let id = msg.message_id;
        let op = Operation::AuthToken;
        let Some(auth) = self.cfg.auth.clone() else {
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Unavailable,
                "authentication is not configured",
            );
        };
        let Ok(t) = AuthToken::decode(msg.data.clone()) else {
            return Self::reply_error(ctx, conn, id, op, ErrorCode::BadMessage, "bad AuthToken");
        };
        let verified = auth
            .signer
            .verify(&t.token, SystemTime::now())
            .and_then(|claims| {
                if auth
                    .revocations
                    .revoked(&claims.user, auth.signer.issued_at(claims.expires_at))
                {
                    Err(auth::AuthError::Revoked)
                } else {
                    Ok(claims)
                }
            });
        match verified {
            Ok(claims) => {
                let reply = wire::message(
                    MessageType::Response,
                    op,
                    id,
                    &AuthToken {
                        token: t.token,
                        expires_at: claims.expires_at,
                    },
                );
                if let Some(c) = self.clients.get_mut(conn) {
                    c.user = Some(Box::new((claims.user, claims.expires_at)));
                }
                let _ = wire::send(ctx, conn, &reply);
            }
            Err(e) => {
                debug!(
                    "token refused from {}: {e}",
                    ctx.peer_addr(conn)
                        .map_or_else(|| "-".to_string(), |p| p.to_string())
                );
                Self::reply_error(ctx, conn, id, op, ErrorCode::Unauthenticated, e.to_string());
            }
        }
    }

    /// USERS: the admin creates, re-keys or removes a user.
    pub(super) fn users(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId, msg: Message) {
        let id = msg.message_id;
        let op = Operation::Users;
        let Some(auth) = self.cfg.auth.clone() else {
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Unavailable,
                "authentication is not configured",
            );
        };
        let Ok(change) = wire::UserChange::decode(msg.data) else {
            return Self::reply_error(ctx, conn, id, op, ErrorCode::BadMessage, "bad UserChange");
        };
        let user = self
            .clients
            .get(conn)
            .and_then(|c| c.user.as_deref().cloned());
        if user
            .as_ref()
            .is_some_and(|(name, exp)| self.is_revoked(name, *exp))
        {
            return Self::refuse_revoked(ctx, conn, id, op);
        }
        let refusal = match user {
            None => Some((ErrorCode::Unauthenticated, "log in first")),
            Some((_, exp)) if exp <= now_secs() => {
                Some((ErrorCode::Unauthenticated, "token expired; log in again"))
            }
            Some((name, _)) if name != auth.admin() => {
                Some((ErrorCode::Forbidden, "only the admin user manages users"))
            }
            Some(_) if !auth::valid_user(&change.name) => Some((
                ErrorCode::BadRequest,
                "a user name is 1-64 characters: letters, digits, _ . @ -",
            )),
            Some(_) if change.remove && change.name == auth.admin() => {
                Some((ErrorCode::BadRequest, "the admin user cannot be removed"))
            }
            Some(_) if !change.remove && change.secret.chars().count() < 8 => {
                Some((ErrorCode::BadRequest, "a secret has at least 8 characters"))
            }
            Some(_) => None,
        };
        if let Some((code, text)) = refusal {
            return Self::reply_error(ctx, conn, id, op, code, text);
        }
        if change.remove {
            // The removal and the revocation of the user's tokens, in one transaction.
            let mut steps = vec![BatchStep::new(
                format!("DELETE FROM {USERS_TABLE} WHERE name = ?1"),
                vec![Value::text(change.name.clone())],
            )];
            let at_ms = revocation::now_ms();
            steps.extend(revocation::revoke_steps(
                &change.name,
                at_ms,
                auth.signer.lifetime(),
            ));
            let req = DataRequest::batch(steps);
            let owner = Owner::User {
                conn,
                id,
                change: UserChange {
                    name: change.name,
                    remove: true,
                    at_ms,
                },
            };
            return self.forward(ctx, conn, req_message(&req), owner);
        }
        let inbox: LoopHandle<Note> = ctx.loop_handle();
        let name = change.name;
        let queued = auth.verifier.hash(
            change.secret,
            auth.hash_cost,
            Box::new(move |stored| {
                let _ = inbox.post(Note::Hashed {
                    conn,
                    id,
                    name,
                    stored,
                });
            }),
        );
        if queued {
            if let Some(c) = self.clients.get_mut(conn) {
                c.in_flight += 1;
            }
        } else {
            Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Overloaded,
                "too many secrets being checked; retry later",
            );
        }
    }

    /// The new user's secret is hashed: store it.
    pub(super) fn store_user(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        id: u32,
        name: String,
        stored: String,
    ) {
        let now = Value::int(i64::try_from(now_secs()).unwrap_or(0));
        let at_ms = revocation::now_ms();
        let revoke = self.cfg.auth.as_ref().map_or_else(Vec::new, |a| {
            revocation::revoke_steps(&name, at_ms, a.signer.lifetime())
        });
        // Step 0 creates (1 row: `created`), step 1 re-keys an existing user, then the tokens
        // issued before are revoked; one transaction.
        let req = DataRequest {
            kind: Some(data_request::Kind::Batch(Batch {
                steps: vec![
                    BatchStep::new(
                        format!(
                            "INSERT INTO {USERS_TABLE} (name, secret_hash, created) \
                             VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING"
                        ),
                        vec![Value::text(name.clone()), Value::text(stored.clone()), now],
                    ),
                    BatchStep::new(
                        format!("UPDATE {USERS_TABLE} SET secret_hash = ?2 WHERE name = ?1"),
                        vec![Value::text(name.clone()), Value::text(stored)],
                    ),
                ]
                .into_iter()
                .chain(revoke)
                .collect(),
            })),
            ..Default::default()
        };
        let owner = Owner::User {
            conn,
            id,
            change: UserChange {
                name,
                remove: false,
                at_ms,
            },
        };
        self.forward(ctx, conn, req_message(&req), owner);
    }

    /// db-server answered a user change: the user's older tokens are revoked here at once
    /// (the other instances read it from the table), and this loop's sessions of the user
    /// closed.
    pub(super) fn user_changed(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        id: u32,
        change: UserChange,
        m: Message,
    ) {
        let UserChange {
            name,
            remove,
            at_ms,
        } = change;
        let op = Operation::Users;
        if m.r#type() == MessageType::Error {
            let e = wire::ErrorBody::decode(m.data).unwrap_or_default();
            return Self::reply_error(ctx, conn, id, op, e.code(), e.message);
        }
        let affected = |outcome: Option<&protocol::proto::step_outcome::Outcome>| matches!(outcome, Some(protocol::proto::step_outcome::Outcome::Ok(r)) if r.rows_affected > 0);
        let (created, removed) = match DataResponse::decode(m.data).ok().and_then(|r| r.kind) {
            Some(data_response::Kind::Batch(b)) => {
                let first = affected(b.steps.first().and_then(|s| s.outcome.as_ref()));
                if remove {
                    (false, first)
                } else {
                    (first, false)
                }
            }
            _ => {
                return Self::reply_error(
                    ctx,
                    conn,
                    id,
                    op,
                    ErrorCode::Internal,
                    "unexpected answer from db-server",
                )
            }
        };
        if let Some(auth) = self.cfg.auth.clone() {
            // The row just written, folded as every instance folds it.
            if auth.revocations.apply(&name, at_ms) {
                self.close_revoked(ctx);
            }
        }
        let reply = wire::message(
            MessageType::Response,
            op,
            id,
            &wire::UserChanged {
                name,
                created,
                removed,
            },
        );
        let _ = wire::send(ctx, conn, &reply);
    }

    /// db-server answered a login's lookup: check the secret on a verifier thread.
    pub(super) fn check_login(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        id: u32,
        user: String,
        secret: String,
        m: &Message,
    ) {
        let op = Operation::AuthLogin;
        let Some(auth) = self.cfg.auth.clone() else {
            return;
        };
        if m.r#type() == MessageType::Error {
            let e = wire::ErrorBody::decode(m.data.clone()).unwrap_or_default();
            self.refund_login(ctx, conn, &user);
            return Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Unavailable,
                format!("user lookup failed: {}", e.message),
            );
        }
        let stored = DataResponse::decode(m.data.clone())
            .ok()
            .and_then(|r| match r.kind {
                Some(data_response::Kind::Result(res)) => res.rows.into_iter().next(),
                _ => None,
            })
            .and_then(|row| match row.values.into_iter().next()?.kind {
                Some(value::Kind::Text(t)) => Some(t),
                _ => None,
            });
        let (stored, known) = match stored {
            Some(s) => (s, true),
            None => (auth.decoy.clone(), false),
        };
        let inbox: LoopHandle<Note> = ctx.loop_handle();
        let who = user.clone();
        let queued = auth.verifier.check(
            stored,
            secret,
            Box::new(move |ok| {
                let _ = inbox.post(Note::Verified {
                    conn,
                    id,
                    user,
                    ok: ok && known,
                });
            }),
        );
        if queued {
            if let Some(c) = self.clients.get_mut(conn) {
                c.in_flight += 1;
            }
        } else {
            self.refund_login(ctx, conn, &who);
            Self::reply_error(
                ctx,
                conn,
                id,
                op,
                ErrorCode::Overloaded,
                "too many logins at once; retry later",
            );
        }
    }

    /// The client's address: the one a trusted proxy named for the connection, else the
    /// connection's own peer.
    pub(super) fn client_ip(
        &self,
        ctx: &Context<'_, Note, Timer>,
        conn: ConnId,
    ) -> Option<std::net::IpAddr> {
        self.proxied
            .get(conn)
            .map(|a| a.ip())
            .or_else(|| ctx.peer_addr(conn).map(|p| p.ip()))
    }

    /// A login of `user` ended otherwise than with a wrong secret: its token goes back.
    pub(super) fn refund_login(&self, ctx: &Context<'_, Note, Timer>, conn: ConnId, user: &str) {
        if let Some(auth) = &self.cfg.auth {
            auth.login_refund(self.client_ip(ctx, conn), user);
        }
    }
}
