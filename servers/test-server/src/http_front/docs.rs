//! The documents table: its schema, the statements the front sends, and their answers.

use super::*;

/// The documents table in db-server's database.
pub const DOCS_TABLE: &str = "docs";

/// Statement creating [`DOCS_TABLE`] (run with the service's setup).
pub fn create_docs_table() -> String {
    // The PUT's statements name the table in `'static` text.
    debug_assert!([PUT_INSERT, PUT_UPDATE, GET_SQL, DELETE_SQL]
        .iter()
        .all(|sql| sql.contains(DOCS_TABLE)));
    format!(
        "CREATE TABLE IF NOT EXISTS {DOCS_TABLE} \
         (name TEXT PRIMARY KEY, content TEXT NOT NULL, updated BIGINT NOT NULL)"
    )
}

/// The subscription the db link sends: changes of `tables` ([`DOCS_TABLE`] for the cache).
pub fn watch_request(tables: Vec<String>) -> Message {
    let watch = protocol::proto::Watch { tables };
    wire::message(MessageType::Request, Operation::Watch, 0, &watch)
}

/// The two statements of a PUT: step 0 creates (1 row affected: 201), step 1 replaces; one
/// transaction. `'static` text: nothing is formatted per request.
pub(super) const PUT_INSERT: &str =
    "INSERT INTO docs (name, content, updated) VALUES (?1, ?2, ?3) \
                          ON CONFLICT (name) DO NOTHING";
pub(super) const PUT_UPDATE: &str = "UPDATE docs SET content = ?2, updated = ?3 WHERE name = ?1";

/// A PUT of `name` as a `DataRequest` (what [`put_request`] encodes; kept for tests and as the
/// reference of that encoding).
#[cfg(test)]
pub(super) fn put_batch(name: &str, content: &str, now: i64) -> protocol::proto::DataRequest {
    use protocol::proto::{data_request, Batch, BatchStep, DataRequest, Statement, Value};
    // Each step names the document, so db-server's notice makes only it out of date in the
    // other instances.
    let step = |sql: &str| BatchStep {
        stmt: Some(
            Statement::new(
                sql,
                vec![Value::text(name), Value::text(content), Value::int(now)],
            )
            .with_keys(vec![name.to_string()]),
        ),
        ..Default::default()
    };
    DataRequest {
        kind: Some(data_request::Kind::Batch(Batch {
            steps: vec![step(PUT_INSERT), step(PUT_UPDATE)],
        })),
        ..Default::default()
    }
}

/// The text of a GET of one document.
pub(super) const GET_SQL: &str = "SELECT content FROM docs WHERE name = ?1";
/// The text of a DELETE of one document.
pub(super) const DELETE_SQL: &str = "DELETE FROM docs WHERE name = ?1";

/// An argument of one of the front's statements.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// One of the front's statements, borrowed: `'static` text, its arguments and the document
/// it changes (`Statement.keys`, for the change notices of a write).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stmt<'a> {
    pub sql: &'static str,
    pub args: &'a [Arg<'a>],
    pub key: Option<&'a str>,
}

/// A `DataRequest` of the front's (one statement, or a batch of them) made of borrowed parts
/// and encoded straight into the db link's output: no message is built, nothing is allocated.
/// Only encoded ([`prost::Message`] is implemented for that; decoding it skips every field).
#[derive(Debug, Clone, Copy)]
pub(super) struct DocRequest<'a> {
    pub batch: bool,
    pub stmts: &'a [Stmt<'a>],
}

impl DocRequest<'_> {
    /// One statement on its own (autocommit).
    pub(super) fn one<'a>(stmt: &'a [Stmt<'a>; 1]) -> DocRequest<'a> {
        DocRequest {
            batch: false,
            stmts: stmt,
        }
    }
}

fn ld(tag: u32, len: usize) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn arg_len(a: &Arg<'_>) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    match a {
        Arg::Text(t) => ld(4, t.len()),
        Arg::Int(i) => key_len(2) + encoded_len_varint(zigzag(*i)),
    }
}

fn stmt_len(st: &Stmt<'_>) -> usize {
    ld(1, st.sql.len())
        + st.args.iter().map(|a| ld(2, arg_len(a))).sum::<usize>()
        + st.key.map_or(0, |k| ld(4, k.len()))
}

fn batch_len(r: &DocRequest<'_>) -> usize {
    // Batch.steps: BatchStep { stmt }.
    r.stmts.iter().map(|st| ld(1, ld(1, stmt_len(st)))).sum()
}

fn head(buf: &mut impl prost::bytes::BufMut, tag: u32, len: usize) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_str(buf: &mut impl prost::bytes::BufMut, tag: u32, s: &str) {
    head(buf, tag, s.len());
    buf.put_slice(s.as_bytes());
}

fn put_stmt(buf: &mut impl prost::bytes::BufMut, st: &Stmt<'_>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    put_str(buf, 1, st.sql); // Statement.sql
    for a in st.args {
        head(buf, 2, arg_len(a)); // Statement.args
        match a {
            Arg::Text(t) => put_str(buf, 4, t), // Value.text
            Arg::Int(i) => {
                encode_key(2, WireType::Varint, buf); // Value.integer (sint64)
                encode_varint(zigzag(*i), buf);
            }
        }
    }
    if let Some(k) = st.key {
        put_str(buf, 4, k); // Statement.keys
    }
}

impl prost::Message for DocRequest<'_> {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        if self.batch {
            head(buf, 2, batch_len(self)); // DataRequest.batch
            for st in self.stmts {
                head(buf, 1, ld(1, stmt_len(st))); // Batch.steps
                head(buf, 1, stmt_len(st)); // BatchStep.stmt
                put_stmt(buf, st);
            }
        } else if let Some(st) = self.stmts.first() {
            head(buf, 1, stmt_len(st)); // DataRequest.execute
            put_stmt(buf, st);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        if self.batch {
            ld(2, batch_len(self))
        } else {
            self.stmts.first().map_or(0, |st| ld(1, stmt_len(st)))
        }
    }

    fn clear(&mut self) {
        self.stmts = &[];
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// `{"docName": …, "content": …}`, keys in the original design's order, in one buffer.
pub(super) fn doc_json(name: &str, content: &str) -> Vec<u8> {
    // Room for the usual escapes: the body is made in one allocation.
    let escapes = |s: &str| s.len() + s.len() / 8 + 2;
    let mut out = Vec::with_capacity(24 + escapes(name) + escapes(content));
    doc_json_into(&mut out, name, content);
    out
}

/// [`doc_json`] into `out` (cleared first), e.g. a scratch buffer kept between requests.
pub(super) fn doc_json_into(out: &mut Vec<u8>, name: &str, content: &str) {
    out.clear();
    out.extend_from_slice(b"{\"docName\":");
    json_string(out, name);
    out.extend_from_slice(b",\"content\":");
    json_string(out, content);
    out.push(b'}');
}

/// `s` as a JSON string (quoted and escaped) at the end of `out`.
pub(super) fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub(super) fn doc_answer(op: &DocOp, resp: DataResponse) -> Answer {
    let not_found = || Answer::error(404, "Document not found");
    match (op, resp.kind) {
        (DocOp::Get(name, _), Some(data_response::Kind::Result(r))) => {
            let content = r.rows.into_iter().next().and_then(|row| {
                match row.values.into_iter().next()?.kind {
                    Some(value::Kind::Text(t)) => Some(t),
                    _ => None,
                }
            });
            match content {
                Some(content) => Answer::json(200, doc_json(name, &content)),
                None => not_found(),
            }
        }
        (DocOp::Delete(_), Some(data_response::Kind::Result(r))) => {
            if r.rows_affected > 0 {
                Answer::json(204, Vec::new())
            } else {
                not_found()
            }
        }
        _ => Answer::error(502, "unexpected answer from db-server"),
    }
}

/// The answer to a PUT of `name`: 201 when it `created` the document, else 200.
pub(super) fn put_answer(name: &str, created: bool) -> Answer {
    let mut body = Vec::with_capacity(32 + name.len());
    body.extend_from_slice(b"{\"docName\":");
    json_string(&mut body, name);
    body.extend_from_slice(if created {
        b",\"created\":true}"
    } else {
        b",\"created\":false}"
    });
    Answer::json(if created { 201 } else { 200 }, body)
}

/// The status for a request db-server could not serve.
pub(super) fn db_failure(code: ErrorCode, text: &str) -> Answer {
    match code {
        ErrorCode::Unavailable | ErrorCode::Overloaded | ErrorCode::ShuttingDown => {
            Answer::error(503, &format!("database unavailable: {text}"))
        }
        ErrorCode::Timeout => Answer::error(504, &format!("database timeout: {text}")),
        _ => Answer::error(500, &format!("database error: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::proto::{data_request, DataRequest, Statement, Value};

    #[test]
    fn the_borrowed_requests_encode_as_the_messages_they_stand_for() {
        use prost::Message as _;
        for (name, content, now) in [
            ("a", "v", 0),
            ("doc-1", "x".repeat(300).as_str(), 1_700_000_000),
            ("é", "\"quoted\"\n", -5),
        ] {
            let args = [Arg::Text(name), Arg::Text(content), Arg::Int(now)];
            let stmt = |sql| Stmt {
                sql,
                args: &args,
                key: Some(name),
            };
            let put = DocRequest {
                batch: true,
                stmts: &[stmt(PUT_INSERT), stmt(PUT_UPDATE)],
            };
            let bytes = put.encode_to_vec();
            assert_eq!(bytes.len(), put.encoded_len());
            assert_eq!(
                DataRequest::decode(&bytes[..]).unwrap(),
                put_batch(name, content, now)
            );

            let arg = [Arg::Text(name)];
            let get_stmt = [Stmt {
                sql: GET_SQL,
                args: &arg,
                key: None,
            }];
            let get = DocRequest::one(&get_stmt);
            let bytes = get.encode_to_vec();
            assert_eq!(bytes.len(), get.encoded_len());
            assert_eq!(
                DataRequest::decode(&bytes[..]).unwrap(),
                DataRequest::execute(GET_SQL, vec![Value::text(name)])
            );
            let delete_stmt = [Stmt {
                sql: DELETE_SQL,
                args: &arg,
                key: Some(name),
            }];
            let delete = DocRequest::one(&delete_stmt);
            let bytes = delete.encode_to_vec();
            let expected = DataRequest {
                kind: Some(data_request::Kind::Execute(
                    Statement::new(DELETE_SQL, vec![Value::text(name)])
                        .with_keys(vec![name.to_string()]),
                )),
                ..Default::default()
            };
            assert_eq!(DataRequest::decode(&bytes[..]).unwrap(), expected);
        }
        for sql in [PUT_INSERT, PUT_UPDATE, GET_SQL, DELETE_SQL] {
            assert!(sql.contains(DOCS_TABLE), "{sql}");
        }
    }

    #[test]
    fn document_answers_are_json() {
        let v: serde_json::Value = serde_json::from_slice(&doc_json("n\"1", "a\u{1}b")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"docName": "n\"1", "content": "a\u{1}b"})
        );
    }
}
