//! A whole stack on real processes: db-server (SQLite, or a PostgreSQL schema of its own) and
//! test-server (frames and HTTP) in front of it, with what an attacker's tests need: accounts,
//! documents over HTTP, and the check that the servers still serve.

use std::net::SocketAddr;

use super::{http, Proc, TempDir, WAIT};
use protocol::wire::ErrorCode;
use tools::client::{ClientError, FrameClient};

/// The error code of a request that must fail.
pub fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// db-server on a fresh SQLite file (or a PostgreSQL schema of its own) and test-server
/// (frames and HTTP) in front of it.
pub struct Stack {
    // Dropped in this order: the servers before their database.
    pub ts: Proc,
    pub db: Proc,
    _dir: TempDir,
    pub schema: Option<super::pg::Schema>,
    pub frames: SocketAddr,
    pub http: SocketAddr,
}

impl Stack {
    pub fn start(tag: &str) -> Stack {
        Stack::start_with(tag, &[])
    }

    /// On SQLite, db-server started with `db_args` besides its address and file.
    pub fn start_with(tag: &str, db_args: &[&str]) -> Stack {
        let dir = TempDir::new(tag);
        let file = dir.path("lp.db");
        let file = file.to_str().expect("a UTF-8 temp path");
        let mut args = vec!["--listen", "127.0.0.1:0", "--sqlite", file];
        args.extend_from_slice(db_args);
        let mut db = Proc::spawn("db-server", &args);
        let addr = db.listen_addr();
        Stack::front(dir, db, addr, None)
    }

    /// On PostgreSQL; `None` (skipped, or failed where `NETMOD_REQUIRE_PG` is set) without it.
    pub fn start_pg(tag: &str) -> Option<Stack> {
        Stack::start_pg_with(tag, &[])
    }

    /// [`Stack::start_pg`], db-server started with `db_args` besides its address and URL.
    pub fn start_pg_with(tag: &str, db_args: &[&str]) -> Option<Stack> {
        let schema = super::pg::Schema::new(tag)?;
        let mut args = vec!["--listen", "127.0.0.1:0", "--postgres", &schema.primary];
        args.extend_from_slice(db_args);
        let mut db = Proc::spawn("db-server", &args);
        let addr = db.listen_addr();
        Some(Stack::front(TempDir::new(tag), db, addr, Some(schema)))
    }

    fn front(
        dir: TempDir,
        db: Proc,
        db_addr: SocketAddr,
        schema: Option<super::pg::Schema>,
    ) -> Stack {
        let (ts, [frames, http]) = super::spawn_front_listening(
            db_addr,
            &["--admin-secret", "admin-secret"],
            Some("info"),
        );
        super::wait_front_ready(http);
        Stack {
            ts,
            db,
            _dir: dir,
            schema,
            frames,
            http,
        }
    }

    /// A connection logged in as `user`.
    pub fn login(&self, user: &str, secret: &str) -> Result<FrameClient, ClientError> {
        let mut c = FrameClient::connect(self.frames, WAIT).unwrap();
        c.login(user, secret)?;
        Ok(c)
    }

    /// The admin, once the users table exists.
    pub fn admin(&self) -> FrameClient {
        let mut admin = None;
        super::eventually("admin can log in", || {
            admin = self.login("admin", "admin-secret").ok();
            admin.is_some()
        });
        admin.unwrap()
    }

    /// An ordinary account made by the admin, logged in.
    pub fn user(&self, name: &str) -> FrameClient {
        let secret = format!("{name}-secret-1");
        self.admin().change_user(name, &secret, false).unwrap();
        self.login(name, &secret).unwrap()
    }

    pub fn get(&self, name: &str) -> http::Resp {
        http::call(
            self.http,
            &format!("GET /docs/{name} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    }

    pub fn put(&self, name: &str, content: &str) -> http::Resp {
        let body = format!("{{\"content\":\"{content}\"}}");
        http::call(
            self.http,
            &format!(
                "PUT /docs/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    /// Waits until a GET of `name` is answered from the front's cache with `content`.
    pub fn cached(&self, name: &str, content: &str) {
        super::eventually("the document answered from the cache", || {
            let before = http::cache_hits(self.http);
            self.get(name).body.contains(content) && http::cache_hits(self.http) > before
        });
    }

    pub fn delete(&self, name: &str) -> http::Resp {
        http::call(
            self.http,
            &format!("DELETE /docs/{name} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    }

    /// What the servers must still do after an attack.
    pub fn still_serves(&self, tag: &str) {
        let put = self.put(tag, "after");
        assert!(put.status == 200 || put.status == 201, "PUT: {put:?}");
        let got = self.get(tag);
        assert_eq!(got.status, 200, "{got:?}");
        assert!(got.body.contains("\"after\""), "{}", got.body);
        assert!(
            !got.body.contains("argon2"),
            "a hash on the page: {}",
            got.body
        );
        let del = self.delete(tag);
        assert!(del.status < 300, "DELETE: {del:?}");
        assert_eq!(self.get(tag).status, 404);
        // Logins, and a user's removal taking effect.
        let name = format!("{tag}_u");
        let mut admin = self.admin();
        admin.change_user(&name, "a-long-secret", false).unwrap();
        assert!(self.login(&name, "a-long-secret").is_ok());
        assert!(admin.change_user(&name, "", true).unwrap().removed);
        assert_eq!(
            code(self.login(&name, "a-long-secret")),
            ErrorCode::Unauthenticated
        );
    }
}
