//! Unit tests of `sqlite`.

use super::*;

#[test]
fn every_connection_gets_the_configured_cache_and_map() {
    let dir = std::env::temp_dir().join(format!("netmod-sqlite-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.db");
    let memory = SqliteMemory {
        cache_kib: 8 * 1024,
        mmap_bytes: 64 << 20,
    };
    let busy = Duration::from_secs(1);
    let w = open_writer(&path, busy, memory).unwrap();
    let r = open_reader(&path, busy, memory, false).unwrap().conn;
    let t = open_txn(&path, busy, memory, false).unwrap().conn;
    for c in [&w, &r, &t] {
        let cache: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        let mmap: i64 = c.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!((cache, mmap), (-8 * 1024, 64 << 20));
    }
    drop((w, r, t));
    let _ = std::fs::remove_dir_all(&dir);
}
