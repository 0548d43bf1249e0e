#!/usr/bin/env bash
# A/B of db-server on SQLite, a fresh database (loadgen's 10,000 seeded rows) for each binary and
# round: the db-server binary OLD (e.g. a build of an earlier commit) against this tree's, and
# this tree's with SQLite's own memory settings. Point reads at pipeline 1 and 16 and durable
# single-row writes at pipeline 1 by default (RUNS="read:1 write:1" to choose). db-server on
# core 0, loadgen on core 1, 3 rounds of 5 s.
# usage: benches/db_ab.sh OLD_DB_SERVER   (then benches/server-medians.sh LOG before)
#        env ROUNDS=3, SERVERS="before after after_sqlite_defaults" to choose
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
runs=${RUNS:-read:1 read:16 write:1}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
for round in $(seq "${ROUNDS:-3}"); do
  for who in ${SERVERS:-before after after_sqlite_defaults}; do
    case $who in
      before) b=$1; extra=() ;;
      after) b=target/release/db-server; extra=() ;;
      after_sqlite_defaults) b=target/release/db-server; extra=(--sqlite-cache-mb 2 --sqlite-mmap-mb 0) ;;
    esac
    rm -f "$w"/ab.db*
    port=$(free_port)
    taskset -c 0 "$b" --listen "127.0.0.1:$port" --sqlite "$w/ab.db" --workers 2 "${extra[@]}" >/dev/null 2>&1 &
    pid=$!
    wait_port "$port"
    for run in $runs; do
      mode=${run%:*} depth=${run#*:}
      line=$(loadgen_cpu "$pid" target/release/loadgen db --addr "127.0.0.1:$port" --mode "$mode" \
        --conns 50 --pipeline "$depth" --duration 5)
      echo "round=$round server=$who conns=${mode}_p$depth $line"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
