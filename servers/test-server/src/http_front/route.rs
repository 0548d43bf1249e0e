//! Routing a whole request: answered at once (health, metrics, status, refusals) or sent to db-server.

use super::*;

impl HttpFront {
    /// Answers at once (`Some`) or sends the work to db-server (`None`).
    pub(super) fn route(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        seq: u64,
        req: &Request,
        link: Option<&mut DbLink<Owner>>,
        status: Status<'_>,
    ) -> Option<Answer> {
        // Unknown paths, methods and unauthorised writes: the same answers as before a body.
        if let Some(refused) = self.refusal(req) {
            return Some(refused);
        }
        let path = req.path();
        // HEAD is served as GET; `complete` leaves the body out.
        let method = match req.method() {
            "HEAD" => "GET",
            m => m,
        };
        match path {
            "/health" => return Some(self.health(ctx, status)),
            "/metrics" => return Some(self.metrics(ctx, status)),
            // What a browser asks for beside any page or document it shows.
            "/favicon.ico" => return Some(Answer::icon()),
            "/status" => {
                // The page or the JSON, by `Accept`: said in `Vary` (RFC 9110 §12.5.5).
                let answer = if status::wants_page(req) {
                    status::page()
                } else {
                    self.status(ctx, status)
                };
                return Some(Answer {
                    vary: Some("Accept"),
                    ..answer
                });
            }
            _ => {}
        }
        let Some(name) = doc_name(path) else {
            return Some(Answer::error(404, "Not found"));
        };
        if !status.ready {
            return Some(Answer::error(
                503,
                "database unavailable: db-server not reached (or not set up) yet",
            ));
        }
        let cached = self.cfg.cache_bytes > 0 && link.as_ref().is_some_and(|l| l.watching());
        // What is sent, encoded from borrowed parts straight into the link's output.
        let send = |link: Option<&mut DbLink<Owner>>,
                    ctx: &mut Context<'_, Note, Timer>,
                    op: DocOp,
                    request: DocRequest<'_>| {
            let Some(link) = link else {
                return Some(Answer::error(503, "no db-server configured"));
            };
            match link.request_payload(
                ctx,
                Operation::Data,
                &request,
                Owner::Http { conn, seq, op },
            ) {
                Ok(()) => None,
                Err((_, code, text)) => Some(db_failure(code, &text)),
            }
        };
        let name_arg = [Arg::Text(name)];
        match method {
            "GET" => {
                if !cached && self.cache.stale && unreachable(link.as_deref()) {
                    if let Some(answer) = stale(&self.cache, &self.cfg.counters.cache_hits, name) {
                        return Some(answer);
                    }
                }
                if cached {
                    if let Some(body) = self.cache.current(name) {
                        self.cfg.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Some(Answer::cached(Arc::clone(body)));
                    }
                    self.cfg
                        .counters
                        .cache_misses
                        .fetch_add(1, Ordering::Relaxed);
                }
                let mark = cached.then_some(self.cache.mark());
                let stmt = [Stmt {
                    sql: GET_SQL,
                    args: &name_arg,
                    key: None,
                }];
                send(
                    link,
                    ctx,
                    DocOp::Get(name.to_string(), mark),
                    DocRequest::one(&stmt),
                )
            }
            "DELETE" => {
                // Reads sent from now on until the answer may see either version.
                self.cache.forget(name);
                let stmt = [Stmt {
                    sql: DELETE_SQL,
                    args: &name_arg,
                    key: Some(name),
                }];
                send(
                    link,
                    ctx,
                    DocOp::Delete(name.to_string()),
                    DocRequest::one(&stmt),
                )
            }
            "PUT" => {
                // Borrowed from the request's body unless it holds escapes.
                #[derive(serde::Deserialize)]
                struct PutBody<'a> {
                    #[serde(borrow)]
                    content: std::borrow::Cow<'a, str>,
                }
                let content = match serde_json::from_slice::<PutBody<'_>>(&req.body) {
                    Ok(b) => b.content,
                    Err(e) if e.is_data() => {
                        return Some(Answer::error(
                            400,
                            "body must be a JSON object with a string \"content\"",
                        ))
                    }
                    Err(e) => return Some(Answer::error(400, &format!("body is not JSON: {e}"))),
                };
                // Reads sent from now on until the answer may see either version.
                self.cache.forget(name);
                // Kept once acknowledged (write-through): the answer a GET would give.
                let keep = cached.then(|| {
                    doc_json_into(&mut self.scratch, name, &content);
                    (self.cache.mark(), Arc::from(&self.scratch[..]))
                });
                let now = i64::try_from(now_secs()).unwrap_or(0);
                // Step 0 creates (1 row affected: 201), step 1 replaces; one transaction. Each
                // names the document, so db-server's notice makes only it out of date elsewhere.
                let args = [Arg::Text(name), Arg::Text(&content), Arg::Int(now)];
                let step = |sql| Stmt {
                    sql,
                    args: &args,
                    key: Some(name),
                };
                let request = DocRequest {
                    batch: true,
                    stmts: &[step(PUT_INSERT), step(PUT_UPDATE)],
                };
                send(link, ctx, DocOp::Put(name.to_string(), keep), request)
            }
            _ => Some(Answer {
                allow: Some("GET, HEAD, PUT, DELETE"),
                ..Answer::error(405, "method not allowed")
            }),
        }
    }

    /// `None` when `req` may write; else the 401.
    pub(super) fn check_writer(&self, req: &http1::Head) -> Option<Answer> {
        if self.cfg.insecure_writes {
            return None;
        }
        let token = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        let (Some(token), Some(auth)) = (token, self.cfg.auth.as_ref()) else {
            return Some(Answer::error(
                401,
                "writes need Authorization: Bearer <token>",
            ));
        };
        match auth.signer.verify(token, SystemTime::now()) {
            Ok(c)
                if auth
                    .revocations
                    .revoked(&c.user, auth.signer.issued_at(c.expires_at)) =>
            {
                Some(Answer::error(
                    401,
                    &crate::auth::AuthError::Revoked.to_string(),
                ))
            }
            Ok(_) => None,
            Err(e) => Some(Answer::error(401, &e.to_string())),
        }
    }
}
