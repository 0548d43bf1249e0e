//! A frame body as every server reads it: the `Message`, its payload inflated if flagged, then
//! decoded as each operation's payload, and the SQL of a data request through db-server's own
//! text handling (placeholder rewriting, the written-table scan, the leading keyword).
#![no_main]

use libfuzzer_sys::fuzz_target;
use db::{watch, workers};
use protocol::placeholders;
use protocol::proto::{data_request, DataRequest, TablesChanged, UserChange, Watch};
use protocol::wire::{self, AuthLogin, AuthToken, Ping, ServerMigration, ServerShutdown};
use prost::Message as _;

fn sql(text: &str) {
    let t = placeholders::to_dollar(text);
    let _ = t.index_of(":a");
    let _ = watch::written_table(text);
    let _ = workers::first_keyword(text);
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut msg) = wire::decode(data) else {
        return;
    };
    if wire::decompress(&mut msg, 1 << 20).is_err() {
        return;
    }
    let body = msg.data.clone();
    let _ = Ping::decode(body.clone());
    let _ = AuthLogin::decode(body.clone());
    let _ = AuthToken::decode(body.clone());
    let _ = ServerShutdown::decode(body.clone());
    let _ = ServerMigration::decode(body.clone());
    let _ = Watch::decode(body.clone());
    let _ = TablesChanged::decode(body.clone());
    let _ = UserChange::decode(body.clone());
    if let Ok(req) = DataRequest::decode(body) {
        match req.kind {
            Some(data_request::Kind::Execute(st)) => sql(&st.sql),
            Some(data_request::Kind::Batch(b)) => {
                for st in b.steps.iter().filter_map(|s| s.stmt.as_ref()) {
                    sql(&st.sql);
                }
            }
            _ => {}
        }
    }
});
