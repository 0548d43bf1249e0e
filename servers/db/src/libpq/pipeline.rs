//! Pipeline mode: statements back to back in one round trip, prepared inline, their names cached.

use super::*;

impl PgConn {
    /// Runs statements back to back in one round trip (libpq's pipeline mode). A sync follows
    /// each statement whose index is in `syncs` (and the last one): the statements since the
    /// previous sync form one implicit transaction, committed at the sync, or rolled back whole
    /// when one of them fails; the statements after the failing one, up to the sync, are
    /// reported [`ABORTED`].
    ///
    /// `each(i, stream)` reads statement `i`'s results (rows in chunks of `chunk`), in order;
    /// a failure to prepare statement `i` comes to it as the stream's error, and the statement
    /// is left out. An `Err` from `pipeline` itself means the connection failed.
    pub fn pipeline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        syncs: &[usize],
        chunk: usize,
        each: impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        self.pipeline_forgetting(stmts, syncs, &[], chunk, each)
    }

    /// [`PgConn::pipeline`] where the statements whose indexes are in `forgets` deallocate the
    /// session's prepared statements (`DEALLOCATE ALL`, or a function doing it): on a connection
    /// that prepares inline ([`PgConn::prepare_inline`]) they go unnamed, and the statements
    /// after them are prepared afresh.
    pub fn pipeline_forgetting(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        syncs: &[usize],
        forgets: &[usize],
        chunk: usize,
        mut each: impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        let hows = if self.inline {
            self.name_inline(stmts, forgets)?
        } else {
            // Preparing needs a round trip of its own, so it happens before, once per statement.
            stmts
                .iter()
                .map(|(sql, params)| {
                    let name = self.prepare(sql, params)?;
                    Ok(if self.unnamed {
                        How::Text(name)
                    } else {
                        How::Named(name)
                    })
                })
                .collect()
        };
        if !self.is_ok() {
            return Err(self.broken());
        }
        // Statements parsed in this pipeline before its last `forgets` are gone after it.
        let last_forget = forgets.iter().copied().filter(|&f| f < stmts.len()).max();
        // SAFETY: valid, idle connection.
        if unsafe { ffi::PQenterPipelineMode(self.raw.as_ptr()) } == 0 {
            return Err(self.broken());
        }
        let r = self.run_pipeline(stmts, &hows, syncs, last_forget, chunk, &mut each);
        // SAFETY: valid connection; fails (harmlessly) only if results are left unread.
        if unsafe { ffi::PQexitPipelineMode(self.raw.as_ptr()) } == 0 && r.is_ok() {
            return Err(self.broken());
        }
        r
    }

    /// How each statement of an inline-preparing pipeline goes: a `forgets` statement as text;
    /// one prepared here before (and not forgotten since) by its name; a new one with its
    /// Parse, under a new name, which later statements of the same text and types reuse.
    pub(super) fn name_inline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        forgets: &[usize],
    ) -> Result<Vec<Result<How, PgError>>, PgError> {
        // (Outside a transaction block only: in a failed one DEALLOCATE would fail too.)
        if self.count >= CACHE_CAPACITY && self.txn_state() == TxnState::Idle {
            self.exec("DEALLOCATE ALL")?;
            self.forget_prepared();
        }
        let text =
            |sql: &str| CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"));
        // Parsed earlier in this pipeline: (text, types) → name.
        let mut fresh: HashMap<(&str, Vec<Oid>), CString> = HashMap::new();
        let mut hows = Vec::with_capacity(stmts.len());
        for (i, (sql, params)) in stmts.iter().enumerate() {
            if forgets.contains(&i) {
                hows.push(text(sql).map(How::Text));
                self.forget_prepared();
                fresh.clear();
                continue;
            }
            let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
            if let Some(name) = self.cached(sql, params) {
                hows.push(Ok(How::Named(name)));
            } else if let Some(name) = fresh.get(&(*sql, types.clone())) {
                hows.push(Ok(How::Named(name.clone())));
            } else {
                self.next_name += 1;
                let name = CString::new(format!("netmod_s{}", self.next_name))
                    .map_err(|_| PgError::client("statement name"))?;
                match text(sql) {
                    Ok(t) => {
                        fresh.insert((*sql, types), name.clone());
                        hows.push(Ok(How::Parse { name, text: t }));
                    }
                    Err(e) => hows.push(Err(e)),
                }
            }
        }
        Ok(hows)
    }

    pub(super) fn broken(&self) -> PgError {
        PgError {
            sqlstate: "08006".into(),
            message: self.last_error(),
        }
    }

    pub(super) fn run_pipeline(
        &mut self,
        stmts: &[(&str, &[Param<'_>])],
        hows: &[Result<How, PgError>],
        syncs: &[usize],
        last_forget: Option<usize>,
        chunk: usize,
        each: &mut impl FnMut(usize, Result<&mut RowStream<'_>, PgError>),
    ) -> Result<(), PgError> {
        let last = stmts.len().saturating_sub(1);
        let sync_after = |i: usize| i == last || syncs.contains(&i);
        let mut pending_sync = false;
        // A statement refused before it is sent (a bad parameter) fails alone; a Parse of it is
        // not sent either, so a later statement that meant to reuse its name fails the same way.
        let mut refused: Vec<Option<PgError>> = vec![None; stmts.len()];
        let mut unsent: HashMap<CString, PgError> = HashMap::new();
        for (i, ((_, params), how)) in stmts.iter().zip(hows).enumerate() {
            if let Ok(how) = how {
                if let Some(e) = how.name().and_then(|n| unsent.get(n)) {
                    refused[i] = Some(e.clone());
                } else {
                    match self.send_prepared(how, params) {
                        Ok(()) => pending_sync = true,
                        Err(e) if self.is_ok() && !e.sqlstate.starts_with("08") => {
                            if let How::Parse { name, .. } = how {
                                unsent.insert(name.clone(), e.clone());
                            }
                            refused[i] = Some(e);
                        }
                        Err(_) => return Err(self.broken()),
                    }
                }
            }
            if sync_after(i) && pending_sync {
                // SAFETY: valid connection in pipeline mode.
                if unsafe { ffi::PQsendPipelineSync(self.raw.as_ptr()) } == 0 {
                    return Err(self.broken());
                }
                pending_sync = false;
            }
        }
        // SAFETY: valid connection; a blocking connection flushes everything.
        if unsafe { ffi::PQflush(self.raw.as_ptr()) } != 0 {
            return Err(self.broken());
        }
        let chunk = c_int::try_from(chunk.max(1)).unwrap_or(c_int::MAX);
        // Parses that failed in this pipeline: a later statement naming one gets its error.
        let mut failed: HashMap<CString, PgError> = HashMap::new();
        let mut synced_segment = false;
        for (i, how) in hows.iter().enumerate() {
            if let Err(e) = how {
                each(i, Err(e.clone()));
            } else if let Some(e) = refused[i].take() {
                each(i, Err(e));
            } else {
                synced_segment = true;
                // A Parse sent with the statement answers first.
                let mut parse_error = None;
                if let Ok(How::Parse { name, .. }) = how {
                    let mut parsed = RowStream {
                        conn: self,
                        finished: false,
                    };
                    let r = parsed.next_result();
                    drop(parsed);
                    match r {
                        Ok(_) if last_forget.is_none_or(|f| f < i) => {
                            let (sql, params) = stmts[i];
                            self.remember(sql, params, name.clone());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if e.sqlstate != ABORTED {
                                failed.insert(name.clone(), e.clone());
                                parse_error = Some(e);
                            }
                        }
                    }
                }
                if parse_error.is_none() {
                    if let Some(e) = how
                        .as_ref()
                        .ok()
                        .and_then(How::name)
                        .and_then(|n| failed.get(n))
                    {
                        parse_error = Some(e.clone());
                    }
                }
                // SAFETY: valid connection; this query's results have not been read yet.
                unsafe { ffi::PQsetChunkedRowsMode(self.raw.as_ptr(), chunk) };
                let mut stream = RowStream {
                    conn: self,
                    finished: false,
                };
                match parse_error {
                    // Its run failed too (no such statement): the Parse's error is the one.
                    Some(e) => {
                        drop(stream);
                        each(i, Err(e));
                    }
                    None => {
                        each(i, Ok(&mut stream));
                        drop(stream);
                    }
                }
            }
            if sync_after(i) && synced_segment {
                // SAFETY: valid connection; the sync's own result comes next.
                let r = unsafe { ffi::PQgetResult(self.raw.as_ptr()) };
                let Some(raw) = NonNull::new(r) else {
                    return Err(self.broken());
                };
                let res = PgResult { raw };
                if res.status() != ffi::ExecStatusType::PGRES_PIPELINE_SYNC {
                    return Err(PgError {
                        sqlstate: "08P01".into(),
                        message: format!("pipeline out of step: {:?}", res.status()),
                    });
                }
                synced_segment = false;
            }
        }
        Ok(())
    }

    /// `name` is `sql` prepared for these parameter types.
    pub(super) fn remember(&mut self, sql: &str, params: &[Param<'_>], name: CString) {
        self.prepared
            .entry(sql.to_string())
            .or_default()
            .push(Prepared {
                name,
                types: params.iter().map(Param::type_oid).collect(),
            });
        self.count += 1;
    }

    /// The name of `sql` prepared for these parameter types, preparing it if needed; in
    /// unnamed mode the SQL text, to be sent as it is.
    pub(super) fn prepare(&mut self, sql: &str, params: &[Param<'_>]) -> Result<CString, PgError> {
        if self.unnamed {
            return CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"));
        }
        if let Some(name) = self.cached(sql, params) {
            return Ok(name);
        }
        if self.count >= CACHE_CAPACITY {
            self.exec("DEALLOCATE ALL")?;
            self.forget_prepared();
        }
        self.next_name += 1;
        let name = CString::new(format!("s{}", self.next_name))
            .map_err(|_| PgError::client("statement name"))?;
        let text = CString::new(sql).map_err(|_| PgError::client("SQL text holds a NUL"))?;
        let types: Vec<Oid> = params.iter().map(Param::type_oid).collect();
        // SAFETY: valid connection, C strings and a types array of `params.len()` entries.
        let res = unsafe {
            ffi::PQprepare(
                self.raw.as_ptr(),
                name.as_ptr(),
                text.as_ptr(),
                params.len() as c_int,
                types.as_ptr(),
            )
        };
        // SAFETY: a fresh result of this connection, owned by nobody yet.
        unsafe { self.check(res) }?;
        self.remember(sql, params, name.clone());
        Ok(name)
    }
}
