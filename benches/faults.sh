#!/usr/bin/env bash
# Faults under load (docs/RELIABILITY.md), bounded in time, loopback only. Writes (HTTP PUT of a
# numbered document) and reads go through the proxy to two test-servers and db-server on SQLite
# in a size-limited tmpfs, from 8 client threads, while the script, one at a time:
#   1. kill -9s a test-server instance and restarts it;
#   2. kill -9s the other one (a proxy backend too) and restarts it;
#   3. kill -9s db-server and restarts it;
#   4. fills the tmpfs until writes fail, checks that reads still work, frees the space and
#      checks that writes resume.
# Then every acknowledged write is looked up in the SQLite file, and PRAGMA integrity_check run.
# Prints: requests sent, succeeded, failed with an error, lost (no answer at all), acknowledged
# writes missing, recovery times. The servers' logs are kept in /tmp/faults-logs. Needs root
# (mounts a tmpfs).
# usage: benches/faults.sh   (env: PHASE_SECS=4)
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${PHASE_SECS:-4}
cargo build --release -q --bin test-server --bin db-server --bin proxy
bin=$PWD/target/release
work=$(mktemp -d)
mnt="$work/disk"
mkdir -p "$mnt"
mount -t tmpfs -o size=8m tmpfs "$mnt"
pids=()
cleanup() {
  mkdir -p /tmp/faults-logs && cp "$work"/*.log /tmp/faults-logs/ 2>/dev/null || true
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  sleep 0.3; umount "$mnt" 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
. benches/common.sh
# Finer than common.sh's: recovery times are measured with it.
wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.025; done; return 1; }
now() { date +%s.%N; }

dbp=$(free_port) h1=$(free_port) h2=$(free_port) pp=$(free_port) pa=$(free_port)
start_db() { RUST_LOG=warn "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$mnt/faults.db" >>"$work/db.log" 2>&1 & echo $!; }
start_ts() { # http_port
  RUST_LOG=warn "$bin/test-server" --listen 127.0.0.1:0 --http-listen "127.0.0.1:$1" --db "127.0.0.1:$dbp" \
    --insecure-http-writes --reconnect-base 0.1 --reconnect-max 1 --breaker-open 1 >>"$work/ts$1.log" 2>&1 &
  echo $!
}
db=$(start_db); wait_port "$dbp"
t1=$(start_ts "$h1"); t2=$(start_ts "$h2"); wait_port "$h1"; wait_port "$h2"
RUST_LOG=warn "$bin/proxy" --listen "127.0.0.1:$pp" --admin "127.0.0.1:$pa" --check-interval 0.2 --fall 2 --rise 2 \
  --metrics-interval 0 --backend "127.0.0.1:$h1" --backend "127.0.0.1:$h2" >"$work/proxy.log" 2>&1 &
px=$!; pids+=("$db" "$t1" "$t2" "$px")
wait_port "$pp"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$h1/health" >/dev/null && curl -sf "http://127.0.0.1:$h2/health" >/dev/null && break; sleep 0.05; done

# The clients: 8 threads, each a keep-alive connection through the proxy, alternating a PUT of
# a new document and a GET of an old one; every answer classified; acknowledged ids written out.
python3 - "$pp" "$work" <<'PY' &
import socket, sys, threading, time, json, os
port, work = int(sys.argv[1]), sys.argv[2]
stop = os.path.join(work, "stop")
lock = threading.Lock()
totals = {"sent": 0, "ok": 0, "error": 0, "lost": 0}
acked = []
def conn():
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(30); return s
def exchange(s, raw):
    s.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(65536)
        if not c: return None
        data += c
    head, rest = data.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ")[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length": length = int(v)
    while len(rest) < length:
        c = s.recv(65536)
        if not c: return None
        rest += c
    closes = b"connection: close" in head.lower()
    return status, closes
def worker(w):
    s = conn(); i = 0
    while not os.path.exists(stop) and i < 1_000_000:
        i += 1
        name = f"w{w}-{i}"
        if i % 2:
            body = json.dumps({"content": name}).encode()
            raw = b"PUT /docs/" + name.encode() + b" HTTP/1.1\r\nHost: f\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        else:
            raw = b"GET /docs/w%d-%d HTTP/1.1\r\nHost: f\r\n\r\n" % (w, i - 1)
        try:
            r = exchange(s, raw)
        except OSError:
            r = None
        with lock:
            totals["sent"] += 1
            if r is None: totals["lost"] += 1
            elif r[0] < 300 or r[0] == 404: totals["ok"] += 1
            else: totals["error"] += 1
            if r is not None and r[0] in (200, 201) and i % 2: acked.append(name)
        if r is None or r[1]:
            try: s.close()
            except OSError: pass
            s = conn()
threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(totals, open(os.path.join(work, "totals.json"), "w"))
open(os.path.join(work, "acked.txt"), "w").write("\n".join(acked))
PY
clients=$!

recover() { # what port
  local t0 t1; t0=$(now)
  for _ in $(seq 800); do curl -sf -o /dev/null "http://127.0.0.1:$2/health" && break; sleep 0.025; done
  t1=$(now); echo "recovery $1 seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, phases of ${phase}s"
sleep "$phase"
kill -9 "$t1"; t1=$(start_ts "$h1"); pids+=("$t1"); recover "test-server-1 (kill -9, restart)" "$h1"
sleep "$phase"
kill -9 "$t2"; t2=$(start_ts "$h2"); pids+=("$t2"); recover "test-server-2 (kill -9, restart)" "$h2"
sleep "$phase"
kill -9 "$db"; db=$(start_db); pids+=("$db"); wait_port "$dbp"; recover "db-server (kill -9, restart; front healthy again)" "$h1"
sleep "$phase"
# Full disk: a filler takes what is left of the tmpfs.
dd if=/dev/zero of="$mnt/filler" bs=64k 2>/dev/null || true
sleep "$phase"
full_get=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pp/docs/w0-1")
full_put=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"content":"x"}' "http://127.0.0.1:$pp/docs/full-disk")
rm -f "$mnt/filler"
t0=$(now)
for _ in $(seq 400); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"content":"y"}' "http://127.0.0.1:$pp/docs/after-full")
  [[ $code == 20* ]] && break; sleep 0.025
done
echo "full_disk read=$full_get write=$full_put write_after_freeing=$code in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')s"
sleep 1
touch "$work/stop"; wait "$clients"
cat "$work/totals.json"; echo
# Every acknowledged write must be in the database (db-server stopped first: a consistent file).
kill "$db"; sleep 0.5
python3 - "$mnt/faults.db" "$work/acked.txt" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
have = {r[0] for r in db.execute("SELECT name FROM docs")}
acked = [l for l in open(sys.argv[2]).read().split("\n") if l]
missing = [a for a in acked if a not in have]
print(f"acknowledged_writes={len(acked)} missing={len(missing)} integrity_check={db.execute('PRAGMA integrity_check').fetchone()[0]}")
PY
grep -h "marked as" "$work/proxy.log" | sed 's/^/proxy: /' | head -10
