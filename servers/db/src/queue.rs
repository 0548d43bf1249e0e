//! The bounded queue between the loops and one kind of worker (readers or writers).
//!
//! Loops add a whole pass's jobs under one lock ([`JobQueue::push_all`]), waking no more
//! workers than there are jobs; a worker takes its share of what waits in one go
//! ([`JobQueue::take`]). Compared with a channel of single jobs this saves a lock and a wake
//! per request, which on a busy core are two context switches per request.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::error::DbError;
use super::workers::Job;
use protocol::proto::ErrorCode;

/// Jobs waiting for one kind of worker.
#[derive(Debug)]
pub(crate) struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    /// Most jobs waiting at once; past it jobs are answered OVERLOADED.
    cap: usize,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for jobs.
    idle: usize,
    /// No more jobs are accepted; workers finish what waits, then stop.
    closed: bool,
}

impl JobQueue {
    /// A queue of at most `cap` jobs.
    pub fn new(cap: usize) -> Self {
        JobQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues `job`, answering OVERLOADED when the queue is full.
    pub fn push(&self, job: Job) {
        let mut st = self.lock();
        if st.closed || st.jobs.len() >= self.cap {
            let closed = st.closed;
            drop(st);
            return refuse(job, closed);
        }
        st.jobs.push_back(job);
        let wake = st.idle > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Queues all of `jobs` (emptied, capacity kept) under one lock and wakes at most one idle
    /// worker per job; those that do not fit are answered OVERLOADED.
    pub fn push_all(&self, jobs: &mut Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let (wake, closed) = {
            let mut st = self.lock();
            if st.closed {
                (0, true)
            } else {
                let fit = self.cap.saturating_sub(st.jobs.len()).min(jobs.len());
                st.jobs.extend(jobs.drain(..fit));
                (fit.min(st.idle), false)
            }
        };
        for _ in 0..wake {
            self.ready.notify_one();
        }
        for job in jobs.drain(..) {
            refuse(job, closed);
        }
    }

    /// Waits for jobs and moves this worker's share of them into `into`: what waits divided
    /// between this worker and those idle (woken to take the rest), at least one, at most
    /// `max`. False once the queue is closed and empty.
    pub fn take(&self, into: &mut Vec<Job>, max: usize) -> bool {
        let mut st = self.lock();
        loop {
            if !st.jobs.is_empty() {
                let n = st.jobs.len().div_ceil(st.idle + 1).clamp(1, max.max(1));
                into.extend(st.jobs.drain(..n));
                return true;
            }
            if st.closed {
                return false;
            }
            st.idle += 1;
            st = match self.ready.wait(st) {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            st.idle -= 1;
        }
    }

    /// Accepts no more jobs; workers finish those waiting, then [`JobQueue::take`] says stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Answers a job the queue cannot take.
fn refuse(job: Job, closed: bool) {
    job.reply.send(Err(if closed {
        DbError::new(ErrorCode::Unavailable, "database workers stopped")
    } else {
        DbError::new(ErrorCode::Overloaded, "work queue full, retry later")
    }));
}
