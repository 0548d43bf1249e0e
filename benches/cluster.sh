#!/usr/bin/env bash
# Several hosts on one machine: each component in its own network namespace with its own
# address on a private bridge, and network partitions made by taking a host's link down
# (packets vanish: no RST, no FIN, exactly what a dead switch port does). Needs root.
#
#   client 10.77.0.2 ──┐
#   proxy  10.77.0.10 ─┤
#   app1   10.77.0.11 ─┤
#   app2   10.77.0.12 ─┤ bridge (in namespace nm-net)
#   app3   10.77.0.13 ─┤
#   db     10.77.0.20 ─┤
#   pg1    10.77.0.30 ─┤ PostgreSQL primary
#   pg2    10.77.0.31 ─┘ PostgreSQL hot standby (pg_basebackup -R, streaming)
#
# The real binaries run in them: the proxy in front of three test-servers, which use one
# db-server on PostgreSQL (writes on pg1, reads on pg2). Load comes from the client namespace
# (the project's loadgen, client, and a writer that records every acknowledged write).
# Scenarios (each prints one line `scenario=… requests=… failed=… acked_writes=…
# acked_missing=… recovery_s=…`; the script fails on a request failed outside a cut or an
# acknowledged write missing):
#   app_partition      app1 cut off for CUT seconds under HTTP load through the proxy, healed
#   flapping           the link to app2 down/up every 2 s for FLAP seconds under load
#   db_partition       db-server cut off from every app host for CUT seconds while a writer PUTs
#                      documents and loadgen reads a cached one, both on app1 directly, and a
#                      second loadgen reads it through the proxy: cached reads keep answering
#                      (stale) both ways, writes fail fast (503)
#   standby_lag        the standby's replay paused for LAG seconds while a checker writes and
#                      reads its writes back with AFTER_INDEX: never stale
#   standby_partition  pg2 cut off for CUT seconds: plain reads (loadgen db) go to the primary,
#                      AFTER_INDEX reads are never stale
#   primary_partition  pg1 cut off for CUT seconds: writes fail fast (503), reads keep going to
#                      the standby, writes resume after healing, nothing acknowledged is lost
#   promotion          the documented switchover (docs/operations.md): db-server stopped, pg1
#                      stopped cleanly, pg2 promoted once it has replayed everything, db-server
#                      started on pg2; every write acknowledged in the whole run is on pg2
# Then benches/failover.sh (its own hosts, pg_auto_failover): primary_crash, rejoin,
# primary_partition_auto, monitor_partition (--short: the first three).
#
# The programs run with the sample deployment files (deploy/config/: flags and configuration
# of this 10.77.0.0/24 layout), so those are exercised, not only shipped.
# Everything (namespaces, processes, data) is removed on exit, on error and on Ctrl-C.
# usage: sudo benches/cluster.sh [--short]     (env CUT=20 FLAP=30 LAG=10 CONNS=30)
# PostgreSQL comes from Debian's package (installed if missing); its servers run as the
# `postgres` user on data directories made here.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "cluster.sh needs root (network namespaces)"; exit 2; }
short=
[ "${1:-}" = --short ] && short=1
cut=${CUT:-$([ -n "$short" ] && echo 6 || echo 20)}
flap=${FLAP:-$([ -n "$short" ] && echo 8 || echo 30)}
lag=${LAG:-10}
conns=${CONNS:-30}
cargo build --release -q --bin db-server --bin test-server --bin proxy --bin loadgen --bin client
bin=$PWD/target/release
pgbin=$(bash .ci/pg-cluster install)
work=$(mktemp -d /tmp/netmod-cluster.XXXXXX)
# The postgres user keeps its data directories and logs in here (root writes anywhere).
chown postgres: "$work" && chmod 755 "$work"
net=nm-net
hosts=(client proxy app1 app2 app3 db pg1 pg2)
declare -A ip=([client]=10.77.0.2 [proxy]=10.77.0.10 [app1]=10.77.0.11 [app2]=10.77.0.12
  [app3]=10.77.0.13 [db]=10.77.0.20 [pg1]=10.77.0.30 [pg2]=10.77.0.31)
pids=()
ns=nm-
. benches/netns.sh

pg_stop() { # HOST [MODE]
  [ -e "$work/$1/postmaster.pid" ] || return 0
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/$1" -m "${2:-immediate}" -w stop >/dev/null 2>&1 || true
}
teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; then
    for f in "$work"/*.log; do
      [ -s "$f" ] && { echo "--- the end of $(basename "$f")"; tail -n 15 "$f"; }
    done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pg_stop pg2
  pg_stop pg1
  remove_net
  rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP
remove_net # what a run killed with -9 left behind
make_net

# A backend's state in the proxy's /status (from the client namespace).
state_of() { # APP
  ip netns exec nm-client curl -s -m 2 "http://${ip[proxy]}:8081/status" | python3 -c '
import json, sys
want = sys.argv[1]
for b in json.load(sys.stdin)["backends"]:
    if b["address"] == want:
        print(b["state"])' "${ip[$1]}:8000" 2>/dev/null || echo "?"
}
until_state() { seconds_until "$3" "$2" state_of "$1"; } # APP STATE LIMIT_S (in the proxy)
# Sleeps out the rest of a $cut-second cut that was noticed after DETECT seconds ("never": 0).
rest_of_cut() {
  sleep "$(python3 -c "import sys; d = sys.argv[1]; print(max(0.0, $cut - (float(d) if d != 'never' else $cut)))" "$1")"
}

# PostgreSQL: the primary on pg1, a hot standby cloned from it on pg2 (streaming replication).
# Clients from the private /24 are trusted here; a real deployment uses scram-sha-256.
pg_start() { # HOST
  ip netns exec "nm-$1" runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/$1" -l "$work/$1.log" \
    -w -t 60 start >/dev/null
}
psql_on() { # HOST DB SQL: runs SQL there as postgres (from the host itself), prints the values;
  # unqualified names: the clients' schema, then the servers' (db-server's), then public
  ip netns exec "nm-$1" runuser -u postgres -- env PGOPTIONS="-c search_path=netmod_client,netmod,public" \
    "$pgbin/psql" -h "${ip[$1]}" -U postgres -d "$2" -AtqX -v ON_ERROR_STOP=1 -c "$3"
}
pg_conf() { # HOST: where it listens (its address; the Unix socket in its data directory)
  cat >>"$work/$1/postgresql.conf" <<EOF
listen_addresses = '${ip[$1]}'
port = 5432
unix_socket_directories = '$work/$1'
EOF
}
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg1" -U postgres --auth=trust -E UTF8 \
  --locale=C.UTF-8 >/dev/null
pg_conf pg1
cat >>"$work/pg1/postgresql.conf" <<EOF
wal_level = replica
max_wal_senders = 5
hot_standby = on
fsync = on
synchronous_commit = on
shared_buffers = 64MB
EOF
cat >>"$work/pg1/pg_hba.conf" <<EOF
host all all 10.77.0.0/24 trust
host replication all 10.77.0.0/24 trust
EOF
pg_start pg1
# The sample's database and roles, as docs/operations.md ("On PostgreSQL") has an operator make
# them: db-server's ordinary login owning its schema, the client login, no TEMP for PUBLIC.
psql_on pg1 postgres "CREATE ROLE netmod LOGIN" >/dev/null
psql_on pg1 postgres "CREATE ROLE netmod_client LOGIN" >/dev/null
psql_on pg1 postgres "CREATE DATABASE netmod OWNER netmod" >/dev/null
psql_on pg1 netmod "CREATE SCHEMA netmod AUTHORIZATION netmod" >/dev/null
psql_on pg1 netmod "REVOKE TEMP ON DATABASE netmod FROM PUBLIC" >/dev/null
ip netns exec nm-pg2 runuser -u postgres -- "$pgbin/pg_basebackup" -h "${ip[pg1]}" -U postgres \
  -D "$work/pg2" -R -X stream -c fast >>"$work/basebackup.log" 2>&1
rm -f "$work/pg2/.s.PGSQL.5432.lock" # pg1's socket lock, copied with the data
runuser -u postgres -- sed -i '/^listen_addresses\|^port\|^unix_socket_directories/d' "$work/pg2/postgresql.conf"
pg_conf pg2
pg_start pg2

# The programs start as the deploy/ files say (deploy/config/*.env: the flags, *.toml: the
# configuration), with the layout's addresses; only the database path moves into $work.
cfg=$PWD/deploy/config
env_file "$cfg/db-server.env"
env_file "$cfg/test-server.env"
env_file "$cfg/proxy.env"
# shellcheck disable=SC2086  # the *_ARGS are flag lists, split as systemd splits them
run_in db "$bin/db-server" --config "$cfg/db-server.toml" $DB_SERVER_ARGS
db_pid=$last_pid
wait_for "${ip[db]}" 7100
for a in app1 app2 app3; do
  # shellcheck disable=SC2086
  run_in "$a" "$bin/test-server" --config "$cfg/test-server.toml" $TEST_SERVER_ARGS
done
for a in app1 app2 app3; do wait_for "${ip[$a]}" 8000; done
# shellcheck disable=SC2086
run_in proxy "$bin/proxy" --config "$cfg/proxy.toml" $PROXY_ARGS
wait_for "${ip[proxy]}" 8080
# Writes need a token (the sample configuration does not allow unauthenticated ones).
admin_token "${ip[app1]}"
store_example "${ip[app1]}"
for a in app1 app2 app3; do
  for _ in $(seq 100); do [ "$(state_of $a)" = healthy ] && break; sleep 0.1; done
done

# Loads the proxy from the client namespace for $1 seconds; prints loadgen's last two lines.
load() {
  ip netns exec nm-client "$bin/loadgen" http --addr "${ip[proxy]}:8080" --path /docs/example \
    --conns "$conns" --duration "$1" 2>>"$work/loadgen.log" | tail -2
}

# Scenario: app1 cut off for $cut s, 3 s into the load, then healed.
total=$((cut + 12))
load "$total" >"$work/a.out" &
lp=$!
sleep 3
link app1 down
detect=$(until_state app1 unhealthy "$cut")
rest_of_cut "$detect"
link app1 up
recovery=$(until_state app1 healthy 30)
wait "$lp"
requests=$(field requests <"$work/a.out")
failed=$(tail -1 "$work/a.out" | field errors)
echo "scenario=app_partition requests=$requests failed=$failed acked_writes=0 acked_missing=0 detect_s=$detect recovery_s=$recovery in_flight_bound=$conns"
[ "$failed" -le "$conns" ] || { echo "more requests failed than were in flight at the cut"; exit 1; }

# Scenario: the link to app2 flaps (down/up every 2 s) for $flap s. The proxy's log says how
# often it changed its mind about app2 (rise/fall should keep that low, not once per flap).
marks() { grep -c "Server ${ip[app2]}:8000 marked as" "$work/proxy.log" || true; }
marks_before=$(marks)
load "$((flap + 6))" >"$work/f.out" &
lp=$!
sleep 2
downs=0
end=$((SECONDS + flap))
while [ $SECONDS -lt $end ]; do
  link app2 down; downs=$((downs + 1)); sleep 2
  link app2 up; sleep 2
done
wait "$lp"
requests=$(field requests <"$work/f.out")
failed=$(tail -1 "$work/f.out" | field errors)
changes=$(($(marks) - marks_before))
echo "scenario=flapping requests=$requests failed=$failed acked_writes=0 acked_missing=0 flaps=$downs health_changes=$changes in_flight_bound=$((conns * downs))"
# At worst the requests in flight on app2 at each cut fail; every other one must succeed.
[ "$failed" -le $((conns * downs)) ] || { echo "requests failed that were not on the flapping link"; exit 1; }
# Down, back, down again, then out until the flapping stops (each fall within a minute of a
# return doubles the passing checks it needs), back after: at most 4 changes, however long.
[ "$changes" -le 4 ] || { echo "the proxy's health state thrashed ($changes changes)"; exit 1; }

# The writers: every acknowledged write is recorded, and all of them must be on the primary.
touch "$work/acked-all"
# TAG: a scenario's writer ($work/TAG.w, cut at $t_cut, healed at $t_heal) and reads
# ($work/TAG.out, loadgen's last two lines) summed up into $summary, $missing (acknowledged
# writes absent on pg1), $reads and $read_failed.
tally() {
  summary=$(writes_summary "$work/$1.w" "$t_cut" "$t_heal")
  sed -n 's/^w [^ ]* [^ ]* 20[01] //p' "$work/$1.w" >"$work/$1.acked"
  missing=$(missing_on pg1 "$work/$1.acked")
  reads=$(field requests <"$work/$1.out")
  read_failed=$(tail -1 "$work/$1.out" | field errors)
}
check_writes() { # SUMMARY: fails the run on a write failed before the cut, or no recovery
  local outside
  outside=$(echo "$1" | field failed_outside)
  [ "$outside" -eq 0 ] || { echo "writes failed before the cut"; exit 1; }
  [[ $1 != *"recovery_s=never"* ]] || { echo "writes did not recover after healing"; exit 1; }
}

# Scenario: db-server cut off from every app host for $cut s, 3 s into a run of reads of a
# cached document and of writes on app1 directly, and of reads of the same document through
# the proxy (every app's /health fails while db-server is away: the proxy sends the reads to the
# apps that still answer their checks, which serve the document stale).
health_of() { # APP: the status code of its /health
  ip netns exec nm-client curl -s -m 2 -o /dev/null -w '%{http_code}' "http://${ip[$1]}:8000/health" || true
}
until_health() { seconds_until "$3" "$2" health_of "$1"; } # APP CODE LIMIT_S: its /health
total=$((cut + 15))
ip netns exec nm-client curl -s -m 5 "http://${ip[app1]}:8000/docs/example" >/dev/null # cached now
ip netns exec nm-client "$bin/loadgen" http --addr "${ip[app1]}:8000" --path /docs/example \
  --conns 10 --duration "$total" 2>>"$work/loadgen.log" | tail -2 >"$work/d.out" &
lp=$!
writer "$total" "${ip[app1]}" 30 db >"$work/d.w" &
wp=$!
load "$total" >"$work/d.proxy" &
pp=$!
sleep 3
t_cut=$(now)
link db down
detect=$(until_health app1 503 "$cut")
rest_of_cut "$detect"
link db up
t_heal=$(now)
recovery=$(until_health app1 200 60)
wait "$lp" "$wp" "$pp"
tally d
proxied=$(field requests <"$work/d.proxy")
proxied_failed=$(tail -1 "$work/d.proxy" | field errors)
# How often the proxy found no healthy app and sent the reads to those still answering.
panics=$(grep -c "no healthy backend: sending requests" "$work/proxy.log" || true)
echo "scenario=db_partition requests=$reads failed=$read_failed acked_missing=$missing health_detect_s=$detect health_recovery_s=$recovery $summary proxied=$proxied proxied_failed=$proxied_failed proxy_panics=$panics"
[ "$missing" -eq 0 ] || { echo "acknowledged writes are missing"; exit 1; }
[ "$read_failed" -eq 0 ] || { echo "reads of a cached document failed"; exit 1; }
[ "$proxied_failed" -eq 0 ] || { echo "reads of a cached document through the proxy failed"; exit 1; }
check_writes "$summary"

# The read-your-writes checker: through test-server (app1) with the client binary, it sets a
# row to 1, 2, 3, … and after each write reads the row twice: with --after-index (the write's
# commit index: must never be older than the write) and plainly (a replica, however far
# behind: counted, to show the standby did lag). Prints `requests=… failed=… stale=…
# plain_behind=… writes=… last_acked=…`.
checker() { # SECONDS
  ip netns exec nm-client env NETMOD_TOKEN="$token" python3 - "$1" "$bin/client" "${ip[app1]}:7000" <<'PY'
import subprocess, sys, time
secs, client, addr = float(sys.argv[1]), sys.argv[2], sys.argv[3]
def sql(*args):
    p = subprocess.run([client, "--addr", addr, "sql", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr
def value(out):
    lines = out.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1] else None
end = time.time() + secs
n = reads = failed = stale = behind = 0
last_acked, error = 0, ""
while time.time() < end:
    n += 1
    rc, out, err = sql("UPDATE lag_probe SET v = ?1 WHERE k = 1", str(n))
    index = next((l[len("(commit index "):-1] for l in err.splitlines()
                  if l.startswith("(commit index ")), None)
    if rc != 0 or index is None:
        error = error or err.strip()
        continue
    last_acked = n
    rc, out, err = sql("--after-index", index, "SELECT v FROM lag_probe WHERE k = 1")
    reads += 1
    if rc != 0:
        failed += 1
        error = error or err.strip()
    elif value(out) != n:
        stale += 1
    rc, out, err = sql("SELECT v FROM lag_probe WHERE k = 1")
    reads += 1
    if rc != 0:
        failed += 1
        error = error or err.strip()
    elif (value(out) or 0) < n:
        behind += 1
print(f"requests={reads} failed={failed} stale={stale} plain_behind={behind} writes={n} last_acked={last_acked}")
if error:
    print(f"checker: first error: {error}", file=sys.stderr)
PY
}
probe_value() { psql_on "$1" netmod "SELECT v FROM lag_probe WHERE k = 1"; } # HOST
db_reads() { # SECONDS: plain point reads on db-server (a replica's, while one answers); loadgen's last two lines
  ip netns exec nm-client "$bin/loadgen" db --addr "${ip[db]}:7100" --mode read --rows 1000 \
    --conns 10 --duration "$1" 2>>"$work/loadgen.log" | tail -2
}
ip netns exec nm-client env NETMOD_TOKEN="$token" "$bin/client" --addr "${ip[app1]}:7000" sql \
  "CREATE TABLE IF NOT EXISTS lag_probe (k INT PRIMARY KEY, v BIGINT NOT NULL)" >/dev/null 2>&1
ip netns exec nm-client env NETMOD_TOKEN="$token" "$bin/client" --addr "${ip[app1]}:7000" sql \
  "INSERT INTO lag_probe VALUES (1, 0) ON CONFLICT (k) DO NOTHING" >/dev/null 2>&1
check_probe() { # OUT: fails the run on a stale or failed read, or the last acknowledged value missing
  local last
  last=$(field last_acked <"$1")
  [ "$(field stale <"$1")" -eq 0 ] || { echo "an AFTER_INDEX read returned stale data"; exit 1; }
  [ "$(probe_value "$primary")" -ge "$last" ] || { echo "the acknowledged value is not on the primary"; exit 1; }
}
primary=pg1

# Scenario: the standby's replay paused for $lag s (it falls behind by that much).
checker $((lag + 6)) >"$work/l.out" 2>>"$work/checker.log" &
cp=$!
sleep 3
psql_on pg2 netmod "SELECT pg_wal_replay_pause()" >/dev/null
sleep "$lag"
behind=$(psql_on pg1 netmod "SELECT pg_current_wal_lsn() - replay_lsn FROM pg_stat_replication")
psql_on pg2 netmod "SELECT pg_wal_replay_resume()" >/dev/null
wait "$cp"
check_probe "$work/l.out"
echo "scenario=standby_lag $(cat "$work/l.out") acked_missing=0 paused_s=$lag behind_bytes=${behind:-?}"
[ "$(field failed <"$work/l.out")" -eq 0 ] || { echo "reads failed while the standby lagged"; exit 1; }
[ "$(field plain_behind <"$work/l.out")" -gt 0 ] || { echo "the standby never lagged: nothing was tested"; exit 1; }

# Scenario: the standby cut off for $cut s under plain reads (loadgen db on db-server) and the
# checker. detect_s: until db-server logs the replica failed; recovery_s: from the heal until
# db-server has a new connection on the standby.
replica_failures() { grep -c "Replica .* failed" "$work/db.log" || true; }
base=$(replica_failures)
new_failure() { [ "$(replica_failures)" -gt "$base" ] && echo yes || echo no; }
new_replica_conn() { # since epoch $t_heal
  psql_on pg2 postgres "SELECT count(*) > 0 FROM pg_stat_activity WHERE client_addr = '${ip[db]}' AND backend_start > to_timestamp($t_heal)" 2>/dev/null || echo f
}
total=$((cut + 10))
db_reads "$total" >"$work/s.out" &
lp=$!
checker "$total" >"$work/s.c" 2>>"$work/checker.log" &
cp=$!
sleep 3
link pg2 down
detect=$(seconds_until "$cut" yes new_failure)
rest_of_cut "$detect"
link pg2 up
t_heal=$(now)
recovery=$(seconds_until 30 t new_replica_conn)
wait "$lp" "$cp"
check_probe "$work/s.c"
reads=$(( $(field requests <"$work/s.out") + $(field requests <"$work/s.c") ))
failed=$(( $(tail -1 "$work/s.out" | field errors) + $(field failed <"$work/s.c") ))
echo "scenario=standby_partition requests=$reads failed=$failed stale=$(field stale <"$work/s.c") acked_writes=$(field last_acked <"$work/s.c") acked_missing=0 detect_s=$detect recovery_s=$recovery"
[ "$failed" -eq 0 ] || { echo "reads failed while the standby was cut off"; exit 1; }

# Scenario: the primary cut off from everything for $cut s under writes (app1) and plain reads
# (loadgen db: served by the standby meanwhile).
total=$((cut + 15))
db_reads "$total" >"$work/p.out" &
lp=$!
writer "$total" "${ip[app1]}" 30 pp >"$work/p.w" &
wp=$!
sleep 3
t_cut=$(now)
link pg1 down
sleep "$cut"
link pg1 up
t_heal=$(now)
wait "$lp" "$wp"
tally p
echo "scenario=primary_partition requests=$reads failed=$read_failed acked_missing=$missing $summary"
[ "$missing" -eq 0 ] || { echo "acknowledged writes are missing"; exit 1; }
[ "$read_failed" -eq 0 ] || { echo "plain reads failed while only the primary was cut off"; exit 1; }
check_writes "$summary"

# Scenario: promotion, as docs/operations.md tells an operator (a planned switchover): stop
# db-server, stop the primary cleanly (it sends the standby all its WAL first), wait until the
# standby has replayed the primary's last checkpoint, promote it, start db-server on it.
t0=$(now)
kill -TERM "$db_pid"
wait "$db_pid" || true
pg_stop pg1 fast
final=$(LC_ALL=C runuser -u postgres -- "$pgbin/pg_controldata" "$work/pg1" | sed -n 's/^Latest checkpoint location: *//p')
replayed() { psql_on pg2 netmod "SELECT pg_last_wal_replay_lsn() >= '$final'::pg_lsn" 2>/dev/null || echo f; }
caught_up=$(seconds_until 60 t replayed)
[ "$caught_up" != never ] || { echo "the standby did not replay the primary's last checkpoint"; exit 1; }
[ "$(psql_on pg2 netmod "SELECT pg_promote(true, 60)")" = t ] || { echo "promotion failed"; exit 1; }
primary=pg2
args=$(echo "${DB_SERVER_ARGS//${ip[pg1]}/${ip[pg2]}}" | sed -E 's/--replica [^ ]+ ?//')
# shellcheck disable=SC2086
run_in db "$bin/db-server" --config "$cfg/db-server.toml" $args
db_pid=$last_pid
wait_for "${ip[db]}" 7100
writer 120 "${ip[app1]}" 30 pr >"$work/r.w" &
wp=$!
first_ack() { grep -q '^w [^ ]* [^ ]* 20[01] ' "$work/r.w" && echo yes || echo no; }
seconds_until 110 yes first_ack >/dev/null
sleep 2 # a few more writes on the new primary
kill "$wp" 2>/dev/null || true
wait "$wp" 2>/dev/null || true
summary=$(writes_summary "$work/r.w" "$t0" "$t0")
check_probe "$work/s.c"
missing=$(missing_on pg2 "$work/acked-all")
echo "scenario=promotion requests=$(echo "$summary" | field writes) failed=$(echo "$summary" | field write_failed) acked_writes=$(sort -u "$work/acked-all" | grep -c .) acked_missing=$missing recovery_s=$(echo "$summary" | sed -n 's/.*recovery_s=\([^ ]*\).*/\1/p') caught_up_s=$caught_up"
[ "$missing" -eq 0 ] || { echo "acknowledged writes are missing on the promoted standby"; exit 1; }

# The automatic failover scenarios, on hosts and a cluster of their own (pg_auto_failover),
# once these are gone.
trap - EXIT
teardown
exec benches/failover.sh ${short:+--short}
