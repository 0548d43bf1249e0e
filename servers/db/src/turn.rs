//! Whose turn it is to write to a SQLite database: first come, first served.
//!
//! SQLite has one write lock, and a connection that finds it taken sleeps in its busy handler
//! (1, 2, 5, 10 … 100 ms) before it looks again. The group-commit writer, looking again at once
//! after each commit, would take it every time: interactive transactions starved beside busy
//! plain writers (two transaction clients committed 116–268 times in 3 s beside 50 writers).
//! So the writer and every transaction queue here before they take SQLite's lock — the writer
//! for each group, a transaction from its first write to its end — and get it in arrival order.
//! A wait is bounded by the busy timeout; after it the caller tries SQLite anyway (and gets
//! BUSY, as it would have without this queue).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The queue for one database's write lock.
#[derive(Debug, Default)]
pub struct WriteTurn {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    queue: VecDeque<u64>,
    next: u64,
}

/// Holding the turn; dropping it passes the turn on.
#[derive(Debug)]
pub struct Turn {
    of: Arc<WriteTurn>,
}

impl WriteTurn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `wait`) for the turn of a caller arriving now; `None` when the wait ran
    /// out (the caller is then out of the queue).
    pub fn take(self: &Arc<Self>, wait: Duration) -> Option<Turn> {
        let deadline = Instant::now() + wait;
        let mut s = self.lock();
        let me = s.next;
        s.next += 1;
        s.queue.push_back(me);
        loop {
            if !s.held && s.queue.front() == Some(&me) {
                s.queue.pop_front();
                s.held = true;
                return Some(Turn {
                    of: Arc::clone(self),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.queue.retain(|&t| t != me);
                drop(s);
                // The one behind may be first now.
                self.changed.notify_all();
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.of.lock().held = false;
        self.of.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn turns_go_in_arrival_order() {
        let t = Arc::new(WriteTurn::default());
        let first = t.take(Duration::from_secs(1)).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..4 {
            let (mine, tx) = (Arc::clone(&t), tx.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = mine.take(Duration::from_secs(10)).unwrap();
                tx.send(i).unwrap();
            }));
            // Each is queued before the next arrives.
            while t.lock().queue.len() < i + 1 {
                std::thread::yield_now();
            }
        }
        drop(first);
        let order: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        for th in threads {
            th.join().unwrap();
        }
    }

    #[test]
    fn a_wait_that_runs_out_leaves_the_queue_and_the_next_one_goes() {
        let t = Arc::new(WriteTurn::default());
        let held = t.take(Duration::from_secs(1)).unwrap();
        assert!(t.take(Duration::from_millis(20)).is_none());
        assert!(t.lock().queue.is_empty());
        drop(held);
        assert!(t.take(Duration::ZERO).is_some());
    }
}
