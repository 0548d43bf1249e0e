//! What frame loads send: pings, documents through test-server, rows on db-server.

use shared::wire::{self, Message, MessageType, Operation, Ping};

use super::{LoadConfig, Workload};

/// Ping requests with a fixed payload.
#[derive(Debug, Clone)]
pub struct PingWorkload {
    data: bytes::Bytes,
}

impl PingWorkload {
    /// Pings carrying `payload` bytes.
    pub fn new(payload: usize) -> Self {
        let ping = Ping {
            payload: vec![b'x'; payload].into(),
        };
        PingWorkload {
            data: prost::Message::encode_to_vec(&ping).into(),
        }
    }
}

impl Workload for PingWorkload {
    fn request(&self, id: u32) -> Message {
        Message {
            r#type: MessageType::Request as i32,
            message_id: id,
            data: self.data.clone(),
            op: Operation::Ping as i32,
            ..Message::default()
        }
    }
}

/// What `loadgen db` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbMode {
    /// Point reads by primary key.
    Read,
    /// Single-row durable inserts.
    Write,
    /// 90 % reads, 10 % writes.
    Mixed,
}

/// What `loadgen frames` sends through test-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOp {
    /// Ping (answered by test-server itself).
    Ping,
    /// Read a document (a point read through test-server to db-server).
    Get,
    /// Replace a document (a durable write through test-server to db-server).
    Put,
}

/// Authenticated requests to test-server: every connection presents a token first.
#[derive(Debug)]
pub struct FramesWorkload {
    op: FrameOp,
    token: String,
    docs: u64,
    counter: std::sync::atomic::AtomicU64,
}

impl FramesWorkload {
    /// Logs in as `user` and, for `get` and `put`, stores documents `bench-0` … `bench-<docs-1>`
    /// (over one blocking connection), so a run can start from an empty database.
    pub fn prepare(
        load: &LoadConfig,
        op: FrameOp,
        user: &str,
        secret: &str,
        docs: u64,
    ) -> Result<Self, crate::client::ClientError> {
        use protocol::proto::Value;
        let mut c = load.client()?;
        let token = c.login(user, secret)?.token;
        if op != FrameOp::Ping {
            for i in 0..docs {
                c.execute(
                    "INSERT INTO docs (name, content, updated) VALUES (?1, ?2, 0) \
                     ON CONFLICT (name) DO NOTHING",
                    vec![
                        Value::text(format!("bench-{i}")),
                        Value::text(format!("document {i} of the frames benchmark")),
                    ],
                )?;
            }
        }
        Ok(FramesWorkload {
            op,
            token,
            docs: docs.max(1),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn next(&self) -> u64 {
        let z = self
            .counter
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    }
}

impl Workload for FramesWorkload {
    fn request(&self, id: u32) -> Message {
        use protocol::proto::{data_request, DataRequest, Statement, Value};
        let name = || Value::text(format!("bench-{}", self.next() % self.docs));
        let (sql, args) = match self.op {
            FrameOp::Ping => {
                return wire::message(MessageType::Request, Operation::Ping, id, &Ping::default())
            }
            FrameOp::Get => ("SELECT content FROM docs WHERE name = ?1", vec![name()]),
            FrameOp::Put => (
                "UPDATE docs SET content = ?2, updated = ?3 WHERE name = ?1",
                vec![
                    name(),
                    Value::text(format!("v{id}")),
                    Value::int(i64::from(id)),
                ],
            ),
        };
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                keys: Vec::new(),
                sql: sql.into(),
                args,
                named_args: Vec::new(),
            })),
            ..DataRequest::default()
        };
        wire::message(MessageType::Request, Operation::Data, id, &req)
    }

    fn handshake(&self) -> Option<Message> {
        Some(wire::message(
            MessageType::Request,
            Operation::AuthToken,
            0,
            &wire::AuthToken {
                token: self.token.clone(),
                expires_at: 0,
            },
        ))
    }
}

/// SQL requests against db-server's `loadgen_kv` table.
#[derive(Debug)]
pub struct DbWorkload {
    mode: DbMode,
    rows: u64,
    counter: std::sync::atomic::AtomicU64,
}

/// The table `loadgen db` works on.
pub const DB_TABLE: &str = "loadgen_kv";

impl DbWorkload {
    /// Creates `loadgen_kv` if missing and seeds it to at least `rows` rows (ids 1..=rows), over
    /// one blocking connection, so a run can start from an empty database.
    pub fn prepare(
        load: &LoadConfig,
        mode: DbMode,
        rows: u64,
    ) -> Result<Self, crate::client::ClientError> {
        use protocol::proto::Value;
        let mut c = load.client()?;
        let rows_arg = vec![Value::int(i64::try_from(rows).unwrap_or(i64::MAX))];
        // The same table on either backend: ids given for the seed, made by the database for
        // the writes. `sqlite_version()` exists on SQLite only.
        if c.execute("SELECT sqlite_version()", vec![]).is_ok() {
            c.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {DB_TABLE} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
                ),
                vec![],
            )?;
            c.execute(
                &format!(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
                     INSERT OR IGNORE INTO {DB_TABLE} (id, v) SELECT x, 'seed-' || x FROM n"
                ),
                rows_arg,
            )?;
        } else {
            c.execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {DB_TABLE} \
                     (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v TEXT NOT NULL)"
                ),
                vec![],
            )?;
            c.execute(
                &format!(
                    "INSERT INTO {DB_TABLE} (id, v) SELECT g, 'seed-' || g \
                     FROM generate_series(1, ?1) g ON CONFLICT (id) DO NOTHING"
                ),
                rows_arg,
            )?;
            // Writes after the seed must not collide with the seeded ids.
            c.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{DB_TABLE}', 'id'), \
                     (SELECT max(id) FROM {DB_TABLE}))"
                ),
                vec![],
            )?;
        }
        Ok(DbWorkload {
            mode,
            rows: rows.max(1),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn next(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, well spread, no locking.
        let mut z = self
            .counter
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Workload for DbWorkload {
    fn request(&self, id: u32) -> Message {
        use protocol::proto::{data_request, DataRequest, Statement, Value};
        let r = self.next();
        let write = match self.mode {
            DbMode::Read => false,
            DbMode::Write => true,
            DbMode::Mixed => r % 10 == 0,
        };
        let (sql, arg) = if write {
            (
                format!("INSERT INTO {DB_TABLE} (v) VALUES (?1)"),
                Value::text(format!("w{r:x}")),
            )
        } else {
            let key = (r >> 8) % self.rows + 1;
            (
                format!("SELECT v FROM {DB_TABLE} WHERE id = ?1"),
                Value::int(i64::try_from(key).unwrap_or(1)),
            )
        };
        let req = DataRequest {
            kind: Some(data_request::Kind::Execute(Statement {
                keys: Vec::new(),
                sql,
                args: vec![arg],
                named_args: Vec::new(),
            })),
            ..DataRequest::default()
        };
        wire::message(MessageType::Request, Operation::Data, id, &req)
    }
}
