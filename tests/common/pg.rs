//! A PostgreSQL schema of its own for one test, on the cluster `.ci/pg-cluster` starts
//! (`DATABASE_URL`, `DATABASE_REPLICA_URL`, `DATABASE_ADMIN_URL`).

use std::sync::atomic::{AtomicUsize, Ordering};

use db::libpq::PgConn;

/// The primary's and the replica's URLs, or `None` (skipped) when PostgreSQL is not there.
pub fn urls(test: &str) -> Option<(String, Option<String>)> {
    match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some((u, std::env::var("DATABASE_REPLICA_URL").ok())),
        _ => {
            // The tests are ignored without DATABASE_URL (see build.rs); here when it is empty.
            let _ = test;
            super::prerequisite("PostgreSQL (DATABASE_URL)", "NETMOD_REQUIRE_PG", false);
            None
        }
    }
}

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// A schema of its own for one test (and the clients' schema db-server makes beside it),
/// dropped at the end.
pub struct Schema {
    /// A superuser's URL (`DATABASE_ADMIN_URL`, else `DATABASE_URL`).
    pub admin: String,
    pub name: String,
    pub primary: String,
    pub replica: Option<String>,
}

/// The URL with the schema as search path, and as application name (to find the server's
/// connections in `pg_stat_activity`).
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}&application_name={schema}")
}

impl Schema {
    pub fn new(test: &str) -> Option<Schema> {
        let (primary, replica) = urls(test)?;
        let name = format!(
            "t{}_{}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::Relaxed)
        );
        // Made by db-server's own login, which owns it.
        let mut c = PgConn::connect(&primary).expect("DATABASE_URL reachable");
        c.exec(&format!(
            "DROP SCHEMA IF EXISTS {name}, {name}_client CASCADE; CREATE SCHEMA {name}"
        ))
        .unwrap();
        let admin = std::env::var("DATABASE_ADMIN_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| primary.clone());
        Some(Schema {
            primary: with_search_path(&primary, &name),
            replica: replica.map(|r| with_search_path(&r, &name)),
            admin,
            name,
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = PgConn::connect(&self.admin) {
            let _ = c.exec(&format!(
                "DROP SCHEMA IF EXISTS {0}, {0}_client CASCADE",
                self.name
            ));
        }
    }
}
