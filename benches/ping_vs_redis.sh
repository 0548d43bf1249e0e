#!/usr/bin/env bash
# Ping/pong RPS of test-server (1 loop thread, core 0) driven by loadgen (core 1), interleaved
# with Redis PING under the same pinning (benches/peers/load-redis-ping.sh); then memory per
# idle connection at 10,000 connections. Raw lines on stdout; see docs/BENCHMARKS.md.
# usage: benches/ping_vs_redis.sh   (env: SECS=10 RUNS=3 CONNS=50 PEERS=benches/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} conns=${CONNS:-50} peers=${PEERS:-benches/peers}
bash "$peers/install.sh"
cargo build --release -q --bin test-server --bin loadgen
bin=target/release
hz=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"

. benches/common.sh
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start_server() { # port -> pid
  taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$1" --http-listen 127.0.0.1:0 --threads 1 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.05; done
  echo "$pid"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), secs=$secs conns=$conns"
for round in $(seq "$runs"); do
  port=$(free_port); pid=$(start_server "$port")
  for depth in 1 16; do
    t0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 "$bin/loadgen" ping --addr "127.0.0.1:$port" --conns "$conns" --pipeline "$depth" --duration "$secs")
    t1=$(cpu_ticks "$pid")
    reqs=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
    us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    echo "round=$round netmod_ping_p$depth $(echo "$out" | tail -1) server_cpu_us_per_req=$us"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "round=$round $(bash "$peers/load-redis-ping.sh" "$conns" 500000)"
  # Redis again, to read its CPU time per request (the peer script does not report it).
  port=$(free_port); dir=$(mktemp -d)
  taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  rpid=$(cat "$dir/pid")
  for depth in 1 16; do
    n=$((depth == 1 ? 500000 : 4000000))
    t0=$(cpu_ticks "$rpid")
    rps=$(taskset -c 1 redis-benchmark -p "$port" -c "$conns" -n "$n" -P "$depth" -t ping_mbulk -q 2>/dev/null \
      | tr '\r' '\n' | awk '/PING_MBULK/ { for (i=1;i<=NF;i++) if ($i ~ /requests/) { print $(i-1); exit } }')
    t1=$(cpu_ticks "$rpid")
    us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    echo "round=$round redis_cpu_p$depth rps=$rps server_cpu_us_per_req=$us"
  done
  kill "$rpid"; sleep 0.2; rm -rf "$dir"
done
port=$(free_port); pid=$(start_server "$port")
echo "idle_10000 $(bash "$peers/idle-conns.sh" "$pid" "$port" 10000)"
kill "$pid"; wait "$pid" 2>/dev/null || true
