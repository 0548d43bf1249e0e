//! A loop's inbox for messages from other threads, and the [`LoopHandle`] that posts into it.
//!
//! The inbox is bounded ([`crate::Config::mailbox_capacity`]): a worker pool that answers faster
//! than the loop can take the answers waits in [`LoopHandle::post`] instead of growing the
//! loop's memory without end, and code on a loop thread, which must never wait, gets
//! [`PostError::Full`] back — except from its own loop: a loop posting to itself is bounded by
//! its own work, so that post is always taken (an answer a loop gives itself, e.g. "overloaded",
//! is never dropped for room).

use std::cell::Cell;
use std::fmt;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use mio::Waker;

thread_local! {
    /// The address of the inbox of the loop running on this thread (0: not a loop thread). A
    /// post from a loop thread never waits (the loop it might wait for could be itself).
    static ON_LOOP: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as the thread of the loop owning `mailbox` for as long as the guard
/// lives.
pub(crate) struct OnLoop(usize);

impl OnLoop {
    pub(crate) fn enter<M>(mailbox: &Mailbox<M>) -> Self {
        let me = std::ptr::from_ref(mailbox) as usize;
        OnLoop(ON_LOOP.with(|f| f.replace(me)))
    }
}

impl Drop for OnLoop {
    fn drop(&mut self) {
        ON_LOOP.with(|f| f.set(self.0));
    }
}

/// How a post may treat a full inbox.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Wait for the loop to take what is queued (a worker thread's `post`).
    Wait,
    /// Give the message back (`try_post`, or `post` from another loop's thread).
    Refuse,
    /// Take it past the bound (the inbox's own loop posting to itself).
    Take,
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

    /// How a post from this thread treats a full inbox, `wait` being what the caller asked.
    fn room_policy(&self, wait: bool) -> Room {
        match ON_LOOP.with(Cell::get) {
            0 if wait => Room::Wait,
            0 => Room::Refuse,
            me if me == std::ptr::from_ref(self) as usize => Room::Take,
            _ => Room::Refuse,
        }
    }

    /// Locks the queue once it has room for at least one message (or at once under
    /// [`Room::Take`]); the error says why not.
    fn lock_with_room(&self, policy: Room) -> Result<MutexGuard<'_, Vec<M>>, PostError<()>> {
        let mut q = self.lock();
        let mut woke = false;
        loop {
            if self.is_closed() {
                return Err(PostError::Closed(()));
            }
            if q.len() < self.capacity || policy == Room::Take {
                return Ok(q);
            }
            if policy == Room::Refuse {
                return Err(PostError::Full(()));
            }
            // The loop drains when woken; make sure it was.
            if !woke {
                let _ = self.waker.wake();
                woke = true;
            }
            q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Queues one message (no allocation of its own).
    fn push_one(&self, msg: M, wait: bool) -> Result<(), PostError<M>> {
        let mut q = match self.lock_with_room(self.room_policy(wait)) {
            Ok(q) => q,
            Err(PostError::Full(())) => return Err(PostError::Full(msg)),
            Err(PostError::Closed(())) => return Err(PostError::Closed(msg)),
        };
        q.push(msg);
        // One wake per batch: the loop takes the whole queue when it wakes.
        if q.len() == 1 {
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Queues as much of `msgs` (drained from the front) as fits, waiting for room as
    /// [`Mailbox::push_one`] does.
    fn push(&self, msgs: &mut Vec<M>, wait: bool) -> Result<(), PostError<()>> {
        let policy = self.room_policy(wait);
        while !msgs.is_empty() {
            let mut q = self.lock_with_room(policy)?;
            let room = match policy {
                Room::Take => msgs.len(),
                _ => self.capacity - q.len(),
            };
            let was_empty = q.is_empty();
            q.extend(msgs.drain(..room.min(msgs.len())));
            if was_empty {
                let _ = self.waker.wake();
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
    /// full (the loop's pace limits its workers', as a bounded channel does); on another loop's
    /// thread it never waits; from the loop itself it is always taken.
    ///
    /// # Errors
    ///
    /// [`PostError::Closed`] with the message when the loop has ended;
    /// [`PostError::Full`] when the inbox is full and this is another loop's thread.
    pub fn post(&self, msg: M) -> Result<(), PostError<M>> {
        self.mailbox.push_one(msg, true)
    }

    /// Like [`LoopHandle::post`] but never waits.
    ///
    /// # Errors
    ///
    /// [`PostError::Full`] or [`PostError::Closed`], with the message.
    pub fn try_post(&self, msg: M) -> Result<(), PostError<M>> {
        self.mailbox.push_one(msg, false)
    }

    /// Queues all of `msgs` (emptied, its capacity kept for the caller) under one lock and with
    /// at most one wake per time the inbox was empty: a worker that finished a group of jobs
    /// answers them together. Waits for room as [`LoopHandle::post`] does.
    ///
    /// # Errors
    ///
    /// As [`LoopHandle::post`]; the messages not posted are left in `msgs`.
    pub fn post_all(&self, msgs: &mut Vec<M>) -> Result<(), PostError<()>> {
        self.mailbox.push(msgs, true)
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
    fn another_loops_thread_never_waits_and_a_loop_posting_to_itself_is_never_refused() {
        let (_poll, mb) = mailbox(1);
        let (_other_poll, other) = mailbox(1);
        let h = LoopHandle {
            mailbox: Arc::clone(&mb),
        };
        {
            let _on = OnLoop::enter(&*other);
            h.post(1).unwrap();
            assert_eq!(h.post(2), Err(PostError::Full(2)));
            let mut batch = vec![3];
            assert_eq!(h.post_all(&mut batch), Err(PostError::Full(())));
        }
        let _on = OnLoop::enter(&*mb);
        h.post(2).unwrap();
        let mut batch = vec![3, 4];
        h.post_all(&mut batch).unwrap();
        let mut got = Vec::new();
        mb.take(&mut got);
        assert_eq!(got, [1, 2, 3, 4]);
    }
}
