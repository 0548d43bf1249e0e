#!/usr/bin/env bash
# nginx with nginx-docs.conf on 127.0.0.1:PORT, in a fresh prefix directory; prints its master PID.
# usage: start-nginx-docs.sh PORT [WORKERS=1] [CPU]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=$1 workers=${2:-1} cpu=${3:-}
dir=$(mktemp -d "${TMPDIR:-/tmp}/netmod-peer-nginx.XXXXXX")
sed -e "s/PORT_HERE/$port/" -e "s/WORKERS_HERE/$workers/" "$here/nginx-docs.conf" >"$dir/nginx.conf"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
${cpu:+taskset -c "$cpu"} nginx -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 100); do [ -s "$dir/nginx.pid" ] && break; sleep 0.05; done
cat "$dir/nginx.pid"
