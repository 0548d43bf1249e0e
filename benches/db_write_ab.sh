#!/usr/bin/env bash
# A/B of durable single-row writes at pipeline 1, a fresh database each run: the db-server binary
# OLD (e.g. a build of an earlier commit) against this tree's, and this tree's with SQLite's own memory
# settings. db-server on core 0, loadgen on core 1, 3 rounds of 5 s.
# usage: benches/db_write_ab.sh OLD_DB_SERVER   (then benches/server-medians.sh LOG before)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
w=$(mktemp -d)
for round in 1 2 3; do
  for who in before after after_sqlite_defaults; do
    case $who in
      before) b=$1; extra=() ;;
      after) b=target/release/db-server; extra=() ;;
      after_sqlite_defaults) b=target/release/db-server; extra=(--sqlite-cache-mb 2 --sqlite-mmap-mb 0) ;;
    esac
    rm -f $w/ab.db*
    port=$(free_port)
    taskset -c 0 $b --listen 127.0.0.1:$port --sqlite $w/ab.db --workers 2 "${extra[@]}" >/dev/null 2>&1 &
    pid=$!
    wait_port $port
    line=$(loadgen_cpu "$pid" target/release/loadgen db --addr "127.0.0.1:$port" --mode write \
      --conns 50 --pipeline 1 --duration 5)
    echo "round=$round server=$who conns=write_p1 $line"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
rm -rf $w
