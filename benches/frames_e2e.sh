#!/usr/bin/env bash
# Authenticated frame-protocol document reads end to end: loadgen (core 1) → test-server → db-server
# on SQLite (both servers 1 loop thread, on core 0), 50 connections at pipeline 1 and 16, plus a
# moderate load (8 connections, pipeline 1) for latency; then 10,000 authenticated clients held
# open with pings flowing (every 5 s, first one 1–59 s after connecting), test-server RSS sampled.
# Raw lines on stdout; see docs/BENCHMARKS.md.
# usage: benches/frames_e2e.sh   (env: SECS=10 RUNS=3 HOLD=10000 HOLD_SECS=65)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} hold=${HOLD:-10000} hold_secs=${HOLD_SECS:-65}
cargo build --release -q --bin test-server --bin db-server --bin loadgen
bin=target/release
ulimit -n "$(ulimit -Hn)"
export NETMOD_SECRET=bench-secret RUST_LOG=warn

. benches/common.sh
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_stack() { start_sqlite_stack "$bin" frames "$@"; } # extra test-server flags…
stop_stack() { kill "$ts" "$db"; wait "$ts" "$db" 2>/dev/null || true; }

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), secs=$secs"
for round in $(seq "$runs"); do
  start_stack
  for shape in "50 1" "50 16" "8 1"; do
    read -r conns depth <<<"$shape"
    t0=$(ticks "$ts" "$db")
    out=$(taskset -c 1 "$bin/loadgen" frames --op get --addr "127.0.0.1:$port" --conns "$conns" \
      --pipeline "$depth" --duration "$secs" --docs 1000)
    t1=$(ticks "$ts" "$db")
    n=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
    us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    echo "round=$round frames_get conns=$conns pipeline=$depth $(echo "$out" | tail -1) servers_cpu_us_per_req=$us"
  done
  stop_stack
done

start_stack --ping-interval 5 --ping-timeout 15
base=$(rss_kb "$ts")
taskset -c 1 "$bin/loadgen" frames --op ping --hold --addr "127.0.0.1:$port" --conns "$hold" \
  --duration "$hold_secs" >"$work/hold.out" 2>&1 &
lg=$!
pids+=("$lg")
sleep $((hold_secs - 5))
rss=$(rss_kb "$ts")
metrics=$(curl -s "http://127.0.0.1:$http/metrics")
active=$(echo "$metrics" | awk '/^netmod_connections_active / {print $2}')
pings=$(echo "$metrics" | awk '/^netmod_ping_rtt_seconds_count / {print $2}')
wait "$lg" || true
echo "hold clients=$hold test_server_rss_kb=$rss rss_before_kb=$base per_client_bytes=$(((rss - base) * 1024 / hold)) connections_active=$active pings_answered=$pings $(grep '^held=' "$work/hold.out")"
stop_stack
