//! The architecture's arrows, checked on what Cargo resolves (`cargo tree`), so that breaking
//! one fails the suite rather than waiting for a reviewer: the proxy and test-server link no
//! database client, the engine knows no protocol and the protocol no engine, only the engine
//! touches mio, and each crate
//! depends only on the crates its header allows.

use std::collections::BTreeSet;
use std::process::Command;

/// The packages in `package`'s normal (linked) dependency tree, `package` itself included.
fn tree(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--quiet", "--edges", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "--package", package])
        .args(extra)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The packages `package` names itself in `[dependencies]`.
fn direct(package: &str) -> BTreeSet<String> {
    let mut deps = tree(package, &["--depth", "1"]);
    deps.remove(package);
    deps
}

fn assert_none(package: &str, deps: &BTreeSet<String>, banned: &[&str], why: &str) {
    let found: Vec<&&str> = banned.iter().filter(|b| deps.contains(**b)).collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} ({why}); its tree: {deps:?}"
    );
}

const DATABASE_CLIENTS: [&str; 4] = ["rusqlite", "libsqlite3-sys", "pq-sys", "pq-src"];

#[test]
fn the_proxy_and_test_server_link_no_database_client() {
    for package in ["netmod-proxy", "netmod-test-server", "netmod-tools"] {
        let deps = tree(package, &[]);
        assert_none(
            package,
            &deps,
            &DATABASE_CLIENTS,
            "only db-server talks to a database",
        );
        assert!(
            deps.contains("netmod-engine"),
            "{package} runs on the engine"
        );
    }
}

#[test]
fn the_engine_knows_no_protocol_and_no_program() {
    let deps = tree("netmod-engine", &[]);
    assert_none(
        "netmod-engine",
        &deps,
        &[
            "prost",
            "httparse",
            "rusqlite",
            "serde_json",
            "netmod-protocol",
            "netmod-shared",
            "netmod-db",
            "netmod-test-server",
            "netmod-proxy",
            "netmod-tools",
        ],
        "the engine is a reactor other people link; protocols live above it",
    );
    let lean = tree("netmod-engine", &["--no-default-features"]);
    assert_none(
        "netmod-engine without default features",
        &lean,
        &["rustls", "ring"],
        "TLS is the optional `tls` feature",
    );
    assert!(deps.contains("rustls"), "the default build has TLS");
}

#[test]
fn the_protocol_crate_is_a_codec_without_an_event_loop() {
    // The blocking client and any tokio program link the protocol alone.
    assert_none(
        "netmod-protocol",
        &tree("netmod-protocol", &[]),
        &["netmod-engine", "mio", "slab", "netmod-shared"],
        "the protocol is a codec; its engine glue is shared::wire",
    );
    // shared links it only for the programs that speak frames (feature `frames`).
    assert_none(
        "netmod-shared",
        &tree("netmod-shared", &[]),
        &["netmod-protocol"],
        "the proxy uses shared and balances frames as bytes",
    );
}

#[test]
fn only_the_engine_touches_mio() {
    for package in [
        "netmod-protocol",
        "netmod-shared",
        "netmod-db",
        "netmod-test-server",
        "netmod-proxy",
        "netmod-tools",
    ] {
        assert_none(
            package,
            &direct(package),
            &["mio"],
            "servers see the engine's API, not its event loop",
        );
    }
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    let rules: [(&str, &[&str]); 6] = [
        (
            "netmod-protocol",
            &[
                "netmod-shared",
                "netmod-db",
                "netmod-test-server",
                "netmod-proxy",
                "netmod-tools",
            ],
        ),
        (
            "netmod-shared",
            &[
                "netmod-protocol",
                "netmod-db",
                "netmod-test-server",
                "netmod-proxy",
                "netmod-tools",
            ],
        ),
        (
            "netmod-db",
            &["netmod-test-server", "netmod-proxy", "netmod-tools"],
        ),
        (
            "netmod-test-server",
            &["netmod-db", "netmod-proxy", "netmod-tools"],
        ),
        // The TCP mode balances frames as bytes: the proxy needs no protocol crate.
        (
            "netmod-proxy",
            &[
                "netmod-protocol",
                "netmod-db",
                "netmod-test-server",
                "netmod-tools",
            ],
        ),
        (
            "netmod-tools",
            &["netmod-db", "netmod-test-server", "netmod-proxy"],
        ),
    ];
    for (package, banned) in rules {
        assert_none(
            package,
            &tree(package, &[]),
            banned,
            "see the crate's header and docs/architecture.md",
        );
    }
}

/// A clone reproduces every benchmark: no script under `benches/` reaches outside the
/// repository (the peers it compares with are started by `benches/peers/`).
#[test]
fn bench_scripts_need_nothing_outside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("benches")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_some_and(|e| e == "sh") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains("../shared") && !text.contains("steering/"),
                    "{} reads outside the repository",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} scripts found");
}

/// Small modules stay readable: no source file of a server is over 600 lines (a file that
/// grows past it is split by concept, as `libpq/pipeline.rs` or `http_front/route.rs` were).
#[test]
fn no_server_source_file_is_over_600_lines() {
    fn walk(dir: &std::path::Path, out: &mut Vec<(usize, String)>) {
        for entry in std::fs::read_dir(dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a readable file");
                out.push((text.lines().count(), path.display().to_string()));
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("servers"),
        &mut files,
    );
    let long: Vec<_> = files.iter().filter(|(n, _)| *n > 600).collect();
    assert!(files.len() > 50, "found the servers' sources");
    assert!(long.is_empty(), "files over 600 lines: {long:?}");
}
