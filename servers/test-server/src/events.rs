//! What a loop waits for and what reaches it from other threads: the owner of each request on
//! the db link and the notes worker threads send back. Leaf types, shared by the frame service
//! and the HTTP front.

use engine::ConnId;
use shared::wire;

use crate::dblink::LinkTimer;

/// What a test-server timer is for; given back to the loop's `on_timer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// One of the db link's (reconnection, request-timeout sweep).
    Link(LinkTimer),
    /// The loop's liveness sweep: pings the clients due one, drops those that never answered.
    Liveness,
    /// An HTTP connection's request deadline.
    Http(ConnId),
    /// Try the table setup on db-server again (it failed).
    Setup,
}

impl From<LinkTimer> for Timer {
    fn from(t: LinkTimer) -> Self {
        Timer::Link(t)
    }
}

/// Who a request on the db link is for.
#[derive(Debug)]
pub enum Owner {
    /// A client's data request.
    Data { conn: ConnId, id: u32 },
    /// A client's login: the user's stored secret was asked for.
    Login {
        conn: ConnId,
        id: u32,
        user: String,
        secret: String,
    },
    /// An HTTP request on the front (`seq`: its place on the connection).
    Http { conn: ConnId, seq: u64, op: DocOp },
    /// The admin's user change.
    User {
        conn: ConnId,
        id: u32,
        change: UserChange,
    },
    /// The service's own setup (users and documents tables, bootstrap user).
    Setup,
    /// The revoked tokens read again (see `frames::revocation`).
    Revocations,
}

/// A user change sent to db-server.
#[derive(Debug)]
pub struct UserChange {
    /// The user.
    pub name: String,
    /// Removed (else created or re-keyed).
    pub remove: bool,
    /// When its revocation row says it was made (ms since the Unix epoch).
    pub at_ms: u64,
}

/// Work coming back to a loop from other threads.
#[derive(Debug)]
pub enum Note {
    /// Send every client a SERVER_MIGRATION notification.
    Migrate(wire::ServerMigration),
    /// A login's secret was checked.
    Verified {
        conn: ConnId,
        id: u32,
        user: String,
        ok: bool,
    },
    /// A new user's secret was hashed (`None`: it could not be).
    Hashed {
        conn: ConnId,
        id: u32,
        name: String,
        stored: Option<String>,
    },
}

/// A document operation waiting for db-server.
#[derive(Debug, Clone)]
pub enum DocOp {
    /// GET, with the cache's mark when it was sent (`None`: not to be cached).
    Get(String, Option<u64>),
    /// PUT, with the cache's mark when it was sent and the document's answer, kept once the
    /// write is acknowledged (`None`: not to be cached).
    Put(String, Option<(u64, std::sync::Arc<[u8]>)>),
    /// DELETE.
    Delete(String),
}
