//! The documents table: its schema, the statements the front sends, and their answers.

use super::*;

/// The documents table in db-server's database.
pub const DOCS_TABLE: &str = "docs";

/// Statement creating [`DOCS_TABLE`] (run with the service's setup).
pub fn create_docs_table() -> String {
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

pub(super) fn put_batch(name: &str, content: String) -> DataRequest {
    let now = Value::int(i64::try_from(now_secs()).unwrap_or(0));
    // Step 0 creates (1 row affected: 201), step 1 replaces; one transaction.
    DataRequest {
        kind: Some(data_request::Kind::Batch(Batch {
            steps: vec![
                BatchStep::new(
                    format!(
                        "INSERT INTO {DOCS_TABLE} (name, content, updated) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (name) DO NOTHING"
                    ),
                    vec![Value::text(name), Value::text(content.clone()), now.clone()],
                ),
                BatchStep::new(
                    format!("UPDATE {DOCS_TABLE} SET content = ?2, updated = ?3 WHERE name = ?1"),
                    vec![Value::text(name), Value::text(content), now],
                ),
            ],
        })),
        ..Default::default()
    }
}

/// `{"docName": …, "content": …}`, keys in the original design's order.
pub(super) fn doc_json(name: &str, content: &str) -> Vec<u8> {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    format!(r#"{{"docName":{},"content":{}}}"#, q(name), q(content)).into_bytes()
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
        (DocOp::Put(name), Some(data_response::Kind::Batch(b))) => {
            let created = matches!(
                b.steps.first().and_then(|s| s.outcome.as_ref()),
                Some(step_outcome::Outcome::Ok(r)) if r.rows_affected == 1
            );
            Answer::json(
                if created { 201 } else { 200 },
                format!(
                    r#"{{"docName":{},"created":{created}}}"#,
                    serde_json::Value::from(name.as_str())
                )
                .into_bytes(),
            )
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
