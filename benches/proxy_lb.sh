#!/usr/bin/env bash
# The proxy against nginx and HAProxy as load balancers, with the peer scripts of benches/peers: three
# nginx backends (1 worker each) serving /docs/example on core 1 beside wrk; each balancer alone
# on core 0 (netmod proxy --threads 1, RUST_LOG=warn); round-robin at 64 and 512 connections and
# least-connections at 64, RUNS rounds interleaved. Then: the proxy's memory per proxied
# connection pair with 5,000 idle keep-alive clients, and the time from killing a backend to its
# removal from rotation, idle and under load. Raw lines on stdout; see docs/BENCHMARKS.md.
# `netmod-rr-default` is netmod-rr with RUST_LOG unset: the configuration users get.
# Lines read `round=N server=LB conns=C …` (benches/server-medians.sh LOG nginx-rr).
# usage: benches/proxy_lb.sh   (env: SECS=10 RUNS=3 PEERS=benches/peers IDLE=5000
#                               CONNS="64 512"; TAIL=0 skips the memory and removal parts)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} peers=${PEERS:-benches/peers} idle=${IDLE:-5000}
conns_list=${CONNS:-64 512} tail=${TAIL:-1}
bash "$peers/install.sh" >/dev/null
cargo build --release -q --bin proxy
bin=target/release
ulimit -n "$(ulimit -Hn)"
export CLIENT_CPU=1
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT

. benches/common.sh
workers() { pgrep -P "$1" | tr '\n' ' '; }
start_proxy() { # port admin_port log strategy backend_ports... -> pid
  local port=$1 admin=$2 log=$3 strategy=$4; shift 4
  local args=()
  for b in "$@"; do args+=(--backend "127.0.0.1:$b"); done
  local run=(env RUST_LOG="${PROXY_LOG:-warn}")
  [ "${PROXY_LOG:-}" = - ] && run=(env -u RUST_LOG)
  "${run[@]}" taskset -c 0 "$bin/proxy" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
    --threads 1 --strategy "$strategy" --metrics-interval 0 --check-interval 1 --fall 2 --rise 2 \
    "${args[@]}" >"$log" 2>&1 &
  local pid=$!
  wait_port "$port"
  echo "$pid"
}

b1=$(free_port) b2=$(free_port) b3=$(free_port)
for b in $b1 $b2 $b3; do pids+=("$(bash "$peers/start-nginx-docs.sh" "$b" 1 1)"); done
bw="$(for p in "${pids[@]: -3}"; do workers "$p"; done)"
np=$(free_port) na=$(free_port); nppid=$(start_proxy "$np" "$na" "$work/rr.log" round_robin $b1 $b2 $b3); pids+=("$nppid")
nd=$(free_port) nda=$(free_port); ndpid=$(PROXY_LOG=- start_proxy "$nd" "$nda" "$work/rrd.log" round_robin $b1 $b2 $b3); pids+=("$ndpid")
nc=$(free_port) nca=$(free_port); ncpid=$(start_proxy "$nc" "$nca" "$work/lc.log" least_connections $b1 $b2 $b3); pids+=("$ncpid")
gl=$(free_port); glpid=$(CPU=0 bash "$peers/start-nginx-lb.sh" "$gl" $b1 $b2 $b3); pids+=("$glpid")
hl=$(free_port); hlpid=$(CPU=0 bash "$peers/start-haproxy-lb.sh" "$hl" $b1 $b2 $b3); pids+=("$hlpid")
gc=$(free_port); gcpid=$(CPU=0 BALANCE=leastconn bash "$peers/start-nginx-lb.sh" "$gc" $b1 $b2 $b3); pids+=("$gcpid")
hc=$(free_port); hcpid=$(CPU=0 BALANCE=leastconn bash "$peers/start-haproxy-lb.sh" "$hc" $b1 $b2 $b3); pids+=("$hcpid")
sleep 3
for p in $np $gl $hl; do echo "check port=$p $(bash "$peers/check-docs.sh" "$p" || true)"; done

load() { # server_pids port conns
  SERVER_PIDS="$1" BACKEND_PIDS="$bw" bash "$peers/load-http.sh" "http://127.0.0.1:$2/docs/example" "$3" "$secs"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), secs=$secs"
for run in $(seq "$runs"); do
  for c in $conns_list; do
    echo "round=$run server=netmod-rr conns=$c $(load "$nppid" "$np" $c) rss_kb=$(rss_kb "$nppid")"
    echo "round=$run server=netmod-rr-default conns=$c $(load "$ndpid" "$nd" $c)"
    echo "round=$run server=nginx-rr conns=$c $(load "$(workers "$glpid")" "$gl" $c)"
    echo "round=$run server=haproxy-rr conns=$c $(load "$hlpid" "$hl" $c) rss_kb=$(rss_kb "$hlpid")"
  done
  echo "round=$run server=netmod-lc conns=64 $(load "$ncpid" "$nc" 64)"
  echo "round=$run server=nginx-lc conns=64 $(load "$(workers "$gcpid")" "$gc" 64)"
  echo "round=$run server=haproxy-lc conns=64 $(load "$hcpid" "$hc" 64)"
done
[ "$tail" = 0 ] && exit 0

# Memory per proxied pair: IDLE clients each make one keep-alive request, then sit idle.
idle_pairs() { # pid port -> line
  python3 - "$1" "$2" "$idle" <<'PY'
import socket, sys, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /docs/example HTTP/1.1\r\nHost: b\r\n\r\n")
    socks.append(s)
for s in socks:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
time.sleep(2)
after = rss()
print(f"clients={n} rss_before_kb={before} rss_after_kb={after} bytes_per_client={(after - before) * 1024 // n}")
for s in socks:
    s.close()
PY
}
ip=$(free_port) ia=$(free_port); ipid=$(start_proxy "$ip" "$ia" "$work/idle.log" round_robin $b1 $b2 $b3); pids+=("$ipid")
sleep 1
echo "idle lb=netmod $(idle_pairs "$ipid" "$ip") backend_conns=$(ls /proc/"$ipid"/fd | wc -l)"
echo "idle lb=haproxy $(idle_pairs "$hlpid" "$hl")"

# Kill to removal: a fourth backend joins a fresh proxy, is killed; time until the proxy logs it
# down, first with no traffic (active checks only: fall 2 x interval 1 s), then under load.
removal() { # under_load(0|1)
  local k kp ka kpid log t0 t1
  k=$(free_port); kpid=$(bash "$peers/start-nginx-docs.sh" "$k" 1 1)
  kp=$(free_port) ka=$(free_port); log="$work/kill$1.log"
  local ppid; ppid=$(PROXY_LOG=info start_proxy "$kp" "$ka" "$log" round_robin $b1 $k); pids+=("$ppid")
  sleep 2
  local lg=""
  if [ "$1" = 1 ]; then
    taskset -c 1 wrk -t1 -c16 -d6s "http://127.0.0.1:$kp/docs/example" >"$work/wrk$1.txt" 2>&1 &
    lg=$!; sleep 1
  fi
  t0=$(date +%s.%N); kill "$kpid"
  for _ in $(seq 1000); do grep -q "marked as unhealthy" "$log" && break; sleep 0.005; done
  t1=$(date +%s.%N)
  [ -n "$lg" ] && wait "$lg"
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk$1.txt" 2>/dev/null || true)
  echo "removal under_load=$1 seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') non_2xx=${non2xx:-0}"
  kill "$ppid"
}
removal 0
removal 1
