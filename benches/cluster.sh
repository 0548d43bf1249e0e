#!/usr/bin/env bash
# Several hosts on one machine: each component in its own network namespace with its own
# address on a private bridge, and network partitions made by taking a host's link down
# (packets vanish: no RST, no FIN, exactly what a dead switch port does). Needs root.
#
#   client 10.77.0.2 ──┐
#   proxy  10.77.0.10 ─┤
#   app1   10.77.0.11 ─┤ bridge (in namespace nm-net)
#   app2   10.77.0.12 ─┤
#   app3   10.77.0.13 ─┤
#   db     10.77.0.20 ─┘
#
# The real binaries run in them: the proxy in front of three test-servers, which use one
# db-server (SQLite). Load comes from the client namespace (the project's loadgen). Scenarios
# (each prints one line `scenario=… requests=… failed=… acked_writes=… acked_missing=…
# detect_s=… recovery_s=…`):
#   app_partition   app1 cut off for CUT seconds under HTTP load through the proxy, then healed
#   flapping        the link to app2 down/up every 2 s for FLAP seconds under load
#   db_partition    db-server cut off from every app host for CUT seconds while a writer PUTs
#                   documents and loadgen reads a cached one, both on app1 directly: cached
#                   reads keep answering, writes fail fast (503), every acknowledged write is
#                   there after healing (checked on app2)
#
# The programs run with the sample deployment files (deploy/config/: flags and configuration
# of this 10.77.0.0/24 layout), so those are exercised, not only shipped.
# Everything (namespaces, processes, data) is removed on exit, on error and on Ctrl-C.
# usage: sudo benches/cluster.sh [--short]     (env CUT=20 FLAP=30 CONNS=30)
# Status: three of issue 16's scenarios; PostgreSQL primary/standby ones are not built yet
# (docs/RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "cluster.sh needs root (network namespaces)"; exit 2; }
short=
[ "${1:-}" = --short ] && short=1
cut=${CUT:-$([ -n "$short" ] && echo 6 || echo 20)}
flap=${FLAP:-$([ -n "$short" ] && echo 8 || echo 30)}
conns=${CONNS:-30}
cargo build --release -q --bin db-server --bin test-server --bin proxy --bin loadgen --bin client
bin=$PWD/target/release
work=$(mktemp -d /tmp/netmod-cluster.XXXXXX)
net=nm-net
hosts=(client proxy app1 app2 app3 db)
declare -A ip=([client]=10.77.0.2 [proxy]=10.77.0.10 [app1]=10.77.0.11 [app2]=10.77.0.12
  [app3]=10.77.0.13 [db]=10.77.0.20)
pids=()

remove_net() {
  for h in "${hosts[@]}"; do ip netns del "nm-$h" 2>/dev/null || true; done
  ip netns del "$net" 2>/dev/null || true
}
teardown() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  remove_net
  rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP
remove_net # what a run killed with -9 left behind

# The network: a bridge in its own namespace, one veth pair per host.
ip netns add "$net"
ip -n "$net" link add br0 type bridge
ip -n "$net" link set br0 up
for h in "${hosts[@]}"; do
  ip netns add "nm-$h"
  ip link add "v-$h" type veth peer name eth0 netns "nm-$h"
  ip link set "v-$h" netns "$net"
  ip -n "$net" link set "v-$h" master br0 up
  ip -n "nm-$h" addr add "${ip[$h]}/24" dev eth0
  ip -n "nm-$h" link set eth0 up
  ip -n "nm-$h" link set lo up
done

# Runs a program in host $1's namespace, in the background; its output goes to $work/$1.log.
run_in() {
  local h=$1; shift
  ip netns exec "nm-$h" "$@" >>"$work/$h.log" 2>&1 &
  pids+=($!)
}
wait_for() { # HOST PORT
  for _ in $(seq 200); do
    ip netns exec "nm-client" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2"; exit 1
}
# The link of host $1 down (a partition: packets vanish) or up.
link() { ip -n "$net" link set "v-$1" "$2"; }
# A backend's state in the proxy's /status (from the client namespace).
state_of() { # APP
  ip netns exec nm-client curl -s -m 2 "http://${ip[proxy]}:8081/status" | python3 -c '
import json, sys
want = sys.argv[1]
for b in json.load(sys.stdin)["backends"]:
    if b["address"] == want:
        print(b["state"])' "${ip[$1]}:8000" 2>/dev/null || echo "?"
}
# Seconds (0.1 s steps, at most LIMIT) until `CMD ARGS…` prints WANT; "never" if it does not.
seconds_until() { # LIMIT WANT CMD ARGS…
  local limit=$1 want=$2 t0 n=0
  shift 2
  t0=$(date +%s.%N)
  while [ "$("$@")" != "$want" ]; do
    n=$((n + 1)); [ "$n" -gt $((limit * 10)) ] && { echo "never"; return; }
    sleep 0.1
  done
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"
}
until_state() { seconds_until "$3" "$2" state_of "$1"; } # APP STATE LIMIT_S (in the proxy)

# The programs start as the deploy/ files say (deploy/config/*.env: the flags, *.toml: the
# configuration), with the layout's addresses; only the database path moves into $work.
env_file() { # FILE: exports its KEY=VALUE lines (systemd's EnvironmentFile format)
  local k v
  while IFS='=' read -r k v; do
    [[ -z $k || $k == \#* ]] && continue
    export "$k=$v"
  done <"$1"
}
cfg=$PWD/deploy/config
env_file "$cfg/db-server.env"
env_file "$cfg/test-server.env"
env_file "$cfg/proxy.env"
# shellcheck disable=SC2086  # the *_ARGS are flag lists, split as systemd splits them
run_in db "$bin/db-server" --config "$cfg/db-server.toml" ${DB_SERVER_ARGS//\/var\/lib\/netmod/$work}
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
for _ in $(seq 100); do
  token=$(ip netns exec nm-client env NETMOD_SECRET="$NETMOD_ADMIN_SECRET" "$bin/client" \
    --addr "${ip[app1]}:7000" --user admin login 2>/dev/null) && break
  sleep 0.1
done
[ -n "${token:-}" ] || { echo "cannot log in as admin on app1"; exit 1; }
ip netns exec nm-client curl -s -m 5 -X PUT -H "Authorization: Bearer $token" \
  -d '{"content":"cluster"}' "http://${ip[app1]}:8000/docs/example" >/dev/null
for a in app1 app2 app3; do
  for _ in $(seq 100); do [ "$(state_of $a)" = healthy ] && break; sleep 0.1; done
done

# Loads the proxy from the client namespace for $1 seconds; prints loadgen's last two lines.
load() {
  ip netns exec nm-client "$bin/loadgen" http --addr "${ip[proxy]}:8080" --path /docs/example \
    --conns "$conns" --duration "$1" 2>>"$work/loadgen.log" | tail -2
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | head -1; }

# Scenario: app1 cut off for $cut s, 3 s into the load, then healed.
total=$((cut + 12))
load "$total" >"$work/a.out" &
lp=$!
sleep 3
link app1 down
detect=$(until_state app1 unhealthy "$cut")
sleep "$(python3 -c "import sys; print(max(0.0, $cut - float(sys.argv[1]) if sys.argv[1] != 'never' else $cut))" "$detect")"
link app1 up
recovery=$(until_state app1 healthy 30)
wait "$lp"
requests=$(field requests <"$work/a.out")
failed=$(tail -1 "$work/a.out" | field errors)
echo "scenario=app_partition requests=$requests failed=$failed acked_writes=0 acked_missing=0 detect_s=$detect recovery_s=$recovery in_flight_bound=$conns"
[ "$failed" -le "$conns" ] || { echo "more requests failed than were in flight at the cut"; exit 1; }

# Scenario: the link to app2 flaps (down/up every 2 s) for $flap s.
load "$((flap + 6))" >"$work/f.out" &
lp=$!
sleep 2
transitions=0 last=$(state_of app2)
end=$((SECONDS + flap))
while [ $SECONDS -lt $end ]; do
  link app2 down; sleep 2
  link app2 up; sleep 2
  s=$(state_of app2); [ "$s" != "$last" ] && transitions=$((transitions + 1)); last=$s
done
wait "$lp"
requests=$(field requests <"$work/f.out")
failed=$(tail -1 "$work/f.out" | field errors)
echo "scenario=flapping requests=$requests failed=$failed acked_writes=0 acked_missing=0 state_changes_seen=$transitions in_flight_bound=$((conns * flap / 4))"

# Scenario: db-server cut off from every app host for $cut s, 3 s into a run of reads of a
# cached document and of writes, both on app1 directly (through the proxy, the apps' /health
# would take them all out while db-server is away).
writer() { # SECONDS: PUTs /docs/w-N, about 20 a second; prints acked names, then a summary line
  ip netns exec nm-client python3 - "$1" "${ip[app1]}" "$token" <<'PY'
import http.client, sys, time
secs, host, token = float(sys.argv[1]), sys.argv[2], sys.argv[3]
end, n, failed, slowest_failure = time.time() + secs, 0, 0, 0.0
while time.time() < end:
    n += 1
    name = f"w-{n}"
    t0 = time.time()
    try:
        c = http.client.HTTPConnection(host, 8000, timeout=5)
        c.request("PUT", f"/docs/{name}", body=b'{"content":"acked"}',
                  headers={"Authorization": f"Bearer {token}"})
        status = c.getresponse().status
        c.close()
    except OSError:
        status = 0
    if status in (200, 201):
        print(f"acked {name}", flush=True)
    else:
        failed += 1
        slowest_failure = max(slowest_failure, time.time() - t0)
    time.sleep(0.05)  # about 20 writes/s: each empties the document cache (a table-wide notice)
print(f"writes={n} failed={failed} slowest_failure_s={slowest_failure:.2f}")
PY
}
health_of() { # APP: the status code of its /health
  ip netns exec nm-client curl -s -m 2 -o /dev/null -w '%{http_code}' "http://${ip[$1]}:8000/health" || true
}
until_health() { seconds_until "$3" "$2" health_of "$1"; } # APP CODE LIMIT_S: its /health
total=$((cut + 15))
ip netns exec nm-client curl -s -m 5 "http://${ip[app1]}:8000/docs/example" >/dev/null # cached now
ip netns exec nm-client "$bin/loadgen" http --addr "${ip[app1]}:8000" --path /docs/example \
  --conns 10 --duration "$total" 2>>"$work/loadgen.log" | tail -2 >"$work/d.out" &
lp=$!
writer "$total" >"$work/w.out" &
wp=$!
sleep 3
link db down
detect=$(until_health app1 503 "$cut")
sleep "$(python3 -c "import sys; d = sys.argv[1]; print(max(0.0, $cut - (float(d) if d != 'never' else $cut)))" "$detect")"
link db up
recovery=$(until_health app1 200 60)
wait "$lp" "$wp"
acked=$(grep -c '^acked ' "$work/w.out" || true)
missing=0
for name in $(sed -n 's/^acked //p' "$work/w.out"); do
  code=$(ip netns exec nm-client curl -s -m 5 -o /dev/null -w '%{http_code}' "http://${ip[app2]}:8000/docs/$name")
  [ "$code" = 200 ] || missing=$((missing + 1))
done
reads=$(field requests <"$work/d.out")
read_failed=$(tail -1 "$work/d.out" | field errors)
summary=$(tail -1 "$work/w.out")
echo "scenario=db_partition requests=$reads failed=$read_failed acked_writes=$acked acked_missing=$missing detect_s=$detect recovery_s=$recovery $summary"
[ "$missing" -eq 0 ] || { echo "acknowledged writes are missing"; exit 1; }
