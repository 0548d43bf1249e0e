//! Secrets checked against their stored (slow, salted) hashes on threads of their own.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::auth;

/// Checks secrets against their stored (slow, salted) hashes on threads of its own, so that the
/// loops never spend argon2's deliberate tens of milliseconds (and megabytes).
pub struct Verifier {
    jobs: SyncSender<VerifyJob>,
}

/// Work for the verifier threads.
enum VerifyJob {
    /// A stored secret, the secret given, and what to do with the verdict.
    Check(String, String, Box<dyn FnOnce(bool) + Send>),
    /// A new secret, how hard to hash it, and what to do with its stored form.
    Hash(
        String,
        auth::HashCost,
        Box<dyn FnOnce(Option<String>) + Send>,
    ),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// `threads` verifier threads, with room for `queue` waiting logins (more are refused as
    /// OVERLOADED rather than queued without bound).
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<VerifyJob>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("auth-verify-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(p) => p.into_inner().recv(),
                    };
                    match job {
                        Ok(VerifyJob::Check(stored, secret, done)) => {
                            done(auth::verify_secret(&secret, &stored).unwrap_or(false))
                        }
                        Ok(VerifyJob::Hash(secret, cost, done)) => {
                            done(auth::hash_secret(&secret, cost).ok())
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Verifier { jobs: tx })
    }

    /// Checks `secret` against `stored`; `done` runs on a verifier thread. False when the queue
    /// is full (`done` is dropped).
    pub fn check(
        &self,
        stored: String,
        secret: String,
        done: Box<dyn FnOnce(bool) + Send>,
    ) -> bool {
        self.submit(VerifyJob::Check(stored, secret, done))
    }

    /// Hashes `secret` for storing; `done` runs on a verifier thread (with `None` if the system
    /// has no randomness for a salt). False when the queue is full.
    pub fn hash(
        &self,
        secret: String,
        cost: auth::HashCost,
        done: Box<dyn FnOnce(Option<String>) + Send>,
    ) -> bool {
        self.submit(VerifyJob::Hash(secret, cost, done))
    }

    fn submit(&self, job: VerifyJob) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}
