//! The bounded queue between the loops and one kind of worker (readers or writers).
//!
//! Loops add a whole pass's jobs under one lock ([`JobQueue::push_all`]), waking no more
//! workers than there are jobs; a worker takes its share of what waits in one go
//! ([`JobQueue::take`]). Compared with a channel of single jobs this saves a lock and a wake
//! per request, which on a busy core are two context switches per request.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::error::DbError;
use super::fair::{FairQueue, OfUser, Pushed};
use super::workers::Job;
use protocol::proto::ErrorCode;

/// Jobs waiting for one kind of worker, in two classes: the servers' own (logins, users,
/// documents: `Caller::sandboxed` false) and the clients'. Each class has its own bound, so
/// clients filling their queue never make the servers' work OVERLOADED; workers take the
/// servers' jobs first, and a worker made with [`Takes::ServersOnly`] takes nothing else, so
/// the servers' work never waits behind clients' statements, however long those run. The
/// clients' jobs wait per user and are served in turns, one user's on at most all the
/// clients' workers but one ([`FairQueue`]), so that no user waits behind another's.
#[derive(Debug)]
pub(crate) struct JobQueue {
    state: Mutex<State>,
    /// Wakes workers that take any job.
    ready_any: Condvar,
    /// Wakes workers that take the servers' jobs only.
    ready_servers: Condvar,
    /// Most jobs of one class waiting at once; past it jobs are answered OVERLOADED.
    cap: usize,
}

/// Which jobs a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takes {
    /// The servers' jobs first, then the clients'.
    Any,
    /// The servers' jobs only: capacity clients cannot take.
    ServersOnly,
}

#[derive(Debug)]
struct State {
    servers: VecDeque<Job>,
    clients: FairQueue<Job>,
    /// Workers of each kind waiting for jobs.
    idle_any: usize,
    idle_servers: usize,
    /// No more jobs are accepted; workers finish what waits, then stop.
    closed: bool,
}

impl State {
    fn new() -> State {
        State {
            servers: VecDeque::new(),
            clients: FairQueue::new(1),
            idle_any: 0,
            idle_servers: 0,
            closed: false,
        }
    }

    /// Queues `job` in its class, at most `cap` per class; what cannot stay goes to
    /// `refused` (the job, or a client's job it displaced). True when a worker may take
    /// `job` now (a client's user may be at its share of workers).
    fn push(&mut self, job: Job, cap: usize, refused: &mut Vec<Job>) -> bool {
        if !job.caller.sandboxed {
            if self.servers.len() >= cap {
                refused.push(job);
                return false;
            }
            self.servers.push_back(job);
            return true;
        }
        let (pushed, takeable) = self.clients.push(job, cap);
        match pushed {
            Pushed::Queued => takeable,
            Pushed::Refused(job) => {
                refused.push(job);
                false
            }
            Pushed::Displaced(old) => {
                refused.push(old);
                takeable
            }
        }
    }
}

impl OfUser for Job {
    fn user(&self) -> &str {
        &self.caller.user
    }
}

/// Wakes to send after queuing jobs: (servers-only workers, any-job workers). Workers that
/// take any job are woken first, for either class (they take the servers' jobs first); a
/// servers-only worker only for servers' jobs no idle any-job worker is left for, that is
/// when the others are busy, which is what it is kept for. So a load of the servers' jobs
/// alone wakes no more threads than it would without the reserve.
fn wakes(st: &State, servers: usize, clients: usize) -> (usize, usize) {
    let to_any = (servers + clients).min(st.idle_any);
    let to_servers_only = servers.saturating_sub(st.idle_any).min(st.idle_servers);
    (to_servers_only, to_any)
}

impl JobQueue {
    /// A queue of at most `cap` jobs per class.
    pub fn new(cap: usize) -> Self {
        JobQueue {
            state: Mutex::new(State::new()),
            ready_any: Condvar::new(),
            ready_servers: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn wake(&self, (servers_only, any): (usize, usize)) {
        for _ in 0..servers_only {
            self.ready_servers.notify_one();
        }
        for _ in 0..any {
            self.ready_any.notify_one();
        }
    }

    /// The most workers one user's jobs may occupy at once, of the `workers` that take the
    /// clients' jobs: all but one, so that another user always finds one.
    pub fn set_client_workers(&self, workers: usize) {
        self.lock()
            .clients
            .set_share(workers.saturating_sub(1).max(1));
    }

    /// The worker that took for `held` is done with those jobs (see [`JobQueue::take`]): its
    /// users' next jobs may go to any worker, one waiting is woken for them.
    pub fn release(&self, held: &mut Vec<usize>) {
        if held.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.clients.release(held);
        let wake = st.idle_any > 0 && st.clients.any_takeable();
        drop(st);
        if wake {
            self.ready_any.notify_one();
        }
    }

    /// Queues `job`, answering OVERLOADED when its class is full.
    pub fn push(&self, job: Job) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            return refuse(job, true);
        }
        let server = !job.caller.sandboxed;
        let mut refused = Vec::new();
        let wake = if st.push(job, self.cap, &mut refused) {
            wakes(&st, usize::from(server), usize::from(!server))
        } else {
            (0, 0)
        };
        drop(st);
        self.wake(wake);
        for job in refused {
            refuse(job, false);
        }
    }

    /// Queues all of `jobs` (emptied, capacity kept) under one lock and wakes at most one idle
    /// worker per job a worker may take now; those that do not fit are answered OVERLOADED
    /// (of the clients', the newest of the user with the most waiting: see [`FairQueue`]).
    pub fn push_all(&self, jobs: &mut Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut refused = Vec::new();
        let (wake, closed) = {
            let mut st = self.lock();
            if st.closed {
                ((0, 0), true)
            } else {
                let (mut servers, mut clients) = (0, 0);
                for job in jobs.drain(..) {
                    let server = !job.caller.sandboxed;
                    if st.push(job, self.cap, &mut refused) {
                        if server {
                            servers += 1;
                        } else {
                            clients += 1;
                        }
                    }
                }
                (wakes(&st, servers, clients), false)
            }
        };
        self.wake(wake);
        for job in jobs.drain(..).chain(refused) {
            refuse(job, closed);
        }
    }

    /// Waits for jobs this worker takes and moves its share of them into `into`: the
    /// servers' jobs first (then, for [`Takes::Any`], the clients', users in turn), what
    /// waits of one class divided between this worker and those idle (woken to take the
    /// rest), at least one, at most `max`. `held` names the users whose jobs this worker
    /// holds: those it took last time are released first, those it takes now are added. False
    /// once the queue is closed and holds nothing for this worker.
    pub fn take(
        &self,
        into: &mut Vec<Job>,
        held: &mut Vec<usize>,
        max: usize,
        takes: Takes,
    ) -> bool {
        let mut st = self.lock();
        st.clients.release(held);
        let max = max.max(1);
        loop {
            // Shares are kept for the idle workers `wakes` would wake: the any-job ones (the
            // servers-only ones are woken when those are short, and then take what is left).
            let idle = st.idle_any;
            if !st.servers.is_empty() {
                let n = st.servers.len().div_ceil(idle + 1).clamp(1, max);
                into.extend(st.servers.drain(..n));
                return true;
            }
            if takes == Takes::Any && !st.clients.is_empty() {
                let n = st.clients.len().div_ceil(idle + 1).clamp(1, max);
                if st.clients.take(n, into, held) > 0 {
                    // Another user's jobs may wait for a worker this one did not wake.
                    let more = idle > 0 && st.clients.any_takeable();
                    drop(st);
                    if more {
                        self.ready_any.notify_one();
                    }
                    return true;
                }
            }
            if st.closed {
                return false;
            }
            let ready = match takes {
                Takes::Any => {
                    st.idle_any += 1;
                    &self.ready_any
                }
                Takes::ServersOnly => {
                    st.idle_servers += 1;
                    &self.ready_servers
                }
            };
            st = match ready.wait(st) {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            match takes {
                Takes::Any => st.idle_any -= 1,
                Takes::ServersOnly => st.idle_servers -= 1,
            }
        }
    }

    /// Accepts no more jobs; workers finish those waiting, then [`JobQueue::take`] says stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready_any.notify_all();
        self.ready_servers.notify_all();
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
