#!/usr/bin/env bash
# Automatic failover of the PostgreSQL primary, by pg_auto_failover (docs/operations.md,
# "Automatic failover"), under load, on hosts in network namespaces as in benches/cluster.sh:
#
#   client  10.77.0.2  ──┐ loadgen, the writer
#   app     10.77.0.11 ──┤ test-server
#   db      10.77.0.20 ──┤ db-server: --postgres and --replica name both nodes (multi-host URLs)
#   monitor 10.77.0.40 ──┤ bridge   pg_auto_failover's monitor
#   pg1     10.77.0.30 ──┤ a keeper and its PostgreSQL (the first primary)
#   pg2     10.77.0.31 ──┘ a keeper and its PostgreSQL (synchronous standby)
#
# (The sample layout's addresses, on a bridge of its own: benches/cluster.sh's hosts may run
# at the same time without meeting these.)
#
# The monitor and keepers run as deploy/config/pg_auto_failover.env sets them (timeouts
# lowered from the anchors' defaults so that a failover takes seconds, not half a minute).
# Scenarios, each printing `scenario=… requests=… failed=… acked_writes=… acked_missing=…
# unavailable_s=…` (the script fails on an acknowledged write missing, a write failed outside
# a fault, or no failover where one is due):
#   primary_crash          kill -9 of everything on the primary's host and its link down, under
#                          writes (HTTP PUT through test-server) and reads (loadgen db): the
#                          standby is promoted, writes resume, reads go on meanwhile, and
#                          test-server's status page names the new primary
#   rejoin                 the old primary's host back: its keeper rejoins it as the standby
#                          (pg_rewind) and it catches up; synchronous replication again
#   primary_partition_auto the primary's link down, its processes alive: the standby is
#                          promoted; the old primary, cut off from the monitor and its
#                          standby, stops taking writes (a write on it, from its own host,
#                          after the promotion must not be acknowledged: no split brain); healed,
#                          it rejoins as the standby
#   monitor_partition      the monitor cut off for CUT seconds under writes: no failover, no
#                          failed write
#   standby_crash          the standby's host dies under writes: commits wait for it until the
#                          monitor turns synchronous replication off (wait_primary), then go
#                          on; it rejoins after
# --short runs the first three (rejoin is needed between the two failovers); the full run all
# five. usage: sudo benches/failover.sh [--short]   (env CUT=20 CONNS=10; KEEP=1 keeps $work)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "failover.sh needs root (network namespaces)"; exit 2; }
short=
[ "${1:-}" = --short ] && short=1
cut=${CUT:-$([ -n "$short" ] && echo 8 || echo 20)}
conns=${CONNS:-10}
PG_TIMEOUT_SECS=${PG_TIMEOUT_SECS:-2}
cargo build --release -q --bin db-server --bin test-server --bin loadgen --bin client
bin=$PWD/target/release
pgbin=$(bash .ci/pg-cluster install-autofailover)
work=$(mktemp -d /tmp/netmod-failover.XXXXXX)
chown postgres: "$work" && chmod 755 "$work"
net=nm-fnet
hosts=(client app db monitor pg1 pg2)
declare -A port=([monitor]=5440 [pg1]=5431 [pg2]=5432)
declare -A ip=([client]=10.77.0.2 [app]=10.77.0.11 [db]=10.77.0.20 [monitor]=10.77.0.40
  [pg1]=10.77.0.30 [pg2]=10.77.0.31)
pids=()
ns=nm-f-
. benches/netns.sh
# Runs `CMD ARGS…` (which enters host $1's namespace itself) in the background, logging to
# $work/$1.log.
run_bg() {
  local h=$1; shift
  "$@" >>"$work/$h.log" 2>&1 &
  pids+=($!)
}

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; then
    for f in "$work"/*.log; do
      [ -s "$f" ] && { echo "--- the end of $(basename "$f")"; tail -n 25 "$f"; }
    done
  fi
  # This script's own background loops (checkpoints_until_standby, loads) end with it.
  local j
  j=$(jobs -p)
  [ -n "$j" ] && kill $j 2>/dev/null || true
  for h in "${hosts[@]}"; do kill_host "$h"; done
  remove_net
  if [ -n "${KEEP:-}" ]; then echo "logs and data kept in $work"; else rm -rf "$work"; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP
remove_net # what a run killed with -9 left behind
make_net

# pg_auto_failover's settings, as the sample deployment gives them.
env_file "$PWD/deploy/config/pg_auto_failover.env"
# pg_autoctl on host $1 as the postgres user, with that host's own state directories. Each
# host's PostgreSQL has its own port: their Unix sockets share this machine's
# /var/run/postgresql.
autoctl() {
  local h=$1; shift
  mkdir -p "$work/$h/run"
  # Files PostgreSQL renames while this runs (postgresql.auto.conf.tmp) are its own already:
  # chown's complaint that one vanished is not a failure.
  chown -R postgres: "$work/$h" 2>/dev/null || true
  ip netns exec "nm-f-$h" runuser -u postgres -- env PATH="$pgbin:/usr/bin:/bin" \
    XDG_CONFIG_HOME="$work/$h/config" XDG_DATA_HOME="$work/$h/share" \
    XDG_RUNTIME_DIR="$work/$h/run" pg_autoctl "$@"
}
monitor_uri="postgres://autoctl_node@${ip[monitor]}:${port[monitor]}/pg_auto_failover?sslmode=disable"
# SQL on the monitor (from the client host), one value per line.
on_monitor() {
  ip netns exec nm-f-client "$pgbin/psql" "$monitor_uri" -AtqX -v ON_ERROR_STOP=1 -c "$1"
}
# SQL on a node as postgres, from that node itself (its Unix socket).
psql_on() { # HOST DB SQL (unqualified names: the clients' schema, db-server's, public)
  ip netns exec "nm-f-$1" runuser -u postgres -- env PGOPTIONS="-c search_path=netmod_client,netmod,public" \
    "$pgbin/psql" -h /var/run/postgresql -p "${port[$1]}" -U postgres \
    -d "$2" -AtqX -v ON_ERROR_STOP=1 -c "$3"
}
# The state the monitor last heard from node $1 ("?" if the monitor does not answer).
state_of() {
  on_monitor "SELECT reportedstate FROM pgautofailover.node WHERE nodename = '$1'" 2>/dev/null || echo "?"
}
# The node the monitor has as the primary, "none" while there is none.
primary_node() {
  local p
  p=$(on_monitor "SELECT nodename FROM pgautofailover.node WHERE reportedstate IN ('single', 'primary', 'wait_primary') AND goalstate = reportedstate" 2>/dev/null | head -1)
  echo "${p:-none}"
}
until_state() { seconds_until "$3" "$2" state_of "$1"; } # NODE STATE LIMIT_S

# The monitor, then pg1 (alone: "single"), the database and roles of docs/operations.md made
# there, then pg2, cloned from it by its keeper.
run_bg monitor autoctl monitor create monitor --pgdata "$work/monitor/data" --pgport "${port[monitor]}" \
  --hostname "${ip[monitor]}" --auth trust --no-ssl --run
for _ in $(seq 300); do on_monitor "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
on_monitor "SELECT 1" >/dev/null
for s in $PGAF_MONITOR_SETTINGS; do
  ip netns exec nm-f-monitor runuser -u postgres -- "$pgbin/psql" -h /var/run/postgresql -p "${port[monitor]}" -U postgres \
    -d pg_auto_failover -AtqX -c "ALTER SYSTEM SET pgautofailover.${s%%=*} = '${s#*=}'" >/dev/null
done
ip netns exec nm-f-monitor runuser -u postgres -- "$pgbin/psql" -h /var/run/postgresql -p "${port[monitor]}" -U postgres \
  -d pg_auto_failover -AtqX -c "SELECT pg_reload_conf()" >/dev/null

# A keeper cloning a standby (pg_basebackup) waits for the primary's next checkpoint, which
# pg_autoctl does not ask to be immediate: minutes on an idle primary. Asked here, every 2 s,
# until the node is the standby (at most 2 minutes).
checkpoints_until_standby() { # NODE PRIMARY
  for _ in $(seq 60); do
    [ "$(state_of "$1")" = secondary ] && return 0
    psql_on "$2" postgres "CHECKPOINT" >/dev/null 2>&1 || true
    sleep 2
  done
}
create_node() { # HOST: its keeper creates (or clones) its PostgreSQL and runs
  run_bg "$1" autoctl "$1" create postgres --pgdata "$work/$1/data" --pgport "${port[$1]}" \
    --listen "${ip[$1]}" --hostname "${ip[$1]}" --name "$1" \
    --dbname netmod --monitor "$monitor_uri" --auth trust --no-ssl --pg-hba-lan --run
}
create_node pg1
[ "$(until_state pg1 single 120)" != never ] || { echo "pg1 did not start"; exit 1; }
psql_on pg1 postgres "CREATE ROLE netmod LOGIN" >/dev/null
psql_on pg1 postgres "CREATE ROLE netmod_client LOGIN" >/dev/null
psql_on pg1 postgres "ALTER DATABASE netmod OWNER TO netmod" >/dev/null
psql_on pg1 netmod "CREATE SCHEMA netmod AUTHORIZATION netmod" >/dev/null
psql_on pg1 netmod "REVOKE TEMP ON DATABASE netmod FROM PUBLIC" >/dev/null
for s in $PGAF_POSTGRES_SETTINGS; do
  psql_on pg1 postgres "ALTER SYSTEM SET ${s%%=*} = '${s#*=}'" >/dev/null
done
psql_on pg1 postgres "SELECT pg_reload_conf()" >/dev/null
# db-server's and the clients' logins, from the private /24 (copied to pg2 with the data).
echo "host netmod netmod,netmod_client 10.77.0.0/24 trust" >>"$work/pg1/data/pg_hba.conf"
psql_on pg1 postgres "SELECT pg_reload_conf()" >/dev/null
create_node pg2
checkpoints_until_standby pg2 pg1 &
[ "$(until_state pg2 secondary 180)" != never ] || { echo "pg2 did not become the standby"; exit 1; }
[ "$(until_state pg1 primary 60)" != never ] || { echo "pg1 did not become the primary"; exit 1; }
for h in pg1 pg2; do
  for s in $PGAF_KEEPER_SETTINGS; do
    autoctl "$h" config set --pgdata "$work/$h/data" "${s%%=*}" "${s#*=}" >/dev/null
  done
done
echo "# pg_auto_failover: $(on_monitor "SELECT nodename || '=' || reportedstate FROM pgautofailover.node ORDER BY nodeid" | paste -sd' '), synchronous_standby_names=$(psql_on pg1 postgres "SHOW synchronous_standby_names")"
psql_on pg1 netmod "CREATE TABLE public.split_probe (t timestamptz NOT NULL DEFAULT now())" >/dev/null

# The programs: db-server follows the primary through multi-host URLs (writes: the node that
# takes them; reads: a standby while there is one, else the primary); test-server as the
# sample deploys it.
cfg=$PWD/deploy/config
env_file "$cfg/test-server.env"
nodes="${ip[pg1]}:${port[pg1]},${ip[pg2]}:${port[pg2]}"
run_in db "$bin/db-server" --config "$cfg/db-server.toml" --listen 0.0.0.0:7100 \
  --postgres "postgresql://netmod@$nodes/netmod?target_session_attrs=read-write" \
  --replica "postgresql://netmod@$nodes/netmod?target_session_attrs=prefer-standby" \
  --postgres-timeout-secs "$PG_TIMEOUT_SECS"
wait_for "${ip[db]}" 7100
# shellcheck disable=SC2086  # a flag list, split as systemd splits it
run_in app "$bin/test-server" --config "$cfg/test-server.toml" $TEST_SERVER_ARGS
wait_for "${ip[app]}" 8000
admin_token "${ip[app]}"
store_example "${ip[app]}"
touch "$work/acked-all"
# Each event-loop thread of the app has its own db link, up on its own time: the scenarios
# start once 20 writes in a row, each on a new connection, succeed.
in_a_row=0
for _ in $(seq 600); do
  code=$(ip netns exec nm-f-client curl -s -m 5 -o /dev/null -w '%{http_code}' -X PUT \
    -H "Authorization: Bearer $token" -d '{"content":"warm"}' "http://${ip[app]}:8000/docs/warm")
  case $code in 200|201) in_a_row=$((in_a_row + 1)) ;; *) in_a_row=0 ;; esac
  [ "$in_a_row" -ge 20 ] && break
  sleep 0.05
done
[ "$in_a_row" -ge 20 ] || { echo "writes through the app do not succeed (last answer $code)"; exit 1; }

db_reads() { # SECONDS: point reads on db-server (a standby's while one answers); loadgen's last two lines
  ip netns exec nm-f-client "$bin/loadgen" db --addr "${ip[db]}:7100" --mode read --rows 1000 \
    --conns "$conns" --duration "$1" 2>>"$work/loadgen.log" | tail -2
}
other() { [ "$1" = pg1 ] && echo pg2 || echo pg1; }
# Where test-server's status page says db-server's writes go ("none" while none answers).
status_primary() {
  ip netns exec nm-f-client curl -s -m 2 "http://${ip[app]}:8000/status" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["db"]["primary"] or "none")' 2>/dev/null || echo "?"
}
# Seconds until the status page names NODE as where the writes go (it asks every 2 s).
shown_on_status() { seconds_until 10 "${ip[$1]}:${port[$1]}" status_primary; }
# A scenario's writes ($work/TAG.w, fault at $t_cut) and reads ($work/TAG.out) summed up:
# $line (the fields every scenario prints) and $missing (acknowledged writes, of the whole run,
# absent on the primary $1).
tally() { # PRIMARY TAG
  local summary reads read_failed
  summary=$(writes_summary "$work/$2.w" "$t_cut" "$t_cut")
  missing=$(missing_on "$1" "$work/acked-all")
  reads=$(field requests <"$work/$2.out")
  read_failed=$(tail -1 "$work/$2.out" | field errors)
  write_failed=$(echo "$summary" | field write_failed)
  unavailable=$(echo "$summary" | sed -n 's/.*unavailable_s=\([^ ]*\).*/\1/p')
  line="requests=$((reads + $(echo "$summary" | field writes))) failed=$((read_failed + write_failed)) acked_writes=$(sort -u "$work/acked-all" | grep -c .) acked_missing=$missing unavailable_s=$unavailable reads=$reads read_failed=$read_failed $summary"
}
# Writes (HTTP PUT on the app) and reads (db-server) for $1 s, in the background.
start_load() { # SECONDS TAG
  db_reads "$1" >"$work/$2.out" &
  lp=$!
  writer "$1" "${ip[app]}" 10 "$2" >"$work/$2.w" &
  wp=$!
}
# Fails the run if an acknowledged write is missing, writes never recovered or failed before
# the fault, or writes were unavailable longer than $max_unavailable seconds.
check() { # SCENARIO TAG
  [ "$missing" -eq 0 ] || { echo "$1: acknowledged writes are missing on the primary"; exit 1; }
  [ "$unavailable" != never ] || { echo "$1: writes did not resume"; exit 1; }
  [ "$(echo "$line" | field failed_outside)" -eq 0 ] ||
    { echo "$1: writes failed before the fault:"; grep -v '^w [^ ]* [^ ]* 20[01] ' "$work/$2.w" | head -5 || true; exit 1; }
  python3 -c "import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))" "$unavailable" "$max_unavailable" ||
    { echo "$1: writes unavailable for ${unavailable}s (goal ${max_unavailable}s)"; exit 1; }
}
max_unavailable=${MAX_UNAVAILABLE:-30}
total=$((cut + 25))

# Scenario: the primary's host dies (everything on it killed, its link down) under load.
old=$(primary_node)
new=$(other "$old")
start_load "$total" crash
sleep 3
t_cut=$(now)
link "$old" down
kill_host "$old"
promoted=$(seconds_until 60 "$new" primary_node)
wait "$lp" "$wp"
tally "$new" crash
shown=$(shown_on_status "$new")
echo "scenario=primary_crash $line promoted_s=$promoted status_page_primary_s=$shown"
[ "$shown" != never ] || { echo "primary_crash: test-server's status page does not name the new primary ($(status_primary))"; exit 1; }
[ "$promoted" != never ] || { echo "primary_crash: the standby was not promoted"; exit 1; }
check primary_crash crash

# Scenario: the old primary's host back: its keeper rejoins it as the standby (under writes).
start_load 20 rejoin
sleep 1
t_cut=$(now)
link "$old" up
run_bg "$old" autoctl "$old" run --pgdata "$work/$old/data"
checkpoints_until_standby "$old" "$new" &
rejoined=$(until_state "$old" secondary 120)
caught_up=$(seconds_until 60 0 missing_on "$old" "$work/acked-all")
wait "$lp" "$wp"
tally "$new" rejoin
sync=$(psql_on "$new" postgres "SHOW synchronous_standby_names")
echo "scenario=rejoin $line rejoined_s=$rejoined caught_up_s=$caught_up synchronous_standby_names=${sync// /_}"
[ "$rejoined" != never ] || { echo "rejoin: $old did not come back as the standby"; exit 1; }
[ "$caught_up" != never ] || { echo "rejoin: $old lacks acknowledged writes"; exit 1; }
[ "$write_failed" -eq 0 ] || { echo "rejoin: writes failed while the standby rejoined"; exit 1; }

# Scenario: the primary cut off from everything, its processes alive: the standby is promoted,
# and the old primary takes no write after that (asked from its own host, where it is reachable).
old=$new
new=$(other "$old")
start_load "$total" partition
sleep 3
t_cut=$(now)
link "$old" down
promoted=$(seconds_until 60 "$new" primary_node)
split=refused
ip netns exec "nm-f-$old" timeout 5 runuser -u postgres -- "$pgbin/psql" -h /var/run/postgresql \
  -p "${port[$old]}" -U postgres -d netmod -AtqX -c "INSERT INTO public.split_probe DEFAULT VALUES" >/dev/null 2>&1 && split=acknowledged
wait "$lp" "$wp"
tally "$new" partition
shown=$(shown_on_status "$new")
link "$old" up
echo "scenario=primary_partition_auto $line promoted_s=$promoted old_primary_write=$split status_page_primary_s=$shown"
[ "$shown" != never ] || { echo "primary_partition_auto: test-server's status page does not name the new primary ($(status_primary))"; exit 1; }
[ "$promoted" != never ] || { echo "primary_partition_auto: the standby was not promoted"; exit 1; }
[ "$split" = refused ] || { echo "primary_partition_auto: the old primary acknowledged a write after the promotion (split brain)"; exit 1; }
check primary_partition_auto partition
# Healed: its keeper finds it demoted and rejoins it as the standby.
checkpoints_until_standby "$old" "$new" &
[ "$(until_state "$old" secondary 120)" != never ] || { echo "the old primary did not rejoin"; exit 1; }

[ -n "$short" ] && exit 0

# Scenario: the monitor cut off for $cut s under writes: no failover, no failed write.
primary=$(primary_node)
start_load $((cut + 8)) monitor
sleep 3
t_cut=$(now)
link monitor down
sleep "$cut"
link monitor up
wait "$lp" "$wp"
tally "$primary" monitor
after=$(seconds_until 30 "$primary" primary_node)
echo "scenario=monitor_partition $line primary_kept=$([ "$after" != never ] && echo yes || echo no)"
[ "$after" != never ] || { echo "monitor_partition: the primary changed"; exit 1; }
[ "$write_failed" -eq 0 ] || { echo "monitor_partition: writes failed"; exit 1; }

# Scenario (full run): the standby's host dies under writes. Commits wait for it (synchronous
# replication) until the monitor moves the primary to wait_primary, which turns synchronous
# replication off: writes go on, on one node. Then the standby's host comes back and rejoins.
standby=$(other "$primary")
start_load $((cut + 8)) standby
sleep 3
t_cut=$(now)
link "$standby" down
kill_host "$standby"
async=$(until_state "$primary" wait_primary 60)
wait "$lp" "$wp"
tally "$primary" standby
echo "scenario=standby_crash $line wait_primary_s=$async"
[ "$async" != never ] || { echo "standby_crash: the primary never went on without its standby"; exit 1; }
check standby_crash standby
link "$standby" up
run_bg "$standby" autoctl "$standby" run --pgdata "$work/$standby/data"
checkpoints_until_standby "$standby" "$primary" &
[ "$(until_state "$standby" secondary 120)" != never ] || { echo "the standby did not rejoin"; exit 1; }
[ "$(until_state "$primary" primary 60)" != never ] || { echo "synchronous replication did not come back"; exit 1; }
