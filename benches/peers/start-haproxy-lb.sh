#!/usr/bin/env bash
# HAProxy (one thread, HTTP mode, connection reuse, GET /health checks each second) on
# 127.0.0.1:PORT over 127.0.0.1:BACKEND_PORT...; prints its PID.
# usage: start-haproxy-lb.sh PORT BACKEND_PORT...   (env CPU, BALANCE=roundrobin|leastconn)
set -euo pipefail
port=$1; shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/netmod-peer-haproxy.XXXXXX")
servers= n=0
for b in "$@"; do n=$((n + 1)); servers+="  server s$n 127.0.0.1:$b check inter 1s fall 2 rise 2"$'\n'; done
cat >"$dir/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend clients
  bind 127.0.0.1:$port
  default_backend pool
backend pool
  balance ${BALANCE:-roundrobin}
  option httpchk GET /health
$servers
CONF
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
${CPU:+taskset -c "$CPU"} haproxy -D -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid"
for _ in $(seq 100); do [ -s "$dir/haproxy.pid" ] && break; sleep 0.05; done
head -n1 "$dir/haproxy.pid"
