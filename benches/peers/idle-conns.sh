#!/usr/bin/env bash
# Memory per idle connection: opens N connections to 127.0.0.1:PORT, waits 2 s, prints the RSS
# growth of process PID per connection, checks the server still answers HTTP_PATH (if given),
# then closes them.
# usage: idle-conns.sh PID PORT N [HTTP_PATH]
set -euo pipefail
pid=$1 port=$2 n=$3 path=${4:-}
limit=$(ulimit -Hn) need=$((n + 1000))
ulimit -n $((need < limit ? need : limit))
python3 - "$pid" "$port" "$n" "$path" <<'PY'
import socket, sys, time

pid, port, n, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

time.sleep(0.5)
before = rss_kb()
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
time.sleep(2)
after = rss_kb()
answers = "skipped"
if path:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answers = "yes" if c.recv(64).startswith(b"HTTP/1.1 2") else "no"
open_now = 0
for s in held:
    s.setblocking(False)
    try:
        open_now += s.recv(1) != b""
    except BlockingIOError:
        open_now += 1
    except OSError:
        pass
    s.close()
print(f"conns={n} still_open={open_now} rss_before_kb={before} rss_after_kb={after} "
      f"per_conn_bytes={(after - before) * 1024 // max(n, 1)} serves_after={answers}")
PY
