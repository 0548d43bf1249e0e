//! How a worker's answer gets back to the loop that owns the connection.
//!
//! A [`ReplyTo`] names the loop, the connection and the request; whoever runs the work
//! (a pool worker, a transaction's thread) calls [`ReplyTo::send`] once with the outcome.
//!
//! Inside `batched` (the pool runs each group of jobs in it) answers are held and handed to
//! each loop together when the group ends: one lock and at most one wake per loop and group
//! instead of one per answer. On a busy core this matters more than the lock: every wake of
//! the loop may preempt the worker, so answering one by one costs two context switches per
//! request.

use std::cell::RefCell;
use std::sync::Arc;

use engine::{ConnId, LoopHandle};
use protocol::proto::{DataResponse, TablesChanged};

use super::error::DbError;

/// An answer coming back from a worker.
#[derive(Debug)]
pub struct Reply {
    pub(crate) conn: ConnId,
    pub(crate) id: u32,
    pub(crate) result: Result<DataResponse, DbError>,
    /// What the work writes, when somebody watches (see [`crate::watch`]): no tables for a
    /// read or when nobody does; the commit index is filled in once it committed.
    pub(crate) changed: TablesChanged,
}

/// What a loop's mailbox carries.
#[derive(Debug)]
pub enum Inbox {
    /// A worker's answer.
    Reply(Reply),
    /// Another loop committed a write: tell this loop's subscribers.
    Changed(Arc<TablesChanged>),
}

/// Where one request's outcome goes: called once, on whichever thread ran the work.
#[derive(Debug)]
pub struct ReplyTo {
    inbox: LoopHandle<Inbox>,
    conn: ConnId,
    id: u32,
    changed: TablesChanged,
}

impl ReplyTo {
    /// The answer to request `id` of `conn`, delivered to the loop behind `inbox`; `changed`
    /// says what the work writes, for watchers (no tables when nobody watches).
    pub fn new(inbox: LoopHandle<Inbox>, conn: ConnId, id: u32, changed: TablesChanged) -> Self {
        ReplyTo {
            inbox,
            conn,
            id,
            changed,
        }
    }

    /// Delivers the outcome (held until the end of the group inside `batched`).
    pub fn send(self, result: Result<DataResponse, DbError>) {
        let msg = Inbox::Reply(Reply {
            conn: self.conn,
            id: self.id,
            result,
            changed: self.changed,
        });
        let msg = HELD.with(|held| match held.try_borrow_mut() {
            Ok(mut h) if h.active => {
                h.hold(&self.inbox, msg);
                None
            }
            _ => Some(msg),
        });
        if let Some(msg) = msg {
            let _ = self.inbox.post(msg);
        }
    }
}

/// Answers held on this thread, by loop.
#[derive(Default)]
struct Held {
    active: bool,
    /// One entry per loop answered so far; the vectors keep their capacity between groups.
    loops: Vec<(LoopHandle<Inbox>, Vec<Inbox>)>,
}

/// More loops than any server runs: past this the handles of gone servers are dropped.
const MAX_LOOPS: usize = 256;

impl Held {
    fn hold(&mut self, inbox: &LoopHandle<Inbox>, msg: Inbox) {
        match self.loops.iter_mut().find(|(h, _)| h.same_loop(inbox)) {
            Some((_, msgs)) => msgs.push(msg),
            None => self.loops.push((inbox.clone(), vec![msg])),
        }
    }

    fn deliver(&mut self) {
        for (inbox, msgs) in &mut self.loops {
            if inbox.post_all(msgs).is_err() {
                msgs.clear(); // that loop has ended; nobody is waiting
            }
        }
        if self.loops.len() > MAX_LOOPS {
            self.loops.clear();
        }
    }
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held::default());
}

/// Runs `group` with this thread's answers held, then delivers them, one batch per loop (also
/// when `group` panics). Nested calls deliver at the end of the outermost.
pub(crate) fn batched<T>(group: impl FnOnce() -> T) -> T {
    struct Deliver(bool);
    impl Drop for Deliver {
        fn drop(&mut self) {
            if self.0 {
                HELD.with(|held| {
                    let mut h = held.borrow_mut();
                    h.active = false;
                    h.deliver();
                });
            }
        }
    }
    let outermost = HELD.with(|held| !std::mem::replace(&mut held.borrow_mut().active, true));
    let _deliver = Deliver(outermost);
    group()
}
