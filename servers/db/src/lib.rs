//! db-server: SQL over the frame protocol, on embedded SQLite or PostgreSQL.
//!
//! - [`service`]: the engine handler (never touches the database).
//! - [`workers`]: jobs, routing rules and [`Pool`], the backend a server runs.
//! - [`sqlite_pool`], [`sqlite`]: reader threads and the group-committing writer on SQLite;
//!   statements, values and error codes there.
//! - [`postgres_pool`], [`postgres`], [`libpq`]: writers on the primary and readers routed to
//!   replicas; statements, values and error codes on PostgreSQL; the libpq binding.
//! - [`batch`], [`page`], [`error`]: batches, result limits and errors, the same everywhere.
//! - `queue`: the bounded job queues between the loops and the workers.
//! - [`reply`]: how answers get back to the connection's loop, a group's together.
//! - [`txn`]: interactive transactions and cursors, a connection and a thread each.
//! - [`turn`]: the first-come, first-served queue for SQLite's write lock.
//! - [`watch`]: table-change notifications for subscribed connections.
//! - [`sandbox`]: what a client's statements (through test-server) may not touch.
//! - [`monitor`]: per-statement counts, latency and the slow-query log.

pub mod batch;
pub mod deadline;
pub mod error;
pub(crate) mod fair;
pub(crate) mod idempotency;
pub mod libpq;
pub mod monitor;
pub mod page;
pub mod pool;
pub mod postgres;
pub mod postgres_pool;
pub(crate) mod queue;
pub mod reply;
pub mod sandbox;
pub mod service;
pub mod sqlite;
pub mod sqlite_pool;
pub mod turn;
pub mod txn;
pub mod watch;
pub mod workers;

pub use error::DbError;
pub use pool::Pool;
pub use postgres_pool::PgConfig;
pub use service::DbService;
pub use sqlite_pool::SqliteConfig;

use std::sync::Arc;

/// Which backend to start.
#[derive(Debug, Clone)]
pub enum PoolConfig {
    /// Embedded SQLite.
    Sqlite(SqliteConfig),
    /// PostgreSQL.
    Postgres(PgConfig),
}

impl PoolConfig {
    /// Starts the backend's workers on a [`Pool`].
    pub fn start(self, monitor: Arc<monitor::Monitor>) -> Result<Pool, DbError> {
        match self {
            PoolConfig::Sqlite(c) => sqlite_pool::start(c, monitor),
            PoolConfig::Postgres(c) => postgres_pool::start(c, monitor),
        }
    }
}
