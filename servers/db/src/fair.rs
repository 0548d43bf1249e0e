//! The clients' jobs of one kind, waiting per user and served in turns.
//!
//! One queue in arrival order lets a user with many statements in flight hold every worker
//! and make every other user's statement wait behind theirs: with runaway statements, each
//! until its deadline. Here each user's jobs wait apart; a worker takes one job of each user
//! in turn, and one user's jobs occupy at most `share` workers at once (all the clients'
//! workers but one), so another user's statement finds a worker free however many one user
//! sends. When the queue is full, the user with the most jobs waiting loses one, not the
//! newcomer (longest queue drop): a user flooding the queue cannot make another's OVERLOADED.
//!
//! Users are told apart by name (`Caller::user`); a user's entry stays while it has jobs
//! waiting or running, and idle entries are reused once there are many.

use std::collections::{HashMap, VecDeque};

/// Idle users' entries are forgotten past this many (kept before, to spare an allocation
/// per burst of a steady user).
const KEEP_IDLE: usize = 256;

/// A job that runs on some user's behalf.
pub(crate) trait OfUser {
    /// The user's name.
    fn user(&self) -> &str;
}

/// Jobs waiting per user (see the module's doc).
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    users: Vec<UserJobs<T>>,
    index: HashMap<String, usize>,
    /// Entries of `users` no user has now.
    free: Vec<usize>,
    /// Users with jobs waiting, in turn order.
    turns: VecDeque<usize>,
    len: usize,
    /// Most workers one user's jobs may occupy at once.
    share: usize,
}

#[derive(Debug)]
struct UserJobs<T> {
    name: String,
    waiting: VecDeque<T>,
    /// Workers holding this user's jobs now.
    holders: usize,
}

/// What became of a job offered to a full queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued.
    Queued,
    /// Not queued: its user has the most jobs waiting. Answer it OVERLOADED.
    Refused(T),
    /// Queued in place of this one, the newest of the user with the most jobs waiting.
    /// Answer that one OVERLOADED.
    Displaced(T),
}

impl<T: OfUser> FairQueue<T> {
    /// An empty queue where one user's jobs occupy at most `share` workers at once.
    pub(crate) fn new(share: usize) -> Self {
        FairQueue {
            users: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            turns: VecDeque::new(),
            len: 0,
            share: share.max(1),
        }
    }

    /// Changes the share (the number of workers taking these jobs is known once they start).
    pub(crate) fn set_share(&mut self, share: usize) {
        self.share = share.max(1);
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `job`, at most `bound` jobs waiting in all. Also says whether a worker may
    /// take the job's user's jobs now (the user holds fewer workers than its share).
    pub(crate) fn push(&mut self, job: T, bound: usize) -> (Pushed<T>, bool) {
        let u = self.entry(job.user());
        let mut pushed = Pushed::Queued;
        if self.len >= bound.max(1) {
            let longest = self
                .turns
                .iter()
                .copied()
                .max_by_key(|&i| self.users[i].waiting.len())
                .filter(|&i| self.users[i].waiting.len() > self.users[u].waiting.len());
            let Some(longest) = longest else {
                return (Pushed::Refused(job), false);
            };
            let Some(old) = self.users[longest].waiting.pop_back() else {
                return (Pushed::Refused(job), false);
            };
            self.len -= 1;
            if self.users[longest].waiting.is_empty() {
                self.turns.retain(|&i| i != longest);
            }
            pushed = Pushed::Displaced(old);
        }
        let jobs = &mut self.users[u];
        if jobs.waiting.is_empty() {
            self.turns.push_back(u);
        }
        jobs.waiting.push_back(job);
        self.len += 1;
        let takeable = jobs.holders < self.share;
        (pushed, takeable)
    }

    /// Whether any job waiting may be taken by a worker that holds none.
    pub(crate) fn any_takeable(&self) -> bool {
        self.turns
            .iter()
            .any(|&u| self.users[u].holders < self.share)
    }

    /// Moves up to `n` jobs into `into`, one per user in turn, from users under their share
    /// (or already held by this worker: `held`, to which the users taken from are added).
    /// Returns how many.
    pub(crate) fn take(&mut self, n: usize, into: &mut Vec<T>, held: &mut Vec<usize>) -> usize {
        let mut taken = 0;
        // Users looked at since the last job taken: once every one waiting has been, the
        // rest are over their share.
        let mut passed = 0;
        while taken < n && passed < self.turns.len() {
            let Some(u) = self.turns.pop_front() else {
                break;
            };
            let mine = held.contains(&u);
            let jobs = &mut self.users[u];
            if !mine && jobs.holders >= self.share {
                self.turns.push_back(u);
                passed += 1;
                continue;
            }
            let Some(job) = jobs.waiting.pop_front() else {
                continue;
            };
            if !mine {
                jobs.holders += 1;
                held.push(u);
            }
            if !jobs.waiting.is_empty() {
                self.turns.push_back(u);
            }
            into.push(job);
            self.len -= 1;
            taken += 1;
            passed = 0;
        }
        taken
    }

    /// The worker that took for `held` is done with those jobs.
    pub(crate) fn release(&mut self, held: &mut Vec<usize>) {
        for u in held.drain(..) {
            let jobs = &mut self.users[u];
            jobs.holders = jobs.holders.saturating_sub(1);
        }
    }

    /// Every job waiting, in turn order.
    #[cfg(test)]
    fn drain(&mut self) -> Vec<T> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(u) = self.turns.pop_front() {
            all.extend(self.users[u].waiting.drain(..));
        }
        self.len = 0;
        all
    }

    /// The entry of `user`, made if it has none.
    fn entry(&mut self, user: &str) -> usize {
        if let Some(&u) = self.index.get(user) {
            return u;
        }
        if self.free.is_empty() && self.users.len() >= KEEP_IDLE {
            self.forget_idle();
        }
        let jobs = UserJobs {
            name: user.to_string(),
            waiting: VecDeque::new(),
            holders: 0,
        };
        let u = match self.free.pop() {
            Some(u) => {
                self.users[u] = jobs;
                u
            }
            None => {
                self.users.push(jobs);
                self.users.len() - 1
            }
        };
        self.index.insert(user.to_string(), u);
        u
    }

    /// Frees the entries of users with nothing waiting or running.
    fn forget_idle(&mut self) {
        for (u, jobs) in self.users.iter_mut().enumerate() {
            if jobs.holders == 0
                && jobs.waiting.is_empty()
                && self.index.remove(&jobs.name).is_some()
            {
                jobs.name.clear();
                self.free.push(u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job: its user and a number.
    type J = (&'static str, u32);

    impl OfUser for J {
        fn user(&self) -> &str {
            self.0
        }
    }

    fn queue(share: usize, jobs: &[J]) -> FairQueue<J> {
        let mut q = FairQueue::new(share);
        for &job in jobs {
            assert_eq!(q.push(job, 100).0, Pushed::Queued);
        }
        q
    }

    fn numbers(jobs: &[J]) -> Vec<u32> {
        jobs.iter().map(|j| j.1).collect()
    }

    #[test]
    fn users_are_served_in_turns() {
        let mut q = queue(
            4,
            &[
                ("alice", 1),
                ("alice", 2),
                ("alice", 3),
                ("bob", 10),
                ("carol", 20),
            ],
        );
        let (mut into, mut held) = (Vec::new(), Vec::new());
        assert_eq!(q.take(4, &mut into, &mut held), 4);
        assert_eq!(numbers(&into), [1, 10, 20, 2]);
        assert_eq!(held.len(), 3, "each user counted once for this worker");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn one_user_holds_at_most_its_share_of_workers() {
        let mut q = queue(1, &[("alice", 1), ("alice", 2), ("alice", 3)]);
        let (mut a, mut held_a) = (Vec::new(), Vec::new());
        assert_eq!(q.take(1, &mut a, &mut held_a), 1);
        // A second worker finds alice at her share: nothing for it, though jobs wait.
        let (mut b, mut held_b) = (Vec::new(), Vec::new());
        assert!(!q.any_takeable());
        assert_eq!(q.take(8, &mut b, &mut held_b), 0);
        assert_eq!(q.push(("alice", 4), 100), (Pushed::Queued, false));
        // Bob's job, queued after alice's, is taken at once by that worker.
        assert_eq!(q.push(("bob", 10), 100), (Pushed::Queued, true));
        assert!(q.any_takeable());
        assert_eq!(q.take(8, &mut b, &mut held_b), 1);
        assert_eq!(numbers(&b), [10]);
        // The first worker may take more of alice's into its own group.
        assert_eq!(q.take(8, &mut a, &mut held_a), 3);
        assert_eq!(numbers(&a), [1, 2, 3, 4]);
        q.release(&mut held_a);
        q.release(&mut held_b);
        assert!(held_a.is_empty() && held_b.is_empty());
        assert_eq!(q.push(("alice", 5), 100), (Pushed::Queued, true));
    }

    #[test]
    fn a_full_queue_drops_from_the_user_with_the_most_waiting() {
        let mut q = FairQueue::new(1);
        for i in 0..4 {
            assert_eq!(q.push(("alice", i), 5).0, Pushed::Queued);
        }
        assert_eq!(q.push(("bob", 10), 5).0, Pushed::Queued);
        // Full: bob's next displaces alice's newest; alice's own is refused.
        assert_eq!(q.push(("bob", 11), 5).0, Pushed::Displaced(("alice", 3)));
        assert_eq!(q.push(("alice", 4), 5).0, Pushed::Refused(("alice", 4)));
        assert_eq!(q.push(("carol", 20), 5).0, Pushed::Displaced(("alice", 2)));
        assert_eq!(q.len(), 5);
        let mut all = numbers(&q.drain());
        all.sort_unstable();
        assert_eq!(all, [0, 1, 10, 11, 20]);
    }

    #[test]
    fn a_user_whose_last_job_is_displaced_leaves_the_turns() {
        let mut q = FairQueue::new(1);
        assert_eq!(q.push(("alice", 1), 1).0, Pushed::Queued);
        assert_eq!(q.push(("bob", 2), 1).0, Pushed::Displaced(("alice", 1)));
        let (mut into, mut held) = (Vec::new(), Vec::new());
        assert_eq!(q.take(8, &mut into, &mut held), 1);
        assert_eq!(numbers(&into), [2]);
        assert!(!q.any_takeable() && q.is_empty());
    }

    #[test]
    fn idle_users_entries_are_reused() {
        let names: Vec<&'static str> = (0..KEEP_IDLE * 3)
            .map(|i| &*Box::leak(format!("user{i}").into_boxed_str()))
            .collect();
        let mut q = FairQueue::new(1);
        let (mut into, mut held) = (Vec::new(), Vec::new());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(q.push((*name, i as u32), 10).0, Pushed::Queued);
            assert_eq!(q.take(1, &mut into, &mut held), 1);
            q.release(&mut held);
        }
        assert!(q.users.len() <= KEEP_IDLE + 1, "{}", q.users.len());
        assert_eq!(into.len(), KEEP_IDLE * 3);
    }
}
