//! db-server: SQL over the frame protocol, on embedded SQLite.
//!
//! - [`service`]: the engine handler (never touches the database).
//! - [`workers`]: reader threads and the group-committing writer, each with its own connection
//!   (together, the connection pool).
//! - [`sqlite`]: statements, batches, values and error codes on SQLite.
//! - [`txn`]: interactive transactions, a connection and a thread each.
//! - [`monitor`]: per-statement counts, latency and the slow-query log.

pub mod monitor;
pub mod service;
pub mod sqlite;
pub mod txn;
pub mod workers;

pub use service::DbService;
pub use sqlite::DbError;
pub use workers::{Pool, PoolConfig};
