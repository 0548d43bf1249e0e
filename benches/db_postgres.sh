#!/usr/bin/env bash
# db-server on PostgreSQL against pgbench going direct to the same PostgreSQL, in one run.
# PostgreSQL and db-server (loop + workers) on core 0, loadgen / pgbench on core 1; 50
# connections. Reads: point SELECT by primary key; writes: single-row INSERT (durable:
# synchronous_commit=on, fsync=on). pgbench runs the same statements on the same table
# (-M prepared), plus the built-in select-only script (-S). Raw lines on stdout; see
# docs/BENCHMARKS.md.
# usage: benches/db_postgres.sh   (env: SECS=10 RUNS=3 CONNS=50 PORT=56432)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} conns=${CONNS:-50} pgport=${PORT:-56432}
cargo build --release -q --bin db-server --bin loadgen
bin=$PWD/target/release
hz=$(getconf CLK_TCK)
work=$(mktemp -d /tmp/netmod-pgbench.XXXXXX)
chmod 755 "$work"
port=
cleanup() {
  [ -n "$port" ] && pkill -f "db-server --listen 127.0.0.1:$port" 2>/dev/null
  .ci/pg-cluster stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

. benches/common.sh
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The primary only, pinned to core 0 (its backends inherit the affinity).
eval "$(PG_STANDBY=0 taskset -c 0 .ci/pg-cluster start "$work/pg" "$pgport")"
url=$DATABASE_URL
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
psql() { "$pgbin/psql" -qAtX "$url" "$@"; }
pgbench() { taskset -c 1 "$pgbin/pgbench" -n -M prepared -c "$conns" -j 1 -T "$secs" "$@" "$url" 2>&1; }
printf '\\set id random(1, 100000)\nSELECT v FROM loadgen_kv WHERE id = :id;\n' >"$work/read.sql"
printf "INSERT INTO loadgen_kv (v) VALUES ('pgbench');\n" >"$work/write.sql"
# Pipeline 16, the peer of loadgen --pipeline 16: 16 statements per round trip (one implicit
# transaction, so the inserts share a commit, as db-server's group commit does).
for mode in read write; do
  { echo '\startpipeline'; for _ in $(seq 16); do cat "$work/$mode.sql"; done; echo '\endpipeline'; } >"$work/${mode}16.sql"
done
"$pgbin/pgbench" -i -q -s 10 "$url" >/dev/null 2>&1

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, secs=$secs conns=$conns, $(psql -c 'SHOW server_version') fsync=$(psql -c 'SHOW fsync') synchronous_commit=$(psql -c 'SHOW synchronous_commit')"
for round in $(seq "$runs"); do
  port=$(free_port)
  taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$port" --postgres "$url" --workers 2 >/dev/null 2>&1 &
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
      echo "round=$round dbserver_pg_${mode}_p$depth $(echo "$out" | tail -1) dbserver_cpu_us_per_req=$us"
    done
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  port=
  for mode in read write; do
    out=$(pgbench -f "$work/$mode.sql")
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "round=$round pgbench_${mode}_p1 statements_per_s=$tps latency_avg_ms=$lat"
    out=$(pgbench -f "$work/${mode}16.sql")
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "round=$round pgbench_${mode}_p16 statements_per_s=$(awk -v t="$tps" 'BEGIN { printf "%.1f", t * 16 }')"
  done
  out=$(pgbench -S)
  echo "round=$round pgbench_builtin_S tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')"
done
