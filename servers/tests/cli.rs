//! The command line of every binary of the package this file is compiled into: `--help` and
//! `-V` answer on stdout with exit status 0, and a flag that does not exist is an error (exit
//! status 2) that names it.
//!
//! One file, the `cli` test of each program crate (see their Cargo.toml). Being an integration
//! test, it also makes `cargo test --workspace` build the crate's binaries before any test runs,
//! so the workspace tests in `tests/` never wait on a build.

use std::process::Command;

/// Every binary of the workspace; this package's are the ones Cargo tells the path of.
const BINARIES: [(&str, Option<&str>); 6] = [
    ("client", option_env!("CARGO_BIN_EXE_client")),
    ("db-server", option_env!("CARGO_BIN_EXE_db-server")),
    ("loadgen", option_env!("CARGO_BIN_EXE_loadgen")),
    ("proxy", option_env!("CARGO_BIN_EXE_proxy")),
    ("stack", option_env!("CARGO_BIN_EXE_stack")),
    ("test-server", option_env!("CARGO_BIN_EXE_test-server")),
];

fn binaries() -> Vec<(&'static str, &'static str)> {
    let found: Vec<_> = BINARIES
        .iter()
        .filter_map(|&(name, path)| path.map(|p| (name, p)))
        .collect();
    assert!(!found.is_empty(), "this package has no binary");
    found
}

#[test]
fn help_and_version_answer_on_stdout_and_unknown_flags_are_named() {
    for (name, path) in binaries() {
        let help = Command::new(path)
            .arg("--help")
            .output()
            .expect("run --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {:?}", help.status);
        assert!(
            text.contains(&format!("Usage: {name}")),
            "{name} --help: {text}"
        );

        let version = Command::new(path).arg("-V").output().expect("run -V");
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(version.status.success(), "{name} -V");
        assert!(
            text.starts_with(&format!("{name} {} (", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );

        let wrong = Command::new(path)
            .arg("--no-such-flag")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert_eq!(wrong.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("--no-such-flag"), "{name}: {err}");
    }
}
