#!/usr/bin/env bash
# nginx as a reverse proxy and load balancer on 127.0.0.1:PORT over 127.0.0.1:BACKEND_PORT...,
# HTTP/1.1 keep-alive to the backends (up to 64 idle each); prints its master PID.
# usage: start-nginx-lb.sh PORT BACKEND_PORT...   (env CPU, WORKERS=1, BALANCE=roundrobin|leastconn)
set -euo pipefail
port=$1; shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/netmod-peer-nginx-lb.XXXXXX")
balance=
[ "${BALANCE:-roundrobin}" = leastconn ] && balance='least_conn;'
upstreams=
for b in "$@"; do upstreams+="    server 127.0.0.1:$b max_fails=1 fail_timeout=2s;"$'\n'; done
cat >"$dir/nginx.conf" <<CONF
worker_processes ${WORKERS:-1};
pid nginx.pid;
error_log error.log warn;
worker_rlimit_nofile 19500;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000;
  upstream pool {
    $balance
$upstreams    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    location / {
      proxy_pass http://pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_next_upstream error timeout;
    }
  }
}
CONF
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
${CPU:+taskset -c "$CPU"} nginx -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 100); do [ -s "$dir/nginx.pid" ] && break; sleep 0.05; done
cat "$dir/nginx.pid"
