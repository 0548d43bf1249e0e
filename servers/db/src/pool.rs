//! The worker pool every backend runs on.
//!
//! The pool owns what does not depend on the database: the two bounded queues (reads, writes),
//! routing a job to one of them, refusing what the server's own transaction handling forbids,
//! the commit counters and index, the statistics, when idempotency records are pruned, and the
//! worker threads themselves. A backend ([`crate::sqlite_pool`], [`crate::postgres_pool`])
//! gives only its `Worker`s: how a group of reads or writes runs on its connections.
//!
//! ```text
//! submit ─► check_allowed ─► read keyword? ─► Pending.reads ─┐ flush: ─► readers queue ─► reader thread ─► Worker::run_group
//!                                   └ else ─► Pending.writes ┘ one lock ─► writers queue ─► writer thread ─► Worker::run_group
//! ```
//!
//! A loop stages its pass's jobs in a [`Pending`] and flushes it at the end of the pass: one
//! lock and at most one wake per worker for the pass; workers answer a group's jobs together
//! ([`Replies`]). On a busy core this saves two context switches per request.
//!
//! A reader that finds a job is a write after all (SQLite: not read-only; PostgreSQL: the
//! read-only session refused it) hands it to the writers queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::DbError;
use crate::monitor::Monitor;
use crate::queue::{JobQueue, Takes};
use crate::reply::Replies;
use crate::txn::Txns;
use crate::workers::{check_allowed, starts_with_keyword, Job, Work, READ_KEYWORDS};
use protocol::proto::{ErrorCode, ReadConsistency, StatsResult};

/// Idempotency records are kept this long.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

/// Idempotency records are pruned once per this many acknowledged writes.
const PRUNE_EVERY_WRITES: u64 = 1000;

/// One worker thread's share of a backend: it owns its connections and runs the groups of jobs
/// the pool takes from its queue (one job, or up to the group size when several wait).
pub(crate) trait Worker: Send + 'static {
    /// Runs `jobs` (taking them out) and answers each through its reply, held in `out`
    /// ([`crate::reply::ReplyTo::hold`]) until the group ends.
    fn run_group(&mut self, jobs: &mut Vec<Job>, out: &mut Replies);

    /// Slow work due after a group, run once its answers are out (they are held until the
    /// group ends): trying a server known to be down again, which can take a connect timeout.
    fn after_group(&mut self) {}
}

/// The queues, for workers that hand a job on (a reader that found a write).
#[derive(Debug, Clone)]
pub(crate) struct Queues {
    /// Jobs that may be reads.
    pub readers: Arc<JobQueue>,
    /// Writes and batches.
    pub writers: Arc<JobQueue>,
}

/// Jobs a loop has staged during its pass ([`Pool::submit`]), handed to the workers together
/// by [`Pool::flush`]. Keeps its capacity from pass to pass.
#[derive(Debug, Default)]
pub struct Pending {
    reads: Vec<Job>,
    writes: Vec<Job>,
}

/// Commits and the commit index, kept the same way for every backend.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// The highest commit index acknowledged (shared with the interactive transactions).
    pub committed: Arc<AtomicU64>,
    commits: AtomicU64,
    writes: AtomicU64,
}

impl Counters {
    /// Counters starting at the database's current commit index.
    pub fn starting_at(index: u64) -> Arc<Counters> {
        let c = Counters::default();
        c.committed.store(index, Ordering::Release);
        Arc::new(c)
    }

    /// The highest commit index acknowledged.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Records one commit of `writes` writes, reaching `index`. True when the committing worker
    /// should now prune old idempotency records (with [`idempotency_cutoff`]).
    #[must_use]
    pub fn commit(&self, index: u64, writes: u64) -> bool {
        self.committed.fetch_max(index, Ordering::AcqRel);
        self.commits.fetch_add(1, Ordering::Relaxed);
        let before = self.writes.fetch_add(writes, Ordering::Relaxed);
        before / PRUNE_EVERY_WRITES != (before + writes) / PRUNE_EVERY_WRITES
    }
}

/// Idempotency records created before this (seconds since the epoch) may be deleted.
pub(crate) fn idempotency_cutoff() -> i64 {
    now_secs() - IDEMPOTENCY_TTL_SECS
}

/// Seconds since the epoch, for idempotency records.
pub(crate) fn now_secs() -> i64 {
    i64::try_from(shared::clock::now_secs()).unwrap_or(i64::MAX)
}

/// Runs `f` on the servers' jobs of `jobs`, then on the clients' (`true`), taking them out;
/// without a copy when the group has one identity only (the usual case).
pub(crate) fn for_each_identity(jobs: &mut Vec<Job>, mut f: impl FnMut(bool, &mut Vec<Job>)) {
    let Some(first) = jobs.first().map(|j| j.caller.sandboxed) else {
        return;
    };
    if jobs.iter().all(|j| j.caller.sandboxed == first) {
        return f(first, jobs);
    }
    let (mut clients, mut servers): (Vec<Job>, Vec<Job>) =
        jobs.drain(..).partition(|j| j.caller.sandboxed);
    f(false, &mut servers);
    f(true, &mut clients);
}

/// How a backend answers an `AFTER_INDEX` read whose index is not committed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterIndex {
    /// One database: every read sees every commit, so an index above the last one was never
    /// acknowledged and is answered STALE at once.
    Stale,
    /// Replicas: the reader waits for one to catch up, or asks the primary.
    Readers,
}

/// What a backend hands the pool to start.
pub(crate) struct Workers<R, W> {
    /// One per reader thread.
    pub readers: Vec<R>,
    /// One per writer thread.
    pub writers: Vec<W>,
    /// Jobs a reader takes at once.
    pub reader_group: usize,
    /// Jobs a writer takes at once.
    pub writer_group: usize,
    /// How many of the readers (the first ones) take the servers' jobs only: capacity the
    /// clients' statements cannot take (see [`JobQueue`]).
    pub reserved_readers: usize,
    /// The same for the writers.
    pub reserved_writers: usize,
    /// Where the writes go now (PostgreSQL's primary, `host:port`, empty while none
    /// answers); `None` for a backend with one place (SQLite).
    pub primary: Option<Arc<Mutex<String>>>,
}

/// A running backend: its workers, queues and counters, and its interactive transactions.
#[derive(Debug)]
pub struct Pool {
    txns: Txns,
    queues: Queues,
    counters: Arc<Counters>,
    monitor: Arc<Monitor>,
    after_index: AfterIndex,
    primary: Option<Arc<Mutex<String>>>,
}

impl Pool {
    /// Makes the queues (`queue` jobs each), lets `make` build the workers (they may keep the
    /// queues, to hand jobs on), and starts a thread for each.
    pub(crate) fn start<R: Worker, W: Worker>(
        queue: usize,
        counters: Arc<Counters>,
        monitor: Arc<Monitor>,
        txns: Txns,
        after_index: AfterIndex,
        make: impl FnOnce(&Queues) -> Result<Workers<R, W>, DbError>,
    ) -> Result<Pool, DbError> {
        let queues = Queues {
            readers: Arc::new(JobQueue::new(queue)),
            writers: Arc::new(JobQueue::new(queue)),
        };
        let workers = make(&queues)?;
        let primary = workers.primary.clone();
        queues.readers.set_client_workers(
            workers
                .readers
                .len()
                .saturating_sub(workers.reserved_readers),
        );
        queues.writers.set_client_workers(
            workers
                .writers
                .len()
                .saturating_sub(workers.reserved_writers),
        );
        let takes = |i: usize, reserved: usize| {
            if i < reserved {
                Takes::ServersOnly
            } else {
                Takes::Any
            }
        };
        for (i, w) in workers.writers.into_iter().enumerate() {
            serve(
                format!("db-writer-{i}"),
                w,
                &queues.writers,
                workers.writer_group,
                takes(i, workers.reserved_writers),
            )?;
        }
        for (i, r) in workers.readers.into_iter().enumerate() {
            serve(
                format!("db-reader-{i}"),
                r,
                &queues.readers,
                workers.reader_group,
                takes(i, workers.reserved_readers),
            )?;
        }
        Ok(Pool {
            txns,
            queues,
            counters,
            monitor,
            after_index,
            primary,
        })
    }

    /// Checks a statement or batch outside interactive transactions and stages it in
    /// `pending` (answering at once what is refused): single statements that look like reads
    /// for the readers, everything else for the writers. [`Pool::flush`] hands them over.
    pub fn submit(&self, job: Job, pending: &mut Pending) {
        if let Err(e) = check_allowed(&job.work, &job.caller) {
            return job.reply.send(Err(e));
        }
        if let Err(e) = self.stale(&job) {
            return job.reply.send(Err(e));
        }
        match &job.work {
            Work::Execute(st) if starts_with_keyword(&st.sql, READ_KEYWORDS) => {
                pending.reads.push(job)
            }
            _ => pending.writes.push(job),
        }
    }

    /// Stages a read the loop routed from a view of the request (its statement still
    /// encoded, [`Job::encoded`], and checked like any statement) for the readers.
    pub fn submit_read(&self, job: Job, pending: &mut Pending) {
        if let Err(e) = self.stale(&job) {
            return job.reply.send(Err(e));
        }
        pending.reads.push(job);
    }

    /// `STALE` for an `AFTER_INDEX` read beyond every commit, on a backend where no replica
    /// may catch up later.
    fn stale(&self, job: &Job) -> Result<(), DbError> {
        let now = self.committed_index();
        if self.after_index == AfterIndex::Stale
            && job.consistency == ReadConsistency::AfterIndex
            && job.after_index > now
        {
            return Err(DbError::new(
                ErrorCode::Stale,
                format!("commit index {} not reached (at {now})", job.after_index),
            ));
        }
        Ok(())
    }

    /// Hands the staged jobs to the workers: one lock per queue, and no more wakes than jobs.
    pub fn flush(&self, pending: &mut Pending) {
        self.queues.readers.push_all(&mut pending.reads);
        self.queues.writers.push_all(&mut pending.writes);
    }

    /// Interactive transactions and cursors.
    pub fn txns(&self) -> &Txns {
        &self.txns
    }

    /// The highest commit index this server has acknowledged.
    pub fn committed_index(&self) -> u64 {
        self.counters.committed_index()
    }

    /// Query statistics and commit counters. `grouped_writes` counts writes acknowledged by
    /// the commits (SQLite groups them in one transaction; PostgreSQL pipelines plain writes in
    /// one and shares WAL flushes between concurrent commits).
    /// `brief`: without the per-statement figures.
    pub fn stats(&self, brief: bool) -> StatsResult {
        StatsResult {
            statements: if brief {
                Vec::new()
            } else {
                self.monitor.snapshot()
            },
            commits: self.counters.commits.load(Ordering::Relaxed),
            grouped_writes: self.counters.writes.load(Ordering::Relaxed),
            commit_index: self.committed_index(),
            primary: self
                .primary
                .as_ref()
                .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
                .unwrap_or_default(),
        }
    }
}

/// Starts a thread that runs `worker` on groups of up to `group` jobs from `jobs`, until the
/// pool closes the queue and it is empty. A group's answers go back together.
fn serve(
    name: String,
    mut worker: impl Worker,
    jobs: &Arc<JobQueue>,
    group: usize,
    takes: Takes,
) -> Result<(), DbError> {
    let jobs = Arc::clone(jobs);
    let group = group.max(1);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut taken = Vec::with_capacity(group.min(64));
            let mut held = Vec::new();
            let mut out = Replies::default();
            while jobs.take(&mut taken, &mut held, group, takes) {
                decode_all(&mut taken, &mut out);
                worker.run_group(&mut taken, &mut out);
                out.deliver();
                taken.clear();
                // Before the slow work after a group (a probe may wait a connect timeout):
                // this worker's users' next jobs need not wait for it.
                jobs.release(&mut held);
                worker.after_group();
            }
        })
        .map(|_| ())
        .map_err(|e| DbError::new(ErrorCode::Internal, format!("cannot start a thread: {e}")))
}

/// Decodes the statements the loops left encoded ([`Job::decode`]); a job whose statement
/// does not decode is answered and taken out.
fn decode_all(jobs: &mut Vec<Job>, out: &mut Replies) {
    let mut i = 0;
    while i < jobs.len() {
        match jobs[i].decode() {
            Ok(()) => i += 1,
            Err(e) => jobs.remove(i).reply.hold(Err(e), out),
        }
    }
}

impl Drop for Pool {
    /// Workers finish the jobs already queued, then stop.
    fn drop(&mut self) {
        self.queues.readers.close();
        self.queues.writers.close();
    }
}
