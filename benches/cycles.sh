#!/usr/bin/env bash
# Resource bounds: CYCLES connect / request / close cycles against each server, with the server's
# RSS sampled every second. A leak of even a few bytes per connection shows as a rising line;
# "flat" means the RSS after warm-up (10 % of the cycles) and at the end are within a few pages.
#
#   test-server frames  loadgen ping --requests-per-conn 1 (a new connection per ping)
#   db-server           the same, straight to db-server
#   HTTP front          wrk -H "Connection: close" GET /docs/example (the server closes each one)
#   proxy               the same through the proxy, one test-server behind it
#
# Servers on core 0, clients on core 1; each client runs in slices of SLICE seconds until the
# server has seen CYCLES connections (its own counters, from /metrics or the slices' reports).
# One line per server on stdout, plus the RSS series in $OUT/<server>.rss ("seconds kib").
# usage: benches/cycles.sh   (env: CYCLES=1000000 SLICE=20 OUT=/tmp/cycles)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${CYCLES:-1000000} slice=${SLICE:-20} out=${OUT:-/tmp/cycles}
cargo build --release -q --bin test-server --bin db-server --bin loadgen --bin proxy
bin=target/release
ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"

. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Samples $1's RSS every second into $2 until the file $3 appears.
sample() {
  local t=0
  : >"$2"
  while [ ! -e "$3" ]; do echo "$t $(rss "$1")" >>"$2"; sleep 1; t=$((t + 1)); done
}

# Runs "client command" slices until $3 cycles; the command prints the cycles it did.
drive() { # name server_pid command...
  local name=$1 pid=$2
  shift 2
  local done_cycles=0 warm="" start
  start=$(date +%s)
  rm -f "$work/stop"
  sample "$pid" "$out/$name.rss" "$work/stop" &
  local sampler=$!
  while [ "$done_cycles" -lt "$cycles" ]; do
    n=$("$@")
    done_cycles=$((done_cycles + n))
    if [ -z "$warm" ] && [ "$done_cycles" -ge $((cycles / 10)) ]; then warm=$(rss "$pid"); fi
  done
  touch "$work/stop"
  wait "$sampler"
  local end peak secs
  end=$(rss "$pid")
  peak=$(awk 'm < $2 {m = $2} END {print m}' "$out/$name.rss")
  secs=$(($(date +%s) - start))
  echo "server=$name cycles=$done_cycles secs=$secs rss_after_warmup_kib=$warm rss_end_kib=$end rss_peak_kib=$peak growth_kib=$((end - warm))"
}

loadgen_slice() { # addr
  taskset -c 1 "$bin/loadgen" ping --addr "$1" --conns 32 --requests-per-conn 1 --duration "$slice" 2>/dev/null |
    awk -F= '/^connections_cycled=/ {print $2; found=1} END {if (!found) print 0}'
}
wrk_slice() { # url
  taskset -c 1 wrk -t1 -c32 -d"${slice}s" -H "Connection: close" "$1" 2>/dev/null | awk '/requests in/ {print $1}'
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), cycles=$cycles"
dbp=$(free_port) fp=$(free_port) hp=$(free_port) pp=$(free_port) ap=$(free_port)
RUST_LOG=warn taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/c.db" --threads 1 >"$work/db.log" 2>&1 &
db=$!
pids+=("$db")
wait_port "$dbp"
RUST_LOG=warn taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$fp" --http-listen "127.0.0.1:$hp" --db "127.0.0.1:$dbp" \
  --threads 1 --insecure-http-writes --ping-interval 0 >"$work/ts.log" 2>&1 &
ts=$!
pids+=("$ts")
wait_port "$hp"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hp/health" >/dev/null && break; sleep 0.05; done
curl -sf -X PUT -d '{"content":"cycles"}' "http://127.0.0.1:$hp/docs/example" >/dev/null
RUST_LOG=warn taskset -c 0 "$bin/proxy" --listen "127.0.0.1:$pp" --admin "127.0.0.1:$ap" --backend "127.0.0.1:$hp" \
  --threads 1 --metrics-interval 0 >"$work/proxy.log" 2>&1 &
px=$!
pids+=("$px")
wait_port "$pp"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$pp/docs/example" >/dev/null && break; sleep 0.1; done

drive test-server-frames "$ts" loadgen_slice "127.0.0.1:$fp"
drive db-server "$db" loadgen_slice "127.0.0.1:$dbp"
drive test-server-http "$ts" wrk_slice "http://127.0.0.1:$hp/docs/example"
drive proxy "$px" wrk_slice "http://127.0.0.1:$pp/docs/example"
