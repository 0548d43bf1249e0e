#!/usr/bin/env bash
# The engine's tests (its unit tests and engine/tests/, and the integration tests that drive it:
# tests/tls.rs, tests/frames.rs) and five server suites (db, test_server_db, http_front, proxy,
# processes; their child processes are built with it too) under LeakSanitizer. Any leak fails the test process (exit 23)
# with the allocation's stack. Needs a nightly toolchain (installed if missing); builds into its
# own target directory (a few minutes the first time).
# usage: benches/lsan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
target=$(rustc -vV | awk '/^host:/ {print $2}')
export RUSTFLAGS="-Zsanitizer=leak" CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/lsan}
cargo +nightly test -q --target "$target" -p netmod-engine --lib --tests 2>&1 | grep -E "test result|LeakSanitizer|SUMMARY"
cargo +nightly test -q --target "$target" --test tls --test frames \
  --test db --test test_server_db --test http_front --test proxy --test processes 2>&1 |
  grep -E "test result|LeakSanitizer|SUMMARY"
