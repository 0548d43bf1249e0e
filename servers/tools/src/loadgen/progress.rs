//! The live progress line of a run on a terminal: each loop publishes its totals a few times
//! a second; one thread sums them into a line of standard error each second and erases it
//! when the run ends, before the report is printed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers and errors so far, published by each loop a few times a second for the progress
/// line (plain stores of the loop's own totals: nothing shared on the request path).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    /// Publishes a loop's totals so far.
    pub(super) fn publish(&self, ok: u64, errors: u64) {
        self.ok.store(ok, Ordering::Relaxed);
        self.errors.store(errors, Ordering::Relaxed);
    }
}

/// How often loops publish their totals.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The live progress line: a thread that rewrites one line of standard error each second until
/// dropped, then erases it.
pub(super) struct ProgressLine {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    pub(super) fn start(slots: Vec<Arc<Progress>>, duration: Duration) -> ProgressLine {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let (lock, cv) = &*s;
            let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*done {
                done = cv
                    .wait_timeout(done, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if *done {
                    break;
                }
                let ok: u64 = slots.iter().map(|p| p.ok.load(Ordering::Relaxed)).sum();
                let errors: u64 = slots.iter().map(|p| p.errors.load(Ordering::Relaxed)).sum();
                let t = started.elapsed().as_secs_f64();
                eprint!(
                    "\r\x1b[K{t:.0}/{} s  {ok} answers  {:.0} rps so far  {errors} errors",
                    duration.as_secs_f64(),
                    ok as f64 / t.max(1e-9),
                );
            }
            eprint!("\r\x1b[K");
        });
        ProgressLine {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
