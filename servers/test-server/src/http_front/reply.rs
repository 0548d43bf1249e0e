//! Answers: db-server's replies turned into responses, written in request order.

use super::*;

impl HttpFront {
    /// The answer to a PUT (`op`) from db-server's answer `data`, read in place; the cache
    /// keeps the document written (write-through) or forgets it.
    fn put_reply(cache: &mut DocCache, op: &DocOp, data: &[u8]) -> Answer {
        let DocOp::Put(name, keep) = op else {
            return Answer::error(500, "not a PUT");
        };
        match DataResponseView::new(data) {
            Ok(v) if v.is_batch() => match v.first_step_rows_affected() {
                Ok(rows) => {
                    match keep {
                        Some((mark, body)) => {
                            cache.written(*mark, name, Arc::clone(body), v.commit_index);
                        }
                        None => cache.forget(name),
                    }
                    put_answer(name, rows == Some(1))
                }
                Err(_) => Answer::error(502, "unreadable answer from db-server"),
            },
            Ok(_) => {
                cache.forget(name);
                Answer::error(502, "unexpected answer from db-server")
            }
            Err(_) => Answer::error(502, "unreadable answer from db-server"),
        }
    }

    /// db-server answered (or failed) request `seq` of `conn`.
    pub fn on_reply(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        seq: u64,
        op: DocOp,
        reply: Result<Message, (ErrorCode, String)>,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.waiting = c.waiting.saturating_sub(1);
        if matches!(op, DocOp::Put(..) | DocOp::Delete(_)) {
            c.unsafe_waiting = c.unsafe_waiting.saturating_sub(1);
        }
        if c.held && c.unsafe_waiting == 0 {
            // The request held back may be able to go now (`on_data` looks again).
            c.held = false;
            ctx.resume_reading(conn);
        }
        let answer = match reply {
            // db-server was not reached, or did not answer in time: the last version known of
            // a document, marked stale, beats an error (see `DocCache`).
            Err((code @ (ErrorCode::Unavailable | ErrorCode::Timeout), text)) => match &op {
                DocOp::Get(name, _) => stale(&self.cache, &self.cfg.counters.cache_hits, name)
                    .unwrap_or_else(|| db_failure(code, &text)),
                _ => db_failure(code, &text),
            },
            Err((code, text)) => db_failure(code, &text),
            Ok(m) if m.r#type() == MessageType::Error => {
                let e = wire::ErrorBody::decode(m.data).unwrap_or_default();
                error!("db-server refused a document request: {}", e.message);
                db_failure(e.code(), &e.message)
            }
            // A PUT's answer is read in place: its first step's count and the commit index.
            Ok(m) if matches!(op, DocOp::Put(..)) => Self::put_reply(&mut self.cache, &op, &m.data),
            Ok(m) => match DataResponse::decode(m.data) {
                Ok(resp) => {
                    let answer = doc_answer(&op, resp);
                    match &op {
                        DocOp::Get(name, Some(mark)) if answer.status == 200 => {
                            self.cache.offer(*mark, name, &answer.body)
                        }
                        DocOp::Put(name, _) | DocOp::Delete(name) => self.cache.forget(name),
                        DocOp::Get(..) => {}
                    }
                    answer
                }
                Err(_) => Answer::error(502, "unreadable answer from db-server"),
            },
        };
        let keep = c.close_after != Some(seq);
        self.complete(ctx, conn, seq, answer, keep);
    }

    /// Queues the answer to request `seq` and writes every answer now in order.
    pub(super) fn complete(
        &mut self,
        ctx: &mut Context<'_, Note, Timer>,
        conn: ConnId,
        seq: u64,
        answer: Answer,
        keep_alive: bool,
    ) {
        self.cfg.counters.count(answer.status);
        let now = now_secs();
        if self.date.0 != now || self.date.1.is_empty() {
            self.date.0 = now;
            shared::clock::http_date(now, &mut self.date.1);
        }
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        // Metrics and the page are not what an access line is for.
        let logged: &[u8] = if answer.kind == Kind::Json {
            &answer.body
        } else {
            b""
        };
        access_log(c.peer, answer.status, logged);
        let content_type = match answer.kind {
            Kind::Json => "application/json",
            Kind::Metrics => "text/plain; version=0.0.4",
            Kind::Html => "text/html; charset=utf-8",
            Kind::Icon => shared::page::ICON_TYPE,
        };
        let mut headers = [
            ("Server", "netmod"),
            ("Date", self.date.1.as_str()),
            ("Content-Type", content_type),
            ("", ""),
            ("", ""),
            ("", ""),
        ];
        let mut n = 3;
        if let Some(allow) = answer.allow {
            headers[n] = ("Allow", allow);
            n += 1;
        }
        if answer.stale {
            headers[n] = ("Cache-Status", STALE);
            n += 1;
        }
        if let Some(vary) = answer.vary {
            headers[n] = ("Vary", vary);
            n += 1;
        }
        if answer.kind == Kind::Icon {
            headers[n] = ("Cache-Control", "max-age=86400");
            n += 1;
        }
        let head_only = match c.head_seqs.iter().position(|&s| s == seq) {
            Some(i) => {
                c.head_seqs.swap_remove(i);
                true
            }
            None => false,
        };
        if seq == c.next_out {
            // The usual case, nothing owed before it: straight out, no reordering.
            self.scratch.clear();
            http1::write_response(
                &mut self.scratch,
                answer.status,
                &headers[..n],
                &answer.body,
                keep_alive,
                head_only,
            );
            let _ = ctx.send(conn, &self.scratch);
            if c.close_after == Some(seq) {
                ctx.close(conn);
            }
            c.next_out += 1;
        } else {
            let mut out = Vec::new();
            http1::write_response(
                &mut out,
                answer.status,
                &headers[..n],
                &answer.body,
                keep_alive,
                head_only,
            );
            c.ready.insert(seq, out);
        }
        while let Some(bytes) = c.ready.remove(&c.next_out) {
            let _ = ctx.send(conn, &bytes);
            if c.close_after == Some(c.next_out) {
                ctx.close(conn);
            }
            c.next_out += 1;
        }
        if c.continue_owed.is_some_and(|s| s == c.next_out) {
            c.continue_owed = None;
            let _ = ctx.send(conn, http1::CONTINUE);
        }
    }
}
