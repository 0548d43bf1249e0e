//! test-server in front of db-server: login and tokens, data requests forwarded over the db
//! link (many in flight, matched by id), and the link's behaviour when db-server dies and comes
//! back (circuit breaker, reconnection) — all on real loopback sockets.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::relay::Relay;
use common::{start, start_db, Proc, Running, TempDir, WAIT};
use prost::Message as _;
use protocol::proto::{value, AuthLogin, AuthToken, Value};
use protocol::wire::{self, ErrorCode, MessageType, Operation};
use test_server::auth::{self, TokenSigner};
use test_server::dblink::LinkConfig;
use test_server::{AuthConfig, ServiceConfig, Verifier};
use tools::client::{ClientError, FrameClient};

const KEY: &[u8] = b"test key shared by the instances";
const ADMIN: &str = "s3cret admin";

fn service(db: SocketAddr) -> ServiceConfig {
    let mut link = LinkConfig::new(db);
    link.backoff = (Duration::from_millis(20), Duration::from_millis(200), 0.1);
    link.breaker_failures = 2;
    link.breaker_open = Duration::from_millis(300);
    let auth = AuthConfig {
        signer: TokenSigner::new(KEY, auth::DEFAULT_LIFETIME),
        verifier: Verifier::new(1, 64).unwrap(),
        decoy: auth::hash_secret("decoy", auth::HashCost::TEST).unwrap(),
        bootstrap: Some((
            "admin".into(),
            auth::hash_secret(ADMIN, auth::HashCost::TEST).unwrap(),
        )),
        hash_cost: auth::HashCost::TEST,
        revocations: Default::default(),
        login_spray_limit: Some(engine::RateLimiter::new(engine::RateLimit {
            burst: 30,
            per: Duration::from_secs(60),
            allow: Vec::new(),
        })),
        login_limit: Some(engine::RateLimiter::new(engine::RateLimit {
            burst: 10,
            per: Duration::from_secs(60),
            allow: Vec::new(),
        })),
    };
    ServiceConfig {
        db: Some(link),
        auth: Some(Arc::new(auth)),
        ..ServiceConfig::default()
    }
}

fn start_test_server(db: SocketAddr) -> Running {
    start_service(service(db))
}

/// test-server's frame service in-process on one loop, with `svc`.
fn start_service(svc: ServiceConfig) -> Running {
    start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| test_server::service(svc.clone()),
    )
}

fn login(c: &mut FrameClient, user: &str, secret: &str) -> Result<AuthToken, ClientError> {
    let id = c.next_id();
    let req = AuthLogin {
        user: user.into(),
        secret: secret.into(),
    };
    c.send(&wire::message(
        MessageType::Request,
        Operation::AuthLogin,
        id,
        &req,
    ))?;
    let m = c.await_reply(id)?;
    Ok(AuthToken::decode(m.data).unwrap())
}

fn present(c: &mut FrameClient, token: &str) -> Result<AuthToken, ClientError> {
    let id = c.next_id();
    let req = AuthToken {
        token: token.into(),
        expires_at: 0,
    };
    c.send(&wire::message(
        MessageType::Request,
        Operation::AuthToken,
        id,
        &req,
    ))?;
    let m = c.await_reply(id)?;
    Ok(AuthToken::decode(m.data).unwrap())
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Logs in as admin once the link is up (the users table is made when it connects).
fn admin(addr: SocketAddr) -> (FrameClient, AuthToken) {
    let mut c = FrameClient::connect(addr, WAIT).unwrap();
    let mut token = None;
    common::eventually("admin can log in", || {
        token = login(&mut c, "admin", ADMIN).ok();
        token.is_some()
    });
    (c, token.unwrap())
}

#[test]
fn login_gives_a_token_that_data_requests_need_and_another_instance_accepts() {
    let dir = TempDir::new("ts-auth");
    let db = start_db(&dir);
    let a = start_test_server(db.addr);
    let b = start_test_server(db.addr);

    let mut anon = FrameClient::connect(a.addr, WAIT).unwrap();
    assert_eq!(
        code(anon.execute("SELECT 1", vec![])),
        ErrorCode::Unauthenticated,
        "no data before login"
    );
    let (mut c, token) = admin(a.addr);
    assert!(token.expires_at > 0);
    c.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        vec![],
    )
    .unwrap();
    c.execute(
        "INSERT INTO notes (body) VALUES (?1)",
        vec![Value::text("hello")],
    )
    .unwrap();
    let r = c.execute("SELECT body FROM notes", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::text("hello")]);

    // Wrong secret, unknown user, malformed name: the same refusal.
    for (user, secret) in [("admin", "wrong"), ("nobody", ADMIN), ("bad name", ADMIN)] {
        let mut x = FrameClient::connect(a.addr, WAIT).unwrap();
        assert_eq!(
            code(login(&mut x, user, secret)),
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            code(x.execute("SELECT 1", vec![])),
            ErrorCode::Unauthenticated
        );
    }

    // The token works on instance B, over a fresh connection.
    let mut on_b = FrameClient::connect(b.addr, WAIT).unwrap();
    present(&mut on_b, &token.token).unwrap();
    let r = on_b.execute("SELECT count(*) FROM notes", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::int(1)]);

    // Tampered, forged with another key, expired: refused.
    let mut tampered = token.token.clone();
    tampered.insert(8, 'A');
    let other_key = TokenSigner::new(b"another key", auth::DEFAULT_LIFETIME)
        .issue("admin", SystemTime::now())
        .unwrap();
    let expired = TokenSigner::new(KEY, Duration::from_secs(60))
        .issue("admin", SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    for bad in [tampered, other_key.token, expired.token, "garbage".into()] {
        let mut x = FrameClient::connect(b.addr, WAIT).unwrap();
        assert_eq!(code(present(&mut x, &bad)), ErrorCode::Unauthenticated);
        assert_eq!(
            code(x.execute("SELECT 1", vec![])),
            ErrorCode::Unauthenticated
        );
    }

    // The server's own tables stay out of reach, even for admin (more in
    // clients_cannot_reach_the_servers_own_tables_however_they_name_them).
    assert_eq!(
        code(c.execute("SELECT secret_hash FROM _NetMod_users", vec![])),
        ErrorCode::Forbidden
    );
}

#[test]
fn many_clients_with_pipelined_requests_get_every_answer_under_its_own_id() {
    let dir = TempDir::new("ts-pipe");
    let db = start_db(&dir);
    let ts = start_test_server(db.addr);
    let (mut c, token) = admin(ts.addr);
    c.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)", vec![])
        .unwrap();
    let addr = ts.addr;
    let workers: Vec<_> = (0..8i64)
        .map(|w| {
            let token = token.token.clone();
            std::thread::spawn(move || {
                let mut c = FrameClient::connect(addr, WAIT).unwrap();
                present(&mut c, &token).unwrap();
                // 50 writes in flight at once, then 50 reads of them.
                let mut ids = Vec::new();
                for i in 0..50i64 {
                    let k = w * 1000 + i;
                    let id = c.next_id();
                    let req = protocol::proto::DataRequest {
                        kind: Some(protocol::proto::data_request::Kind::Execute(
                            protocol::proto::Statement {
                                keys: Vec::new(),
                                sql: "INSERT INTO kv VALUES (?1, ?2)".into(),
                                args: vec![Value::int(k), Value::text(format!("v{k}"))],
                                named_args: vec![],
                            },
                        )),
                        ..Default::default()
                    };
                    c.send(&wire::message(
                        MessageType::Request,
                        Operation::Data,
                        id,
                        &req,
                    ))
                    .unwrap();
                    ids.push((id, k));
                }
                let mut seen = std::collections::HashSet::new();
                while seen.len() < ids.len() {
                    let m = c.next_message().unwrap();
                    assert_eq!(m.r#type(), MessageType::Response, "{m:?}");
                    assert!(ids.iter().any(|(id, _)| *id == m.message_id));
                    assert!(seen.insert(m.message_id), "one answer per request");
                }
                for (_, k) in ids {
                    let r = c
                        .execute("SELECT v FROM kv WHERE k = ?1", vec![Value::int(k)])
                        .unwrap();
                    assert_eq!(r.rows[0].values, [Value::text(format!("v{k}"))]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let r = c.execute("SELECT count(*) FROM kv", vec![]).unwrap();
    assert_eq!(r.rows[0].values, [Value::int(400)]);
}

fn count(r: &protocol::proto::StatementResult) -> i64 {
    match r.rows[0].values[0].kind {
        Some(value::Kind::Integer(n)) => n,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn with_db_server_dead_clients_get_a_fast_error_and_the_link_comes_back_by_itself() {
    let dir = TempDir::new("ts-breaker");
    let db_file = dir.path("link.db");
    let db_arg = db_file.to_str().unwrap().to_string();
    let mut db = Proc::spawn(
        "db-server",
        &["--listen", "127.0.0.1:0", "--sqlite", &db_arg],
    );
    let db_addr = db.listen_addr();
    // A breaker that would stay open a minute: reconnecting must close it, or requests (and
    // /health behind a proxy that waits for it) would stay refused that long.
    let mut svc = service(db_addr);
    if let Some(link) = svc.db.as_mut() {
        link.breaker_open = Duration::from_secs(60);
    }
    let ts = start_service(svc);
    let (mut c, _) = admin(ts.addr);
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])
        .unwrap();
    c.execute("INSERT INTO t VALUES (1)", vec![]).unwrap();

    db.signal(libc::SIGKILL);
    db.wait_exit();
    // Every request is answered (no hang): UNAVAILABLE while db-server is gone.
    for _ in 0..20 {
        assert_eq!(
            code(c.execute("SELECT count(*) FROM t", vec![])),
            ErrorCode::Unavailable
        );
    }
    // db-server back on the same address: test-server reconnects without a restart.
    let port = db_addr.port().to_string();
    let mut db = Proc::spawn(
        "db-server",
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--sqlite",
            &db_arg,
        ],
    );
    db.listen_addr();
    let mut back = None;
    common::eventually("requests succeed again", || {
        back = c.execute("SELECT count(*) FROM t", vec![]).ok();
        back.is_some()
    });
    assert_eq!(count(&back.unwrap()), 1, "the row written before the crash");
}

#[test]
fn without_a_db_server_logins_and_data_get_unavailable_at_once() {
    // Nothing listens here.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ts = start_test_server(dead);
    let mut c = FrameClient::connect(ts.addr, WAIT).unwrap();
    assert_eq!(code(login(&mut c, "admin", ADMIN)), ErrorCode::Unavailable);
    let token = TokenSigner::new(KEY, auth::DEFAULT_LIFETIME)
        .issue("admin", SystemTime::now())
        .unwrap();
    present(&mut c, &token.token).unwrap();
    assert_eq!(code(c.execute("SELECT 1", vec![])), ErrorCode::Unavailable);
    // Still serving pings.
    c.ping(b"x").unwrap();
}

#[test]
fn a_pong_overtakes_a_long_queue_of_data_replies() {
    let dir = TempDir::new("ts-priority");
    let db = start_db(&dir);
    let mut svc = service(db.addr);
    // The test counts the server's queued messages: no liveness ping to db-server in between.
    if let Some(link) = svc.db.as_mut() {
        link.ping_interval = Duration::from_secs(3600);
        link.silence_limit = Duration::from_secs(3 * 3600);
    }
    // Backpressure would (rightly) stop reading this client once its replies pile up, and the
    // Ping would then wait in the socket; raise the marks so that the queue can be long.
    let ts = start(
        engine::Config::builder()
            .threads(1)
            .write_high_water(64 << 20)
            .write_low_water(32 << 20)
            .write_hard_cap(64 << 20)
            .build()
            .expect("a valid engine config"),
        move |_| test_server::service(svc.clone()),
    );
    let (mut c, _) = admin(ts.addr);
    const REPLIES: u32 = 120;
    let select = protocol::proto::DataRequest {
        kind: Some(protocol::proto::data_request::Kind::Execute(
            protocol::proto::Statement {
                keys: Vec::new(),
                sql: "SELECT randomblob(100000)".into(),
                args: vec![],
                named_args: vec![],
            },
        )),
        ..Default::default()
    };
    let queued_before = ts.handle.stats().messages_out;
    let mut ids = Vec::new();
    for _ in 0..REPLIES {
        let id = c.next_id();
        ids.push(id);
        c.send(&wire::message(
            MessageType::Request,
            Operation::Data,
            id,
            &select,
        ))
        .unwrap();
    }
    // Each request goes out on the link and its ~100 kB answer is queued for us (we do not
    // read): 12 MB, far more than the kernel's socket buffers take.
    common::eventually("every reply queued", || {
        ts.handle.stats().messages_out >= queued_before + 2 * u64::from(REPLIES)
    });
    let ping_id = c.next_id();
    c.send(&wire::message(
        MessageType::Request,
        Operation::Ping,
        ping_id,
        &wire::Ping::default(),
    ))
    .unwrap();
    common::eventually("the pong queued", || {
        ts.handle.stats().messages_out > queued_before + 2 * u64::from(REPLIES)
    });
    let mut replies_before_pong = None;
    let mut replies = 0;
    while replies < REPLIES || replies_before_pong.is_none() {
        let m = c.next_message().unwrap();
        if m.message_id == ping_id && m.op() == Operation::Ping {
            replies_before_pong = Some(replies);
        } else {
            assert_eq!(m.r#type(), MessageType::Response, "{m:?}");
            assert!(ids.contains(&m.message_id), "an answer to one of ours");
            replies += 1;
        }
    }
    let before = replies_before_pong.unwrap();
    // Only what the kernel already held (a few MB) comes before the pong.
    assert!(
        REPLIES - before >= 20,
        "the pong came after {before} of {REPLIES} replies"
    );
}

#[test]
fn the_admin_manages_users_and_only_the_admin() {
    let dir = TempDir::new("ts-users");
    let db = start_db(&dir);
    let ts = start_test_server(db.addr);
    let (mut root, _) = admin(ts.addr);

    let made = root.change_user("alice", "alice-secret-1", false).unwrap();
    assert!(made.created && !made.removed);
    let mut alice = FrameClient::connect(ts.addr, WAIT).unwrap();
    login(&mut alice, "alice", "alice-secret-1").unwrap();
    alice.execute("SELECT 1", vec![]).unwrap();
    assert_eq!(
        code(alice.change_user("mallory", "mallory-secret", false)),
        ErrorCode::Forbidden
    );
    let mut anon = FrameClient::connect(ts.addr, WAIT).unwrap();
    assert_eq!(
        code(anon.change_user("mallory", "mallory-secret", false)),
        ErrorCode::Unauthenticated
    );
    for (name, secret, remove) in [
        ("bad name!", "long enough", false),
        ("bob", "short", false),
        ("admin", "", true),
    ] {
        assert_eq!(
            code(root.change_user(name, secret, remove)),
            ErrorCode::BadRequest,
            "{name} {secret} {remove}"
        );
    }

    // A new secret replaces the old one; the stored form is a salted hash, never the secret.
    let rekeyed = root.change_user("alice", "alice-secret-2", false).unwrap();
    assert!(!rekeyed.created);
    let mut again = FrameClient::connect(ts.addr, WAIT).unwrap();
    assert_eq!(
        code(login(&mut again, "alice", "alice-secret-1")),
        ErrorCode::Unauthenticated
    );
    login(&mut again, "alice", "alice-secret-2").unwrap();
    let mut raw = FrameClient::connect(db.addr, WAIT).unwrap();
    let stored = raw
        .execute(
            "SELECT secret_hash FROM _netmod_users WHERE name = 'alice'",
            vec![],
        )
        .unwrap();
    let Some(value::Kind::Text(hash)) = stored.rows[0].values[0].kind.clone() else {
        panic!("{stored:?}");
    };
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
    assert!(!hash.contains("alice-secret-2"));

    let gone = root.change_user("alice", "", true).unwrap();
    assert!(gone.removed);
    assert!(!root.change_user("alice", "", true).unwrap().removed);
    let mut late = FrameClient::connect(ts.addr, WAIT).unwrap();
    assert_eq!(
        code(login(&mut late, "alice", "alice-secret-2")),
        ErrorCode::Unauthenticated
    );
}

#[test]
fn a_flood_of_wrong_secrets_is_cut_off_before_hashing_and_others_are_not_slowed() {
    let dir = TempDir::new("ts-login-flood");
    let db = start_db(&dir);
    let ts = start_test_server(db.addr);
    let (mut root, _) = admin(ts.addr);
    root.change_user("carol", "carol-secret-1", false).unwrap();
    let mut attacker = common::connect_from("127.0.0.2", ts.addr);
    let codes: Vec<ErrorCode> = (0..15)
        .map(|_| code(login(&mut attacker, "admin", "guess")))
        .collect();
    assert!(
        codes[..10].iter().all(|c| *c == ErrorCode::Unauthenticated),
        "{codes:?}"
    );
    assert!(
        codes[10..].iter().all(|c| *c == ErrorCode::RateLimited),
        "{codes:?}"
    );
    // Limited means not even checked: the right secret is refused too, at once.
    assert_eq!(
        code(login(&mut attacker, "admin", ADMIN)),
        ErrorCode::RateLimited
    );

    // A flood from four more connections of that address, pipelined, while a client from
    // another address logs in and works.
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let addr = ts.addr;
            std::thread::spawn(move || {
                let mut c = common::connect_from("127.0.0.2", addr);
                let ids: Vec<u32> = (0..100)
                    .map(|_| {
                        let id = c.next_id();
                        let req = AuthLogin {
                            user: "admin".into(),
                            secret: "guess".into(),
                        };
                        c.send(&wire::message(
                            MessageType::Request,
                            Operation::AuthLogin,
                            id,
                            &req,
                        ))
                        .unwrap();
                        id
                    })
                    .collect();
                ids.iter()
                    .filter(|id| code(c.await_reply(**id)) == ErrorCode::RateLimited)
                    .count()
            })
        })
        .collect();
    let mut victim = common::connect_from("127.0.0.3", ts.addr);
    login(&mut victim, "admin", ADMIN).unwrap();
    for _ in 0..50 {
        victim.execute("SELECT 1", vec![]).unwrap();
    }
    let limited: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        limited, 400,
        "every attempt of the flood refused before hashing"
    );
    // The lockout is per address *and user* (issue 24): another user of the attacker's
    // address — behind a proxy, every client shares one — logs in as before.
    let mut neighbour = common::connect_from("127.0.0.2", ts.addr);
    login(&mut neighbour, "carol", "carol-secret-1").unwrap();
    neighbour.execute("SELECT 1", vec![]).unwrap();
    // But a spray over user names from one address is bounded by the address's own bucket
    // (30 failures here): each attempt would cost the server a hash.
    let mut sprayer = common::connect_from("127.0.0.4", ts.addr);
    let codes: Vec<ErrorCode> = (0..32)
        .map(|i| code(login(&mut sprayer, &format!("user{i}"), "guess")))
        .collect();
    assert!(
        codes[..30].iter().all(|c| *c == ErrorCode::Unauthenticated),
        "{codes:?}"
    );
    assert!(
        codes[30..].iter().all(|c| *c == ErrorCode::RateLimited),
        "{codes:?}"
    );
}

#[test]
fn clients_cannot_reach_the_servers_own_tables_however_they_name_them() {
    let dir = TempDir::new("sandbox");
    let db = start_db(&dir);
    let ts = start_test_server(db.addr);
    let (mut c, _) = admin(ts.addr);
    c.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        vec![],
    )
    .unwrap();
    c.execute("INSERT INTO notes (body) VALUES ('x')", vec![])
        .unwrap();
    let db_file = dir.path("test.db");
    let attach = format!("ATTACH DATABASE '{}' AS other", db_file.display());
    let hex_name = "SELECT * FROM pragma_table_info(CAST(X'5F6E65746D6F645F7573657273' AS TEXT))";
    let tries = [
        "SELECT * FROM _netmod_users",
        "SELECT * FROM \"_netmod_users\"",
        "SELECT * FROM [_netmod_users]",
        "SELECT * FROM `_netmod_users`",
        "SELECT * FROM _NetMod_Users",
        "SELECT * FROM main._netmod_users",
        "SELECT * FROM \"_NETMOD_USERS\"",
        "UPDATE _netmod_users SET secret_hash = 'x'",
        "DELETE FROM \"_netmod_idempotency\"",
        "INSERT INTO _netmod_meta (k, v) VALUES ('x', 1)",
        "DROP TABLE _netmod_users",
        "ALTER TABLE _netmod_users RENAME TO stolen",
        "CREATE INDEX i ON _netmod_users (name)",
        "WITH u AS (SELECT * FROM _netmod_users) SELECT * FROM u",
        "SELECT (SELECT count(*) FROM _netmod_users)",
        &attach,
        "DETACH DATABASE main",
        "PRAGMA writable_schema = ON",
        "PRAGMA table_info(_netmod_users)",
        hex_name,
        "CREATE TRIGGER t AFTER INSERT ON notes BEGIN DELETE FROM notes; END",
    ];
    for sql in tries {
        assert_eq!(code(c.execute(sql, vec![])), ErrorCode::Forbidden, "{sql}");
    }
    // A view made to read a server table is made, but reading through it is refused.
    c.execute("CREATE VIEW peek AS SELECT * FROM _netmod_users", vec![])
        .map(|_| ())
        .or_else(|e| match e {
            ClientError::Server {
                code: ErrorCode::Forbidden,
                ..
            } => Ok(()),
            other => Err(other),
        })
        .unwrap();
    let peek = c.execute("SELECT * FROM peek", vec![]);
    assert!(
        matches!(code(peek), ErrorCode::Forbidden | ErrorCode::UnknownTable),
        "reading through a view"
    );
    // The same texts inside a batch, a transaction and a cursor.
    let batch = protocol::proto::DataRequest {
        kind: Some(protocol::proto::data_request::Kind::Batch(
            protocol::proto::Batch {
                steps: vec![protocol::proto::BatchStep::new(
                    "SELECT 1 FROM \"_netmod_users\"",
                    vec![],
                )],
            },
        )),
        ..Default::default()
    };
    assert_eq!(code(c.data(&batch)), ErrorCode::Forbidden);
    let cursor = protocol::proto::DataRequest {
        kind: Some(protocol::proto::data_request::Kind::OpenCursor(
            protocol::proto::CursorOpen {
                stmt: Some(protocol::proto::Statement {
                    sql: "SELECT * FROM _netmod_users".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    assert_eq!(code(c.data(&cursor)), ErrorCode::Forbidden);
    // Ordinary work goes on, and the server's own use of its tables is unaffected.
    let n = c.execute("SELECT count(*) FROM notes", vec![]).unwrap();
    assert_eq!(count(&n), 1);
    let (_again, _) = admin(ts.addr);
    let mut raw = FrameClient::connect(db.addr, WAIT).unwrap();
    let users = raw
        .execute("SELECT count(*) FROM _netmod_users", vec![])
        .unwrap();
    assert_eq!(
        count(&users),
        1,
        "db-server's own clients are not sandboxed"
    );
}

#[test]
fn the_breaker_is_seen_open_on_health_and_metrics_while_db_server_is_down() {
    let dir = TempDir::new("ts-breaker-seen");
    let db_file = dir.path("b.db");
    let (mut db, db_addr) = common::spawn_db(&db_file);
    let (_ts, http) = common::spawn_front(
        db_addr,
        &[
            "--breaker-failures",
            "2",
            "--breaker-open",
            "60",
            "--reconnect-base",
            "0.05",
            "--reconnect-max",
            "0.2",
        ],
    );
    let health = || {
        let r = common::http::call(http, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        (
            r.status,
            v["db"]["circuit"].as_str().unwrap_or_default().to_string(),
        )
    };
    let metric = || {
        let m = common::http::call(http, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").body;
        m.lines()
            .find_map(|l| l.strip_prefix("netmod_db_link_circuit_open "))
            .map(str::to_string)
            .expect("the breaker's gauge")
    };
    common::eventually("the front is up", || health() == (200, "closed".into()));
    assert_eq!(metric(), "0");

    db.signal(libc::SIGKILL);
    db.wait_exit();
    // Requests fail while it is gone; after 2 failures the breaker opens and says so.
    common::eventually("the breaker opens", || {
        let r = common::http::call(http, "GET /docs/absent HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(r.status == 503 || r.status == 504, "{r:?}");
        health() == (503, "open".into())
    });
    assert_eq!(metric(), "1");
    let r = common::http::call(http, "GET /docs/absent HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503, "refused at once while open");

    // db-server back: the link reconnects and closes the breaker long before its 60 s.
    let port = db_addr.port().to_string();
    let mut back = Proc::spawn(
        "db-server",
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--sqlite",
            db_file.to_str().unwrap(),
        ],
    );
    back.listen_addr();
    common::eventually("the breaker closes", || health() == (200, "closed".into()));
    assert_eq!(metric(), "0");
}

/// Reads one whole frame from a blocking socket.
fn read_message(s: &mut std::net::TcpStream) -> wire::Message {
    use std::io::Read;
    let mut len = [0; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    wire::decode(&body).unwrap()
}

#[test]
fn ping_round_trips_show_on_metrics_and_in_the_line_that_drops_a_silent_client() {
    use std::io::Write;
    let dir = TempDir::new("ts-rtt");
    let (_db, db_addr) = common::spawn_db(&dir.path("r.db"));
    let db = db_addr.to_string();
    let mut ts = Proc::spawn(
        "test-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--threads",
            "1",
            "--ping-interval",
            "0.05",
            "--ping-timeout",
            "0.5",
        ],
    );
    let [frames, http] = ts.listen_addrs();
    let metric = || {
        let m = common::http::call(http, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").body;
        m.lines()
            .find_map(|l| l.strip_prefix("netmod_ping_rtt_average_seconds "))
            .map(|v| v.parse::<f64>().unwrap())
            .expect("the RTT gauge")
    };
    assert_eq!(metric(), 0.0, "no client has answered a ping yet");

    let mut s = std::net::TcpStream::connect(frames).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    for _ in 0..3 {
        let ping = read_message(&mut s);
        assert_eq!(
            (ping.r#type(), ping.op()),
            (MessageType::Request, Operation::Ping)
        );
        s.write_all(&wire::to_frame(&wire::pong(ping))).unwrap();
    }
    common::eventually("the answered pings' average on /metrics", || metric() > 0.0);

    // Silent from now on: dropped after the timeout, its usual round trip in the line.
    let line = ts.wait_line("did not answer a ping within 0.5 s: disconnecting");
    assert!(line.contains("Client 127.0.0.1 "), "{line}");
    assert!(line.contains("round trips averaged"), "{line}");
    assert!(line.contains("over its last 3 answered pings"), "{line}");
    common::eventually("its average leaves the gauge", || metric() == 0.0);
}

/// db-server gone silent without closing anything (a partition) is noticed by the link's
/// liveness pings: a request then fails UNAVAILABLE when the silent connection is closed,
/// not TIMEOUT after the request timeout, and requests go through again once db-server
/// answers again (the link reconnects).
#[test]
fn a_silent_db_server_is_noticed_by_liveness_pings_not_by_the_request_timeout() {
    let dir = TempDir::new("ts-silent-db");
    let db = start_db(&dir);
    let relay = Relay::start(db.addr);
    let mut svc = service(relay.addr);
    if let Some(link) = svc.db.as_mut() {
        link.conns = 1;
        link.silence_limit = Duration::from_millis(600);
        link.ping_interval = Duration::from_millis(200);
        link.request_timeout = Duration::from_secs(3600); // only liveness can end the wait
    }
    let ts = start_service(svc);
    let (mut c, _) = admin(ts.addr);
    c.execute("SELECT 1", vec![]).unwrap();
    relay.cut(true);
    assert_eq!(code(c.execute("SELECT 2", vec![])), ErrorCode::Unavailable);
    relay.cut(false);
    common::eventually("requests pass again after the partition heals", || {
        c.execute("SELECT 3", vec![]).is_ok()
    });
}
