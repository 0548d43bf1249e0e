#!/usr/bin/env bash
# Redis PING at pipeline 1 and 16: a throwaway redis-server (no persistence) and redis-benchmark,
# each pinned; prints redis_ping_p1_rps= redis_ping_p16_rps=, then stops Redis.
# usage: load-redis-ping.sh [CONNS=50] [REQUESTS=500000]   (env SERVER_CPU=0 CLIENT_CPU=1; empty: not pinned)
set -euo pipefail
conns=${1:-50} requests=${2:-500000} server_cpu=${SERVER_CPU-0} client_cpu=${CLIENT_CPU-1}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d "${TMPDIR:-/tmp}/netmod-peer-redis.XXXXXX")
stop() { [ -s "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null; sleep 0.2; rm -rf "$dir"; }
trap stop EXIT
trap 'exit 1' INT TERM HUP
${server_cpu:+taskset -c "$server_cpu"} redis-server --bind 127.0.0.1 --port "$port" --save '' \
  --appendonly no --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
rate() { # PIPELINE: requests per second redis-benchmark reports for PING_MBULK
  ${client_cpu:+taskset -c "$client_cpu"} redis-benchmark -p "$port" -c "$conns" -n "$requests" \
    -P "$1" -t ping_mbulk -q 2>/dev/null | tr '\r' '\n' |
    awk '/PING_MBULK/ { for (i = 1; i <= NF; i++) if ($i ~ /^requests/) { print $(i - 1); exit } }'
}
echo "redis_ping_p1_rps=$(rate 1) redis_ping_p16_rps=$(rate 16)"
