//! A loop's inbox for messages from other threads, and the [`LoopHandle`] that posts into it.
//!
//! The inbox is bounded ([`crate::Config::mailbox_capacity`]): a worker pool that answers faster
//! than the loop can take the answers waits in [`LoopHandle::post`] instead of growing the
//! loop's memory without end, and code on a loop thread, which must never wait, gets
//! [`PostError::Full`] back.

use std::cell::Cell;
use std::fmt;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use mio::Waker;

thread_local! {
    /// Set on a loop's thread while it runs: a post from there never waits (the loop it might
    /// wait for could be itself).
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as a loop thread for as long as the guard lives.
pub(crate) struct OnLoop(bool);

impl OnLoop {
    pub(crate) fn enter() -> Self {
        OnLoop(ON_LOOP.with(|f| f.replace(true)))
    }
}

impl Drop for OnLoop {
    fn drop(&mut self) {
        ON_LOOP.with(|f| f.set(self.0));
    }
}

/// Why [`LoopHandle::post`] (or [`LoopHandle::try_post`]) gave a message back.
#[derive(PartialEq, Eq)]
pub enum PostError<M> {
    /// The inbox holds [`crate::Config::mailbox_capacity`] messages the loop has not taken yet
    /// (only from `try_post`, or from `post` on a loop thread, which never waits).
    Full(M),
    /// The loop has ended (stopped, or its handler panicked): nothing will read the message.
    Closed(M),
}

impl<M> PostError<M> {
    /// The message that was not posted.
    pub fn into_inner(self) -> M {
        match self {
            PostError::Full(m) | PostError::Closed(m) => m,
        }
    }
}

impl<M> fmt::Debug for PostError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Full(_) => f.write_str("Full(..)"),
            PostError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M> fmt::Display for PostError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Full(_) => f.write_str("the loop's inbox is full"),
            PostError::Closed(_) => f.write_str("the loop has ended"),
        }
    }
}

impl<M> std::error::Error for PostError<M> {}

#[derive(Debug)]
pub(crate) struct Mailbox<M> {
    queue: Mutex<Vec<M>>,
    /// Signalled when the loop takes the queue or the mailbox closes.
    room: Condvar,
    capacity: usize,
    waker: Arc<Waker>,
    closed: AtomicBool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(waker: Arc<Waker>, capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            room: Condvar::new(),
            capacity: capacity.max(1),
            waker,
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<M>> {
        // A poisoned lock only means a poster panicked between push and unlock; the queue is
        // still a valid Vec.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes everything queued (swapping in `into`, which must be empty) and lets waiting
    /// posters go on.
    pub(crate) fn take(&self, into: &mut Vec<M>) {
        let mut q = self.lock();
        if q.is_empty() {
            return;
        }
        let full = q.len() >= self.capacity;
        mem::swap(&mut *q, into);
        drop(q);
        if full {
            self.room.notify_all();
        }
    }

    /// Refuses every later post and wakes posters waiting for room.
    pub(crate) fn close(&self) {
        let q = self.lock();
        self.closed.store(true, Ordering::Release);
        drop(q);
        self.room.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues one message (no allocation of its own), waiting for room when `wait`.
    fn push_one(&self, msg: M, wait: bool) -> Result<(), PostError<M>> {
        let mut q = self.lock();
        let mut woke = false;
        loop {
            if self.is_closed() {
                return Err(PostError::Closed(msg));
            }
            if q.len() < self.capacity {
                break;
            }
            if !wait {
                return Err(PostError::Full(msg));
            }
            if !woke {
                let _ = self.waker.wake();
                woke = true;
            }
            q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.push(msg);
        // One wake per batch: the loop takes the whole queue when it wakes.
        if q.len() == 1 {
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Queues as much of `msgs` (drained from the front) as fits, waiting for room when `wait`.
    fn push(&self, msgs: &mut Vec<M>, wait: bool) -> Result<(), PostError<()>> {
        let mut q = self.lock();
        let mut woke = false;
        while !msgs.is_empty() {
            if self.is_closed() {
                return Err(PostError::Closed(()));
            }
            let room = self.capacity.saturating_sub(q.len());
            if room == 0 {
                if !wait {
                    return Err(PostError::Full(()));
                }
                // The loop drains when woken; make sure it was.
                if !woke {
                    let _ = self.waker.wake();
                    woke = true;
                }
                q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let was_empty = q.is_empty();
            let n = room.min(msgs.len());
            q.extend(msgs.drain(..n));
            // One wake per batch: the loop takes the whole queue when it wakes.
            if was_empty {
                let _ = self.waker.wake();
                woke = true;
            }
        }
        Ok(())
    }
}

/// Posts messages to one loop from any thread (e.g. a database worker handing back a result).
/// They arrive in [`crate::Handler::on_message`], in the order posted.
///
/// A post costs a lock and, when the inbox was empty, one wake of the loop; the loop takes the
/// whole inbox in one go, so a busy worker's answers share a wake. The inbox holds at most
/// [`crate::Config::mailbox_capacity`] messages.
///
/// ```
/// use engine::{Config, Context, ConnId, Handler, Server};
///
/// struct Count(u32);
/// impl Handler for Count {
///     type Message = u32;
///     type Timer = ();
///     fn on_data(&mut self, _: &mut Context<'_, u32>, _: ConnId, d: &[u8]) -> usize { d.len() }
///     fn on_message(&mut self, ctx: &mut Context<'_, u32>, n: u32) {
///         self.0 += n;
///         if self.0 == 3 {
///             ctx.server().stop();
///         }
///     }
/// }
///
/// let server = Server::new(Config::builder().threads(1).build()?)?;
/// let inbox = server.loop_handle(0);
/// std::thread::spawn(move || for _ in 0..3 { let _ = inbox.post(1); });
/// server.run(|_| Count(0))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LoopHandle<M> {
    pub(crate) mailbox: Arc<Mailbox<M>>,
}

impl<M> Clone for LoopHandle<M> {
    fn clone(&self) -> Self {
        LoopHandle {
            mailbox: Arc::clone(&self.mailbox),
        }
    }
}

impl<M> LoopHandle<M> {
    /// Queues `msg` for the loop and wakes it. On a worker thread, waits while the inbox is
    /// full (the loop's pace limits its workers', as a bounded channel does); on a loop thread
    /// it never waits.
    ///
    /// # Errors
    ///
    /// [`PostError::Closed`] with the message when the loop has ended;
    /// [`PostError::Full`] when the inbox is full and this is a loop thread.
    pub fn post(&self, msg: M) -> Result<(), PostError<M>> {
        self.post_one(msg, !ON_LOOP.with(Cell::get))
    }

    /// Like [`LoopHandle::post`] but never waits.
    ///
    /// # Errors
    ///
    /// [`PostError::Full`] or [`PostError::Closed`], with the message.
    pub fn try_post(&self, msg: M) -> Result<(), PostError<M>> {
        self.post_one(msg, false)
    }

    fn post_one(&self, msg: M, wait: bool) -> Result<(), PostError<M>> {
        self.mailbox.push_one(msg, wait)
    }

    /// Queues all of `msgs` (emptied, its capacity kept for the caller) under one lock and with
    /// at most one wake per time the inbox was empty: a worker that finished a group of jobs
    /// answers them together. Waits for room as [`LoopHandle::post`] does.
    ///
    /// # Errors
    ///
    /// As [`LoopHandle::post`]; the messages not posted are left in `msgs`.
    pub fn post_all(&self, msgs: &mut Vec<M>) -> Result<(), PostError<()>> {
        self.mailbox.push(msgs, !ON_LOOP.with(Cell::get))
    }

    /// True when both handles post to the same loop.
    pub fn same_loop(&self, other: &LoopHandle<M>) -> bool {
        Arc::ptr_eq(&self.mailbox, &other.mailbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    fn mailbox(cap: usize) -> (Poll, Arc<Mailbox<u32>>) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        (poll, Arc::new(Mailbox::new(waker, cap)))
    }

    #[test]
    fn a_full_inbox_refuses_try_post_and_makes_post_wait_for_room() {
        let (_poll, mb) = mailbox(2);
        let h = LoopHandle {
            mailbox: Arc::clone(&mb),
        };
        h.try_post(1).unwrap();
        h.post(2).unwrap();
        assert_eq!(h.try_post(3), Err(PostError::Full(3)));
        let waiter = {
            let h = h.clone();
            std::thread::spawn(move || h.post(3))
        };
        // The waiter cannot finish until the loop side takes the queue.
        let mut got = Vec::new();
        while got.len() < 3 {
            let mut batch = Vec::new();
            mb.take(&mut batch);
            got.extend(batch);
            std::thread::yield_now();
        }
        assert_eq!(got, [1, 2, 3]);
        assert!(waiter.join().unwrap().is_ok());
    }

    #[test]
    fn closing_wakes_a_waiting_poster_and_refuses_later_posts() {
        let (_poll, mb) = mailbox(1);
        let h = LoopHandle {
            mailbox: Arc::clone(&mb),
        };
        h.post(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let h = h.clone();
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                h.post(2)
            })
        };
        rx.recv().unwrap();
        mb.close();
        assert_eq!(waiter.join().unwrap(), Err(PostError::Closed(2)));
        assert_eq!(h.try_post(4), Err(PostError::Closed(4)));
        let mut batch = vec![5, 6];
        assert_eq!(h.post_all(&mut batch), Err(PostError::Closed(())));
        assert_eq!(batch, [5, 6]);
    }

    #[test]
    fn a_loop_thread_never_waits() {
        let (_poll, mb) = mailbox(1);
        let h = LoopHandle { mailbox: mb };
        let _on = OnLoop::enter();
        h.post(1).unwrap();
        assert_eq!(h.post(2), Err(PostError::Full(2)));
        let mut batch = vec![3];
        assert_eq!(h.post_all(&mut batch), Err(PostError::Full(())));
    }
}
