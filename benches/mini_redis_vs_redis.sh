#!/usr/bin/env bash
# engine/examples/mini_redis.rs against redis-server, each on core 0 with one thread, loaded by
# redis-benchmark on core 1: requests per second and the server's CPU per request for PING,
# SET and GET at pipeline 1 and 16; then memory per idle connection (10,000) for both. Rounds
# interleave the two servers. Raw lines on stdout; benches/mini-redis-summary.sh computes the
# medians and ratios; see docs/BENCHMARKS.md.
# usage: benches/mini_redis_vs_redis.sh   (env: RUNS=3 CONNS=50 P1=200000 P16=2000000 PEERS=benches/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3} conns=${CONNS:-50} p1=${P1:-200000} p16=${P16:-2000000} peers=${PEERS:-benches/peers}
bash "$peers/install.sh"
cargo build --release -q -p netmod-engine --example mini_redis
mini=target/release/examples/mini_redis
ulimit -n "$(ulimit -Hn)"
. benches/common.sh
hz=$(getconf CLK_TCK)

start() { # which port -> pid
  local dir
  case $1 in
    mini) taskset -c 0 "$mini" --listen "127.0.0.1:$2" --threads 1 >/dev/null 2>&1 & echo $! ;;
    redis)
      dir=$(mktemp -d)
      taskset -c 0 redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
        --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
      wait_port "$2"; cat "$dir/pid" ;;
  esac
}

load() { # which pid port
  local which=$1 pid=$2 port=$3 depth n t0 t1 out rps us test
  for depth in 1 16; do
    n=$((depth == 1 ? p1 : p16))
    for test in ping_mbulk set get; do
      t0=$(cpu_ticks "$pid")
      out=$(taskset -c 1 redis-benchmark -p "$port" -c "$conns" -n "$n" -P "$depth" -t "$test" -q 2>/dev/null | tr '\r' '\n')
      t1=$(cpu_ticks "$pid")
      rps=$(echo "$out" | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($i ~ /^requests/) { print $(i - 1); exit } }')
      us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
      echo "round=$round server=$which test=$test pipeline=$depth rps=$rps server_cpu_us_per_req=$us"
    done
  done
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(redis-server --version | awk '{print $3}'), conns=$conns requests=$p1/$p16"
for round in $(seq "$runs"); do
  for which in mini redis; do
    port=$(free_port); pid=$(start "$which" "$port"); wait_port "$port"
    load "$which" "$pid" "$port"
    kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 0.2
  done
done
for which in mini redis; do
  port=$(free_port); pid=$(start "$which" "$port"); wait_port "$port"
  echo "server=$which idle_10000 $(bash "$peers/idle-conns.sh" "$pid" "$port" 10000)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 0.2
done
