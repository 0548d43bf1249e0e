#!/usr/bin/env bash
# The cost of synchronous replication (issue 28): durable single-row INSERTs through db-server
# and straight to PostgreSQL with pgbench, on a primary with a streaming hot standby, with the
# standby asynchronous and synchronous (`synchronous_standby_names = '*'`: a commit waits for
# the standby), rounds alternating async, sync so that machine noise falls on both alike.
# PostgreSQL (both nodes) and db-server on core 0, loadgen / pgbench on core 1; 50 connections,
# pipeline 1 and 16. Prints the raw lines, then medians per setting and sync's ratio to async.
# usage: benches/sync_replication.sh   (env: SECS=5 RUNS=3 CONNS=50 PORT=56532)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-5} runs=${RUNS:-3} conns=${CONNS:-50} pgport=${PORT:-56532}
cargo build --release -q --bin db-server --bin loadgen
bin=$PWD/target/release
work=$(mktemp -d /tmp/netmod-sync.XXXXXX)
chmod 755 "$work"
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  .ci/pg-cluster stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
. benches/common.sh

eval "$(taskset -c 0 .ci/pg-cluster start "$work/pg" "$pgport")"
url=$DATABASE_URL admin=$DATABASE_ADMIN_URL
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
setting() { # async | sync
  local names=''
  [ "$1" = sync ] && names='*'
  "$pgbin/psql" -qAtX "$admin" -c "ALTER SYSTEM SET synchronous_standby_names = '$names'" \
    -c "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
}
"$pgbin/psql" -qAtX "$url" -c "CREATE TABLE IF NOT EXISTS sync_kv (id BIGSERIAL PRIMARY KEY, v TEXT)"
printf "INSERT INTO sync_kv (v) VALUES ('pgbench');\n" >"$work/write.sql"

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), secs=$secs conns=$conns, PostgreSQL $("$pgbin/psql" -qAtX "$url" -c 'SHOW server_version')"
port=$(free_port)
taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$port" --postgres "$url" --workers 2 >/dev/null 2>&1 &
pid=$!
wait_port "$port"
for round in $(seq "$runs"); do
  for repl in async sync; do
    setting "$repl"
    for depth in 1 16; do
      out=$(taskset -c 1 "$bin/loadgen" db --addr "127.0.0.1:$port" --mode write --rows 1000 \
        --conns "$conns" --pipeline "$depth" --duration "$secs")
      echo "round=$round replication=$repl client=db-server pipeline=$depth $(echo "$out" | tail -1)"
    done
    out=$(taskset -c 1 "$pgbin/pgbench" -n -M prepared -c "$conns" -j 1 -T "$secs" \
      -f "$work/write.sql" "$url" 2>&1)
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "round=$round replication=$repl client=pgbench pipeline=1 rps=$tps latency_avg_ms=$lat"
  done
done | tee "$work/raw"
setting async

python3 - "$work/raw" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    rows.setdefault((f["client"], f["pipeline"], f["replication"]), []).append(f)
med = lambda rs, k: st.median(float(r[k]) for r in rs if k in r)
for client, depth in sorted({(c, d) for c, d, _ in rows}):
    a, s = rows[(client, depth, "async")], rows[(client, depth, "sync")]
    line = f"median client={client} pipeline={depth} rps async={med(a, 'rps'):.0f} sync={med(s, 'rps'):.0f} ratio={med(s, 'rps') / med(a, 'rps'):.2f}"
    if "p99_us" in a[0]:
        line += f" p99_us async={med(a, 'p99_us'):.0f} sync={med(s, 'p99_us'):.0f}"
    else:
        line += f" latency_avg_ms async={med(a, 'latency_avg_ms'):.2f} sync={med(s, 'latency_avg_ms'):.2f}"
    print(line)
PY
