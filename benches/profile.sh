#!/usr/bin/env bash
# Where test-server's CPU goes on its two hottest paths, for issue 27's user-CPU goals: `perf
# record` (software clock, call graphs) of test-server --threads 1 on core 0 while the load
# runs on core 1 — the HTTP front's GET of a cached document (wrk -t1 -c64) and the frame
# Ping (loadgen ping, 50 connections, pipeline 1). Prints perf's flat profile per path: the
# share of samples in the kernel and in user space, the ten largest symbols, and the user-space
# symbols over 1 %.
# usage: benches/profile.sh   (env: SECS=5; needs perf (Debian's linux-perf), wrk, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-5}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)"; exit 1; }
cargo build --release -q --bin test-server --bin db-server --bin loadgen
bin=target/release
export NETMOD_SECRET=bench-secret RUST_LOG=warn
. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

dbp=$(free_port) port=$(free_port) http=$(free_port)
taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/p.db" --threads 1 \
  >"$work/db.log" 2>&1 &
pids+=($!)
wait_port "$dbp"
NETMOD_ADMIN_SECRET=$NETMOD_SECRET taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$http" --db "127.0.0.1:$dbp" --threads 1 --argon2-memory-kib 64 \
  --insecure-http-writes >"$work/ts.log" 2>&1 &
ts=$!
pids+=("$ts")
wait_port "$port"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.05; done
curl -sf -X PUT -d '{"content":"Hello from netmod: this document lives in db-server."}' \
  "http://127.0.0.1:$http/docs/example" >/dev/null

profile() { # name, then the load command
  local name=$1; shift
  perf record -q -e cpu-clock -g -p "$ts" -o "$work/$name.data" -- sleep "$secs" 2>/dev/null &
  local rec=$!
  taskset -c 1 "$@" >/dev/null 2>&1 || true
  wait "$rec" || true
  echo "== $name: kernel / user share of test-server's samples"
  perf report -q -i "$work/$name.data" --no-children -g none --sort dso --stdio 2>/dev/null |
    awk '$1 ~ /%/ { s = $1; sub("%", "", s); if ($2 ~ /kernel/) k += s; else u += s }
         END { printf "kernel %.1f%%  user %.1f%%\n", k, u }' || true
  echo "== $name: the ten largest symbols, kernel and user"
  perf report -q -i "$work/$name.data" --no-children -g none --sort symbol --stdio 2>/dev/null |
    grep '%' | head -10 | sed 's/ *- *- *$//' || true
  echo "== $name: user-space symbols over 1 % of all samples"
  perf report -q -i "$work/$name.data" --no-children -g none --sort symbol --stdio --percent-limit 1 \
    2>/dev/null | grep -v '\[k\]' | grep '%' | head -25 | sed 's/ *- *- *$//' || true
}

profile front-get wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$http/docs/example"
profile ping "$bin/loadgen" ping --addr "127.0.0.1:$port" --conns 50 --pipeline 1 --duration "$secs"
