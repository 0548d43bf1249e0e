#!/usr/bin/env bash
# db-server on SQLite (loop + reader threads + writer, all on core 0) driven by `loadgen db`
# (core 1): point reads and single-row durable inserts, 50 connections, pipeline 1 and 16.
# Each round uses a fresh database file. Raw lines on stdout; see docs/BENCHMARKS.md.
# usage: benches/db_sqlite.sh   (env: SECS=10 RUNS=3 CONNS=50 DIR=/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} conns=${CONNS:-50}
cargo build --release -q --bin db-server --bin loadgen
bin=$PWD/target/release
hz=$(getconf CLK_TCK)
work=$(mktemp -d "${DIR:-/tmp}/netmod-dbbench.XXXXXX")
trap 'pkill -f "db-server --listen 127.0.0.1:$port" 2>/dev/null; rm -rf "$work"' EXIT

. benches/common.sh
cpu_ticks() { # the process and all its threads
  awk '{print $14 + $15}' "/proc/$1/stat"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, secs=$secs conns=$conns, db on $(df -P "$work" | awk 'NR==2 {print $1}')"
for round in $(seq "$runs"); do
  rm -f "$work"/bench.db*
  port=$(free_port)
  taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$port" --sqlite "$work/bench.db" --workers 2 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  for mode in read write; do
    for depth in 1 16; do
      t0=$(cpu_ticks "$pid")
      out=$(taskset -c 1 "$bin/loadgen" db --addr "127.0.0.1:$port" --mode "$mode" --rows 100000 \
              --conns "$conns" --pipeline "$depth" --duration "$secs")
      t1=$(cpu_ticks "$pid")
      reqs=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
      us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
      echo "round=$round sqlite_${mode}_p$depth $(echo "$out" | tail -1) server_cpu_us_per_req=$us"
    done
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
