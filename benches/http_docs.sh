#!/usr/bin/env bash
# GET /docs/example through test-server's HTTP front (1 loop thread) next to nginx (1 worker) and
# tokio+hyper (current_thread) serving the same 96-byte answer, all pinned to core 0, wrk on core 1
# (benches/peers/load-http.sh), 64 and 512 connections, RUNS rounds interleaved. Raw lines on
# stdout; see docs/BENCHMARKS.md.
#
# netmod runs with db-server beside it on core 0 (its CPU is counted in cpu_us_per_req too) and
# RUST_LOG=warn, which turns the per-request access log off as nginx's `access_log off` does;
# `netmod_default` is the same with RUST_LOG unset: the configuration users get.
# `netmod` serves the document from its coherent cache; `netmod_nocache` (--doc-cache-mb 0) asks
# db-server on every request.
# usage: benches/http_docs.sh   (env: SECS=10 RUNS=3 PEERS=benches/peers CONNS="64 512"
#                                WHO="netmod netmod_default netmod_nocache nginx hyper")
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} peers=${PEERS:-benches/peers} conns_list=${CONNS:-64 512}
who_list=${WHO:-netmod netmod_default netmod_nocache nginx hyper}
bash "$peers/install.sh" >/dev/null
cargo build --release -q --bin test-server --bin db-server
bin=target/release
ulimit -n "$(ulimit -Hn)"
export CLIENT_CPU=1
content="This is the example document, kept short for throughput tests."

. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# netmod: db-server + test-server, the document stored through the front. Prints "ts_pid db_pid port".
start_netmod() { # cache_mb rust_log ("-" leaves RUST_LOG unset)
  local dbp fp hp
  dbp=$(free_port) fp=$(free_port) hp=$(free_port)
  rm -f "$work/docs.db"*
  RUST_LOG=warn taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/docs.db" \
    --threads 1 >"$work/db.log" 2>&1 &
  local db=$!
  wait_port "$dbp"
  local log=(env RUST_LOG="$2")
  [ "$2" = - ] && log=(env -u RUST_LOG)
  "${log[@]}" taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$fp" --http-listen "127.0.0.1:$hp" \
    --db "127.0.0.1:$dbp" --threads 1 --insecure-http-writes --doc-cache-mb "$1" >"$work/ts.log" 2>&1 &
  local ts=$!
  wait_port "$hp"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hp/health" >/dev/null && break; sleep 0.05; done
  curl -sf -X PUT -d "{\"content\":\"$content\"}" "http://127.0.0.1:$hp/docs/example" >/dev/null
  echo "$ts $db $hp"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), secs=$secs"
for round in $(seq "$runs"); do
  for conns in $conns_list; do
    for who in $who_list; do
      port=$(free_port)
      case $who in
        netmod | netmod_default | netmod_nocache)
          cache=16 log=warn
          [ "$who" = netmod_nocache ] && cache=0
          [ "$who" = netmod_default ] && log=-
          read -r ts db port < <(start_netmod "$cache" "$log")
          pids+=("$ts" "$db"); server="$ts $db" ;;
        nginx) # the master and its worker: the worker does the serving
          master=$(bash "$peers/start-nginx-docs.sh" "$port" 1 0)
          server="$master $(pgrep -P "$master" | tr '\n' ' ')"; pids+=($server) ;;
        hyper) server=$(bash "$peers/start-hyper-docs.sh" "$port" 0); pids+=("$server") ;;
      esac
      check=$(bash "$peers/check-docs.sh" "$port" || true)
      line=$(SERVER_PIDS="$server" bash "$peers/load-http.sh" "http://127.0.0.1:$port/docs/example" "$conns" "$secs")
      echo "round=$round server=$who conns=$conns $line check=$check"
      kill $server 2>/dev/null || true
      for p in $server; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
    done
  done
done
