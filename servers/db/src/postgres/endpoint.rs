//! Where db-server's PostgreSQL connections go: a URL, the bounds on how long a silent server
//! may hold a connection attempt or a request, the host of a multi-host URL to try last, and
//! the client login's identity for client connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{valid_role_name, ClientLogin, Pg};
use crate::error::DbError;
use crate::libpq::PgConn;
use protocol::proto::ErrorCode;

/// A PostgreSQL server db-server connects to: its URL, and how long the server may leave a
/// connection attempt or sent data unanswered before the connection counts as dead.
///
/// Without that bound a server cut off by the network (no RST, no FIN: packets vanish) holds
/// a worker for the kernel's retransmission timeout, about 15 minutes, and an idle connection
/// to it for ever. The bound becomes libpq's `connect_timeout`, `tcp_user_timeout` and TCP
/// keepalives, unless the URL sets them itself.
///
/// ```no_run
/// use std::time::Duration;
/// use db::postgres::Endpoint;
/// let primary = Endpoint::new("postgresql://netmod@10.0.0.30/netmod", Duration::from_secs(5));
/// let pg = primary.connect()?;
/// # Ok::<(), db::error::DbError>(())
/// ```
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    defaults: Vec<(&'static str, String)>,
    /// Connections log in as the client login instead of the URL's user.
    client: Option<Arc<ClientLogin>>,
    /// Server connections share the tables they create with this client role.
    share_with: Option<String>,
    /// Of a URL naming several hosts, the one to try last (`host:port`): the one that just
    /// went silent (see [`Endpoint::try_last`]). Shared by the clones.
    last: Arc<Mutex<Option<String>>>,
}

impl Endpoint {
    /// `url` with `timeout` (zero: libpq's and the kernel's defaults).
    pub fn new(url: impl Into<String>, timeout: Duration) -> Endpoint {
        let mut defaults = Vec::new();
        if !timeout.is_zero() {
            let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
            let half = secs.div_ceil(2).to_string();
            defaults = vec![
                // libpq rounds a connect_timeout under 2 s up to 2 s.
                ("connect_timeout", secs.to_string()),
                ("tcp_user_timeout", timeout.as_millis().to_string()),
                ("keepalives", "1".into()),
                ("keepalives_idle", half.clone()),
                ("keepalives_interval", half),
                ("keepalives_count", "2".into()),
            ];
        }
        Endpoint {
            url: url.into(),
            defaults,
            client: None,
            share_with: None,
            last: Arc::default(),
        }
    }

    /// From now on, of the URL's hosts, `server` (`host:port`) is tried last: it went silent,
    /// and libpq, trying the hosts in order, would wait a whole connect timeout on it each time
    /// before reaching the others (after a failover, the new primary). No effect on a URL with
    /// one host.
    pub fn try_last(&self, server: &str) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(server.to_string());
        }
    }

    /// Whether a connection made now would try another host first: the URL names several
    /// and one of them is to be tried last ([`Endpoint::try_last`]).
    pub fn leads_elsewhere(&self) -> bool {
        !self.host_order().is_empty()
    }

    /// libpq settings that reorder the URL's hosts (see [`Endpoint::try_last`]).
    fn host_order(&self) -> Vec<(&'static str, String)> {
        let last: Option<String> = self.last.lock().ok().and_then(|l| l.clone());
        last.and_then(|l| crate::libpq::hosts_with_last(&self.url, &l))
            .unwrap_or_default()
    }

    /// Server connections to this endpoint share the tables they create with `role` (rows
    /// only; see [`ClientLogin`]).
    pub fn sharing_with(self, role: &str) -> Endpoint {
        Endpoint {
            share_with: valid_role_name(role).then(|| role.to_string()),
            ..self
        }
    }

    /// The same server, logging in as the client login (its user and password replace the
    /// URL's): where client statements run.
    pub fn as_client(&self, login: Arc<ClientLogin>) -> Endpoint {
        Endpoint {
            client: Some(login),
            ..self.clone()
        }
    }

    /// Opens a connection. For the client login, refused (`FORBIDDEN`) without connecting
    /// when db-server found at start that the login may not be used (see [`ClientLogin`]).
    pub fn connect(&self) -> Result<Pg, DbError> {
        let defaults: Vec<(&str, &str)> = self
            .defaults
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let order = self.host_order();
        let mut overrides: Vec<(&str, &str)> =
            order.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let Some(login) = &self.client else {
            let conn = PgConn::connect_params(&self.url, &defaults, &overrides)?;
            let mut pg = Pg::start(conn)?;
            pg.share_with.clone_from(&self.share_with);
            return Ok(pg);
        };
        login.usable()?;
        overrides.extend([
            ("user", login.role.as_str()),
            ("password", login.password.as_deref().unwrap_or("")),
        ]);
        let conn = PgConn::connect_params(&self.url, &defaults, &overrides).map_err(|e| {
            DbError::new(
                ErrorCode::Unavailable,
                format!(
                    "the client login ({}) could not connect: {}",
                    login.role, e.message
                ),
            )
        })?;
        Pg::start_client(conn, login)
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        let url = &self.url;
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let user = &url[s + 3..at];
                let user = user.split(':').next().unwrap_or_default();
                format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
            }
            _ => url.to_string(),
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}
