#!/usr/bin/env bash
# Builds (once) and starts the tokio + hyper peer on 127.0.0.1:PORT; prints its PID.
# usage: start-hyper-docs.sh PORT [CPU]   (env HYPER_DOCS_TARGET: its cargo target dir)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=$1 cpu=${2:-}
target=${HYPER_DOCS_TARGET:-${TMPDIR:-/tmp}/netmod-peer-hyper-target}
cargo build -q --release --manifest-path "$here/hyper-docs/Cargo.toml" --target-dir "$target" >&2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
${cpu:+taskset -c "$cpu"} "$target/release/hyper-docs" "$port" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
echo "$pid"
