#!/usr/bin/env bash
# Runs examples/python_client.py against a real stack: db-server on a fresh SQLite file and
# test-server in front of it (server pings every second), on free loopback ports. Installs
# protobuf and grpcio-tools into a virtual environment under target/ the first time.
# Exit status: the client's (0 when every step did what docs/protocol.md says).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

venv=target/python-client
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    # Debian's python3 ships venv separately.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
fi
"$venv/bin/python" -c 'import google.protobuf, grpc_tools' 2>/dev/null \
  || "$venv/bin/python" -m pip install --quiet protobuf grpcio-tools

[ -x target/debug/test-server ] && [ -x target/debug/db-server ] || cargo build --quiet --bins
work=$(mktemp -d /tmp/netmod-pyclient.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

db_port=$(free_port)
target/debug/db-server --listen "127.0.0.1:$db_port" --sqlite "$work/py.db" 2>"$work/db.log" &
pids+=($!)
wait_port "$db_port" || { cat "$work/db.log"; exit 1; }
secret=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
ts_port=$(free_port)
NETMOD_ADMIN_SECRET=$secret target/debug/test-server --listen "127.0.0.1:$ts_port" \
  --http-listen 127.0.0.1:0 --db "127.0.0.1:$db_port" --threads 1 --ping-interval 1 \
  2>"$work/ts.log" &
pids+=($!)
wait_port "$ts_port" || { cat "$work/ts.log"; exit 1; }

status=0
NETMOD_SECRET=$secret "$venv/bin/python" examples/python_client.py \
  --addr "127.0.0.1:$ts_port" --user admin --wait-server-ping 5 || status=$?
if [ "$status" != 0 ]; then
  echo "--- test-server log"; tail -n 30 "$work/ts.log"
fi
exit "$status"
