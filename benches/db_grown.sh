#!/usr/bin/env bash
# db-server point reads on a SQLite table grown by writes past SQLite's default page cache
# (issue 14): `loadgen db --mode write` until the table holds at least ROWS rows, then rounds of
# point reads at pipeline 1 and 16 (and durable single-row writes at pipeline 1), alternating the
# default configuration (`default`) with SQLite's own memory settings (`sqlite_defaults`:
# --sqlite-cache-mb 2 --sqlite-mmap-mb 0). db-server on core 0, loadgen on core 1.
# Raw lines on stdout; see docs/BENCHMARKS.md.
# usage: benches/db_grown.sh   (env: SECS=5 RUNS=3 CONNS=50 ROWS=1000000 DIR=/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-5} runs=${RUNS:-3} conns=${CONNS:-50} rows=${ROWS:-1000000}
cargo build --release -q --bin db-server --bin loadgen
bin=$PWD/target/release
work=$(mktemp -d "${DIR:-/tmp}/netmod-dbgrown.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
. benches/common.sh
start() { # extra db-server flags...
  port=$(free_port)
  taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$port" --sqlite "$work/grown.db" --workers 2 \
    "$@" >/dev/null 2>&1 &
  pid=$!
  wait_port "$port"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, secs=$secs conns=$conns"
start
# The table starts with loadgen's 10,000 seeded rows (ids 1..10000); each acknowledged insert
# adds the next id, so the ids stay 1..n and reads over --rows n reach every row.
n=10000
while [ "$n" -lt "$rows" ]; do
  out=$(taskset -c 1 "$bin/loadgen" db --addr "127.0.0.1:$port" --mode write --conns "$conns" \
    --pipeline 16 --duration 5)
  reqs=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
  errs=$(echo "$out" | tail -1 | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  n=$((n + reqs - errs))
done
echo "grown rows=$n file_mb=$(du -m "$work/grown.db" | cut -f1) wal_mb=$(du -m "$work/grown.db-wal" 2>/dev/null | cut -f1)"
stop
for round in $(seq "$runs"); do
  for cfg in default sqlite_defaults; do
    if [ "$cfg" = default ]; then start; else start --sqlite-cache-mb 2 --sqlite-mmap-mb 0; fi
    for run in read:1 read:16 write:1; do
      mode=${run%:*} depth=${run#*:}
      line=$(loadgen_cpu "$pid" "$bin/loadgen" db --addr "127.0.0.1:$port" --mode "$mode" \
        --rows "$n" --conns "$conns" --pipeline "$depth" --duration "$secs")
      echo "round=$round server=$cfg conns=${mode}_p$depth $line"
    done
    stop
  done
done
