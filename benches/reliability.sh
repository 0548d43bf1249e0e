#!/usr/bin/env bash
# Reruns the hardening measurements of docs/RELIABILITY.md, bounded in time, on loopback only:
#  1. the HTTP/1.1 conformance battery (front, proxy, and where nginx differs);
#  2. slowhttptest in slowloris (-H), slow body (-B) and slow read (-X) modes, 1,000 connections,
#     against test-server's HTTP front and the proxy in front of it;
#  3. a normal client's rps (wrk) with and without 5,000 slowloris connections held;
#  4. sslscan and testssl against a TLS listener;
#  5. benches/cycles.sh: 1 million connect/request/close cycles per server, RSS sampled;
#  6. benches/faults.sh (as root: it mounts a tmpfs): kill -9s and a full disk under load;
#  7. the engine's tests under LeakSanitizer (benches/lsan.sh);
#  8. every fuzz target for FUZZ_SECS under AddressSanitizer.
# usage: benches/reliability.sh   (env: SLOW_SECS=45 WRK_SECS=10 CYCLES=1000000 FUZZ_SECS=60;
#        about 25 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
slow_secs=${SLOW_SECS:-45} wrk_secs=${WRK_SECS:-10}
command -v slowhttptest >/dev/null || { apt-get install -y -qq slowhttptest >/dev/null; }
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
ulimit -n "$(ulimit -Hn)"
echo "# $(date -u '+%F %T') UTC, $(nproc) cores"

echo "## conformance battery"
cargo test -q --test conformance -- --nocapture 2>&1 | grep -E "nginx differs|test result|expected" || true

cargo build --release -q --bin test-server --bin db-server --bin proxy
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
. benches/common.sh

dbp=$(free_port) fp=$(free_port) hp=$(free_port) pp=$(free_port) pa=$(free_port)
RUST_LOG=warn "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/r.db" --threads 1 >"$work/db.log" 2>&1 &
pids+=($!); wait_port "$dbp"
# The per-IP connection cap is off: every slow client and the probe share 127.0.0.1 here, and
# what is measured is how the timeouts alone hold up against 1,000 and 5,000 slow connections.
RUST_LOG=warn taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$fp" --http-listen "127.0.0.1:$hp" \
  --db "127.0.0.1:$dbp" --threads 1 --insecure-http-writes --max-connections-per-ip 0 >"$work/ts.log" 2>&1 &
pids+=($!); wait_port "$hp"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hp/health" >/dev/null && break; sleep 0.05; done
curl -sf -X PUT -d '{"content":"reliability"}' "http://127.0.0.1:$hp/docs/example" >/dev/null
RUST_LOG=warn taskset -c 0 "$bin/proxy" --listen "127.0.0.1:$pp" --admin "127.0.0.1:$pa" --threads 1 \
  --metrics-interval 0 --backend "127.0.0.1:$hp" >"$work/px.log" 2>&1 &
pids+=($!); wait_port "$pp"
sleep 1

# slowhttptest's own summary: how many connections it held, how many the server closed, and
# whether a probe request was served during the test.
slow() { # name port mode-flags...
  local name=$1 port=$2; shift 2
  local out="$work/slow-$name"
  taskset -c 1 slowhttptest -c 1000 "$@" -r 200 -l "$slow_secs" -p 3 -x 24 -g -o "$out" \
    -u "http://127.0.0.1:$port/docs/example" >"$out.txt" 2>&1 || true
  local last; last=$(tail -n 1 "$out.csv" 2>/dev/null || echo "")
  # The last column is the probe: the connection count while a probe was served, 0 when not.
  local unavailable; unavailable=$(awk -F, 'NR > 1 && $NF == 0 {n++} END {print n + 0}' "$out.csv" 2>/dev/null || echo "?")
  echo "slow $name seconds=$slow_secs last_sample(seconds,closed,pending,connected,available)=${last:-none} seconds_unavailable=$unavailable"
}
echo "## slowhttptest, 1000 connections"
for target in "front $hp" "proxy $pp"; do
  read -r name port <<<"$target"
  slow "$name-slowloris" "$port" -H -i 10
  slow "$name-slowbody" "$port" -B -i 10 -s 8192 -t PUT
  slow "$name-slowread" "$port" -X -w 10 -y 20 -n 5 -z 32 -k 3
done

echo "## a normal client with 5000 slowloris connections held (front)"
# wrk through load-http.sh: rps, and test-server's CPU per request. The 5,000 connections are held
# by benches/loris.py (one epoll loop, a header line every 5 s, reopened when the server closes
# them at its 30 s deadline), which shares the client's core but takes little of it.
ts_pid=${pids[1]}
base=$(SERVER_PIDS="$ts_pid" CLIENT_CPU=1 bash benches/peers/load-http.sh "http://127.0.0.1:$hp/docs/example" 16 "$wrk_secs")
taskset -c 1 python3 benches/loris.py 127.0.0.1 "$hp" 5000 5 $((wrk_secs + 20)) >"$work/loris5k.txt" 2>&1 &
lp=$!; pids+=("$lp")
for _ in $(seq 100); do [ "$(ls /proc/"$ts_pid"/fd | wc -l)" -ge 5000 ] && break; sleep 0.1; done
held=$(SERVER_PIDS="$ts_pid" CLIENT_CPU=1 bash benches/peers/load-http.sh "http://127.0.0.1:$hp/docs/example" 16 "$wrk_secs")
conns=$(ls /proc/"$ts_pid"/fd | wc -l)
wait "$lp" || true
echo "loris5000 test_server_fds_during=$conns attacker: $(tail -n 1 "$work/loris5k.txt")"
echo "loris5000 baseline $base"
echo "loris5000 held     $held"

echo "## TLS scanners (test-server with a throwaway certificate)"
command -v sslscan >/dev/null || apt-get install -y -qq sslscan >/dev/null || true
command -v testssl >/dev/null || apt-get install -y -qq testssl.sh >/dev/null || true
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
tf=$(free_port) th=$(free_port)
RUST_LOG=warn "$bin/test-server" --listen "127.0.0.1:$tf" --http-listen "127.0.0.1:$th" --db "127.0.0.1:$dbp" \
  --threads 1 --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$work/tls.log" 2>&1 &
pids+=($!); wait_port "$th"
if command -v sslscan >/dev/null; then
  sslscan --no-colour "127.0.0.1:$th" | grep -E "^(SSLv|TLSv)|Accepted|Preferred|renegotiation|Compression|heartbleed" || true
fi
if command -v testssl >/dev/null; then
  timeout 400 testssl --quiet --color 0 --warnings off --fast --ip 127.0.0.1 "https://127.0.0.1:$th" \
    | grep -E "offered|vulnerable|VULNERABLE|NOT ok" || true
fi

echo "## resource bounds: connect/request/close cycles with RSS sampled (benches/cycles.sh)"
CYCLES=${CYCLES:-1000000} bash benches/cycles.sh

echo "## the engine's tests under LeakSanitizer (benches/lsan.sh)"
bash benches/lsan.sh

if [ "$(id -u)" = 0 ]; then
  echo "## faults under load (benches/faults.sh)"
  bash benches/faults.sh
fi

echo "## fuzzing, ${FUZZ_SECS:-60} s per target under AddressSanitizer"
bash fuzz/run.sh "${FUZZ_SECS:-60}" address
