//! How a worker's answer gets back to the loop that owns the connection.
//!
//! A [`ReplyTo`] names the loop, the connection and the request; whoever runs the work
//! (a pool worker, a transaction's thread) hands it the outcome once.
//!
//! A pool worker holds the answers of a group of jobs in its [`Replies`] ([`ReplyTo::hold`])
//! and hands them to each loop together when the group ends ([`Replies::deliver`]): one lock
//! and at most one wake per loop and group instead of one per answer. On a busy core this
//! matters more than the lock: every wake of the loop may preempt the worker, so answering
//! one by one costs two context switches per request. Elsewhere (a refusal on the loop, a
//! transaction's thread) [`ReplyTo::send`] delivers at once.

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
    /// The buffer that carried the request to the worker, emptied, for the loop to reuse
    /// (see [`crate::workers::Job::encoded`]); empty when there was none.
    pub(crate) spare: Vec<u8>,
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
    /// Somebody watched for changes when the request came.
    watched: bool,
    spare: Vec<u8>,
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
            watched: false,
            spare: Vec::new(),
        }
    }

    /// The same, saying whether anybody watched for changes when the request came (see
    /// [`ReplyTo::wrote`]).
    pub fn watched(self, watched: bool) -> Self {
        ReplyTo { watched, ..self }
    }

    /// The work wrote rows of `tables` (as the database reports them): the notice names them
    /// too, when anybody watches.
    pub fn wrote(&mut self, tables: &[String]) {
        if self.watched {
            crate::watch::add_written(&mut self.changed, tables);
        }
    }

    /// Sends `buf` (emptied) back to the loop with the answer, for it to reuse.
    pub fn give_back(&mut self, buf: Vec<u8>) {
        self.spare = buf;
    }

    /// Delivers the outcome now.
    pub fn send(self, result: Result<DataResponse, DbError>) {
        let (inbox, msg) = self.into_message(result);
        let _ = inbox.post(msg);
    }

    /// Holds the outcome in `out` until the worker's group of jobs ends.
    pub fn hold(self, result: Result<DataResponse, DbError>, out: &mut Replies) {
        let (inbox, msg) = self.into_message(result);
        match out.loops.iter_mut().find(|(h, _)| h.same_loop(&inbox)) {
            Some((_, msgs)) => msgs.push(msg),
            None => out.loops.push((inbox, vec![msg])),
        }
    }

    fn into_message(self, result: Result<DataResponse, DbError>) -> (LoopHandle<Inbox>, Inbox) {
        let msg = Inbox::Reply(Reply {
            conn: self.conn,
            id: self.id,
            result,
            changed: self.changed,
            spare: self.spare,
        });
        (self.inbox, msg)
    }
}

/// A worker's answers held until its group of jobs ends, by loop (see the module's doc).
#[derive(Default)]
pub struct Replies {
    /// One entry per loop answered so far; the vectors keep their capacity between groups.
    loops: Vec<(LoopHandle<Inbox>, Vec<Inbox>)>,
}

/// More loops than any server runs: past this the handles of gone servers are dropped.
const MAX_LOOPS: usize = 256;

impl Replies {
    /// Hands every held answer to its loop, one batch per loop.
    pub fn deliver(&mut self) {
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

impl Drop for Replies {
    /// A worker that panics mid-group still delivers what it answered.
    fn drop(&mut self) {
        self.deliver();
    }
}
