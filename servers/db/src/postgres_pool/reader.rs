//! The readers: statements that only read, on replicas when they are fresh enough, else on the primary; identity checks on the primary.

use super::*;

pub(super) struct Replica {
    pub(super) endpoint: Endpoint,
    pub(super) pg: Option<Pg>,
    pub(super) client_endpoint: Endpoint,
    pub(super) client_pg: Option<Pg>,
    pub(super) health: Arc<Mutex<ReplicaHealth>>,
    /// The replayed WAL position last seen here: a lower bound for what a read there sees.
    pub(super) replayed: u64,
}

pub(super) struct Reader {
    /// A replica this reader is to try again once its reads are answered.
    pub(super) probe: Option<usize>,
    /// The same for the primary (see [`PrimaryGate::pass`]).
    pub(super) probe_primary: bool,
    pub(super) endpoint: Endpoint,
    pub(super) gate: Arc<PrimaryGate>,
    pub(super) primary: Option<Pg>,
    pub(super) client_endpoint: Endpoint,
    pub(super) client_primary: Option<Pg>,
    pub(super) login: Arc<ClientLogin>,
    pub(super) replicas: Vec<Replica>,
    pub(super) rr: Arc<AtomicUsize>,
    pub(super) wait: Duration,
    pub(super) retry: Duration,
    pub(super) writers: Arc<JobQueue>,
    pub(super) committed: Arc<AtomicU64>,
    pub(super) monitor: Arc<Monitor>,
}

/// True when a group's statements run as the client role: a group holds one identity only
/// (the writers group plain writes per identity; the readers split with `for_each_identity`).
pub(super) fn run_as_client(jobs: &[Job]) -> bool {
    jobs.first().is_some_and(|j| j.caller.sandboxed)
}

/// A job's statement (groups hold statements only).
pub(super) fn statement(j: &Job) -> Option<(&Statement, Limit)> {
    match &j.work {
        Work::Execute(st) => Some((st, j.limit)),
        Work::Batch(_) => None,
    }
}

/// Answers a job's read outcome: a "read" that wrote goes to the writers instead.
pub(super) fn answer(
    writers: &Arc<JobQueue>,
    monitor: &Monitor,
    job: Job,
    r: Result<DataResponse, DbError>,
    start: Instant,
    out: &mut Replies,
) {
    if matches!(&r, Err(e) if e.code == ErrorCode::ReadOnly) {
        return writers.push(job);
    }
    if let Work::Execute(st) = &job.work {
        monitor.record(&st.sql, start.elapsed(), r.is_ok());
    }
    job.reply.hold(r, out);
}

/// A read-only session: a statement that writes fails READ_ONLY and goes to the writers.
pub(super) const READ_ONLY_SESSION: &str = "SET default_transaction_read_only = on";

impl Worker for Reader {
    fn run_group(&mut self, jobs: &mut Vec<Job>, out: &mut Replies) {
        Reader::run_group(self, std::mem::take(jobs), out);
    }

    /// The probes this worker claimed (a replica's, the primary's), once its answers are out.
    fn after_group(&mut self) {
        if let Some(i) = self.probe.take() {
            self.probe_replica(i);
        }
        if std::mem::take(&mut self.probe_primary) {
            self.gate
                .probe(&mut self.primary, &self.endpoint, READ_ONLY_SESSION);
        }
    }
}

impl Reader {
    /// Serves a group of reads: those that may go to a replica on the next healthy one (in one
    /// round trip), the rest, and any the replica could not serve, on the primary. The
    /// servers' reads and the clients' run apart.
    pub(super) fn run_group(&mut self, mut jobs: Vec<Job>, out: &mut Replies) {
        crate::pool::for_each_identity(&mut jobs, |_, group| {
            self.run_identity(std::mem::take(group), out);
        });
    }

    /// Answers every job with `e`.
    fn fail_all(&self, jobs: Vec<Job>, e: &DbError, start: Instant, out: &mut Replies) {
        for job in jobs {
            answer(
                &self.writers,
                &self.monitor,
                job,
                Err(e.clone()),
                start,
                out,
            );
        }
    }

    pub(super) fn run_identity(&mut self, jobs: Vec<Job>, out: &mut Replies) {
        let start = Instant::now();
        if run_as_client(&jobs) {
            if let Err(e) = self.login.usable() {
                return self.fail_all(jobs, &e, start, out);
            }
        }
        let (to_replica, mut to_primary): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.consistency != ReadConsistency::Primary && !self.replicas.is_empty());
        if !to_replica.is_empty() {
            to_primary.extend(self.on_replica(to_replica, start, out));
        }
        if !to_primary.is_empty() {
            self.on_primary(to_primary, start, out);
        }
    }

    /// Tries replica `i` again (it was down): a new connection, marked up or down for `retry`.
    pub(super) fn probe_replica(&mut self, i: usize) {
        let retry = self.retry;
        let rep = &mut self.replicas[i];
        rep.pg = None;
        rep.client_pg = None;
        let r = ensure(&mut rep.pg, &rep.endpoint, READ_ONLY_SESSION).map(|_| ());
        let mut h = lock(&rep.health);
        h.probing = false;
        if let Some(pg) = rep.pg.as_mut() {
            pg.outages_before = h.outages;
        }
        match r {
            Ok(()) => {
                h.down_until = None;
                let at = rep.pg.as_ref().map(Pg::server).unwrap_or_default();
                info!("Replica {} answers again, at {at}", rep.endpoint.redacted());
            }
            Err(e) => {
                h.down_until = Some(Instant::now() + retry);
                log::debug!(
                    "Replica {} still down: {}",
                    rep.endpoint.redacted(),
                    e.message
                );
            }
        }
    }

    /// Whether replica `i` may be read from now (claiming its probe when one is due).
    pub(super) fn replica_use(&self, i: usize, now: Instant) -> Use {
        let mut h = lock(&self.replicas[i].health);
        match h.down_until {
            None => Use::Read(h.outages),
            Some(t) if now < t || h.probing => Use::Skip,
            Some(_) => {
                h.probing = true;
                Use::Probe
            }
        }
    }

    /// Replica `i` failed a read: skipped by every reader until a probe reaches it again. The
    /// first probe is due at once: a multi-host URL may reach another node (the standby left
    /// after a failover); the next ones every `retry`.
    pub(super) fn replica_failed(&mut self, i: usize, e: &DbError) {
        let retry = self.retry;
        let rep = &mut self.replicas[i];
        // Of a URL naming several nodes, the one that failed is tried last from now on.
        if let Some(pg) = rep.pg.as_ref().or(rep.client_pg.as_ref()) {
            rep.endpoint.try_last(&pg.server());
        }
        rep.pg = None;
        rep.client_pg = None;
        let mut h = lock(&rep.health);
        if h.down_until.is_none() {
            h.outages += 1;
            h.down_until = Some(Instant::now());
            warn!(
                "Replica {} failed ({}); skipped until a new connection answers (tried at once, then every {:?})",
                rep.endpoint.redacted(),
                e.message,
                retry
            );
        }
    }

    /// Runs `jobs` on a replica; returns those the primary must serve.
    pub(super) fn on_replica(
        &mut self,
        jobs: Vec<Job>,
        start: Instant,
        out: &mut Replies,
    ) -> Vec<Job> {
        let n = self.replicas.len();
        let first = self.rr.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        for k in 0..n {
            let i = (first + k) % n;
            let outages = match self.replica_use(i, now) {
                Use::Read(outages) => outages,
                Use::Skip => continue,
                Use::Probe => {
                    if self.probe.is_none() {
                        self.probe = Some(i);
                    } else {
                        lock(&self.replicas[i].health).probing = false;
                    }
                    continue;
                }
            };
            let client = run_as_client(&jobs);
            let mut outages = outages;
            for last_try in [false, true] {
                match self.read_replica(i, &jobs, outages) {
                    Ok((outcomes, replayed)) => {
                        let mut rest = Vec::new();
                        for (job, outcome) in jobs.into_iter().zip(outcomes) {
                            match outcome {
                                None => rest.push(job),
                                Some(r) => {
                                    let r = r.map(|(res, _)| {
                                        respond(data_response::Kind::Result(res), replayed)
                                    });
                                    answer(&self.writers, &self.monitor, job, r, start, out);
                                }
                            }
                        }
                        return rest;
                    }
                    // A client connection that failed says nothing of the replica (a client
                    // statement may end its own session, after as long as it likes): it is
                    // down only if db-server's own connection fails too. The client's reads
                    // go to the primary, like any the replica could not serve.
                    Err(_) if client && self.replica_answers(i, outages) => return jobs,
                    Err(e) => {
                        self.replica_failed(i, &e);
                        // Of a URL naming several hosts, another may answer now (after a
                        // failover, the node that survived): it is tried at once, rather
                        // than sending these reads to a primary that may have gone silent
                        // with the host that failed.
                        if last_try
                            || !self.replicas[i].endpoint.leads_elsewhere()
                            || !self.claim_probe(i)
                        {
                            break;
                        }
                        self.probe_replica(i);
                        match self.replica_use(i, Instant::now()) {
                            Use::Read(now) => outages = now,
                            _ => break,
                        }
                    }
                }
            }
        }
        jobs
    }

    /// Runs `jobs` on replica `i` ([`Reader::try_replica`]). A connection that fails at once
    /// (closed by a restarted server) is replaced at once; one that fails slowly (a silent
    /// host: the timeout ran out) is the replica's failure, rather than waiting out a
    /// connection attempt too.
    #[allow(clippy::type_complexity)]
    fn read_replica(
        &mut self,
        i: usize,
        jobs: &[Job],
        outages: u64,
    ) -> Result<(Vec<Option<Result<(StatementResult, bool), DbError>>>, u64), DbError> {
        let client = run_as_client(jobs);
        let mut outcome = Err(DbError::new(ErrorCode::Unavailable, "not run"));
        for _ in 0..2 {
            let rep = &self.replicas[i];
            let had = if client { &rep.client_pg } else { &rep.pg }.is_some();
            let tried = Instant::now();
            outcome = self.try_replica(i, jobs, outages);
            let quick = tried.elapsed() < Duration::from_millis(500);
            if outcome.is_ok() || !(had && quick) {
                break;
            }
            let rep = &mut self.replicas[i];
            *if client {
                &mut rep.client_pg
            } else {
                &mut rep.pg
            } = None;
        }
        outcome
    }

    /// Claims replica `i`'s probe (it is down): false when another reader is making it.
    fn claim_probe(&self, i: usize) -> bool {
        let mut h = lock(&self.replicas[i].health);
        !std::mem::replace(&mut h.probing, true)
    }

    /// Whether replica `i` answers db-server's own connection (one made since outage
    /// `outages`): one round trip, on a new connection if the one there is found broken.
    fn replica_answers(&mut self, i: usize, outages: u64) -> bool {
        let rep = &mut self.replicas[i];
        for _ in 0..2 {
            if rep
                .pg
                .as_ref()
                .is_some_and(|pg| pg.outages_before < outages)
            {
                rep.pg = None;
            }
            let had = rep.pg.is_some();
            let answered = ensure(&mut rep.pg, &rep.endpoint, READ_ONLY_SESSION).and_then(|pg| {
                pg.outages_before = outages;
                pg.scalar("SELECT 1", &[])
            });
            if answered.is_ok() {
                return true;
            }
            rep.pg = None;
            if !had {
                break;
            }
        }
        false
    }

    /// Runs on replica `i` the jobs it can serve: `None` for a job that must go to the primary
    /// (an AFTER_INDEX the replica did not reach within the wait). An `Err` means the replica
    /// failed.
    #[allow(clippy::type_complexity)]
    pub(super) fn try_replica(
        &mut self,
        i: usize,
        jobs: &[Job],
        outages: u64,
    ) -> Result<(Vec<Option<Result<(StatementResult, bool), DbError>>>, u64), DbError> {
        let wait = self.wait;
        let rep = &mut self.replicas[i];
        let (slot, endpoint) = if run_as_client(jobs) {
            (&mut rep.client_pg, &rep.client_endpoint)
        } else {
            (&mut rep.pg, &rep.endpoint)
        };
        if slot.as_ref().is_some_and(|pg| pg.outages_before < outages) {
            *slot = None;
        }
        let pg = ensure(slot, endpoint, READ_ONLY_SESSION)?;
        pg.outages_before = outages;
        // Only AFTER_INDEX pays a round trip for the replica's position; other reads report
        // the last one seen, which they are at least as new as.
        let needed = jobs
            .iter()
            .filter(|j| j.consistency == ReadConsistency::AfterIndex)
            .map(|j| j.after_index)
            .max()
            .unwrap_or(0);
        if needed > rep.replayed {
            let deadline = Instant::now() + wait;
            loop {
                rep.replayed = rep.replayed.max(pg.replay_lsn()?);
                if rep.replayed >= needed || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let replayed = rep.replayed;
        let here: Vec<bool> = jobs
            .iter()
            .map(|j| j.consistency != ReadConsistency::AfterIndex || j.after_index <= replayed)
            .collect();
        let sts: Vec<(&Statement, Limit)> = jobs
            .iter()
            .zip(&here)
            .filter(|(_, h)| **h)
            .filter_map(|(j, _)| statement(j))
            .collect();
        let (ran, _) = pg.execute_group(&sts, None)?;
        let mut ran = ran.into_iter();
        let outcomes = here
            .iter()
            .map(|h| if *h { ran.next() } else { None })
            .collect();
        Ok((outcomes, replayed))
    }

    pub(super) fn on_primary(&mut self, jobs: Vec<Job>, start: Instant, out: &mut Replies) {
        let index = self.committed.load(Ordering::Acquire);
        // Reads are safe to repeat: a connection found broken is replaced once.
        let mut ran = Err(DbError::new(ErrorCode::Unavailable, "not run"));
        let client = run_as_client(&jobs);
        for _ in 0..2 {
            let tried = Instant::now();
            ran = self.read_primary(&jobs, index);
            if client {
                PrimaryGate::settle_client(&mut self.client_primary);
            } else {
                self.gate
                    .settle(&mut self.primary, ran.as_ref().err(), tried.elapsed());
            }
            if ran.is_ok() {
                break;
            }
        }
        match ran {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let r =
                        outcome.map(|(res, _)| respond(data_response::Kind::Result(res), index));
                    answer(&self.writers, &self.monitor, job, r, start, out);
                }
            }
            Err(e) => self.fail_all(jobs, &e, start, out),
        }
    }

    /// Runs `jobs` on the primary; `Err` when the connection failed.
    #[allow(clippy::type_complexity)]
    pub(super) fn read_primary(
        &mut self,
        jobs: &[Job],
        index: u64,
    ) -> Result<Vec<Result<(StatementResult, bool), DbError>>, DbError> {
        let pg = if run_as_client(jobs) {
            self.gate.connect_client(
                &mut self.client_primary,
                &self.client_endpoint,
                READ_ONLY_SESSION,
                &mut self.probe_primary,
            )?
        } else {
            self.gate.connect(
                &mut self.primary,
                &self.endpoint,
                READ_ONLY_SESSION,
                &mut self.probe_primary,
            )?
        };
        // An index beyond what this server acknowledged may come from another db-server: ask
        // the primary itself, once.
        let needed = jobs
            .iter()
            .filter(|j| j.consistency == ReadConsistency::AfterIndex)
            .map(|j| j.after_index)
            .max()
            .unwrap_or(0);
        let at = if needed > index {
            pg.current_lsn()?
        } else {
            index
        };
        let stale = |j: &Job| j.consistency == ReadConsistency::AfterIndex && j.after_index > at;
        let sts: Vec<(&Statement, Limit)> = jobs
            .iter()
            .filter(|j| !stale(j))
            .filter_map(statement)
            .collect();
        let (ran, _) = pg.execute_group(&sts, None)?;
        let mut ran = ran.into_iter();
        Ok(jobs
            .iter()
            .map(|j| {
                if stale(j) {
                    Err(DbError::new(
                        ErrorCode::Stale,
                        format!("commit index {} not reached (at {at})", j.after_index),
                    ))
                } else {
                    ran.next()
                        .unwrap_or_else(|| Err(DbError::new(ErrorCode::Internal, "read not run")))
                }
            })
            .collect())
    }
}
