#!/usr/bin/env bash
# The cost of TLS 1.3: the same loads plain and over TLS, netmod next to nginx (OpenSSL), servers
# pinned to core 0, the client (wrk or loadgen) on core 1, RUNS rounds interleaved. Raw lines on
# stdout; see docs/BENCHMARKS.md ("TLS").
#
#   http   GET /docs/example on keep-alive connections (wrk, 64 conns): test-server's HTTP front
#          (1 loop, cache on) and nginx (1 worker), http:// and https://. The per-request cost of
#          record encryption.
#   hs     the same with "Connection: close": a full TLS handshake (ECDSA P-256, X25519) per
#          request. The cost of handshakes.
#   frames loadgen ping, 50 connections x 16 in flight, plain and TLS (test-server --tls-on frames).
#
# Certificates: a throwaway self-signed ECDSA P-256 one made with openssl for 127.0.0.1.
# usage: benches/tls.sh   (env: SECS=10 RUNS=3 PEERS=benches/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10} runs=${RUNS:-3} peers=${PEERS:-benches/peers}
bash "$peers/install.sh" >/dev/null
cargo build --release -q --bin test-server --bin db-server --bin loadgen
bin=target/release
ulimit -n "$(ulimit -Hn)"
export CLIENT_CPU=1
content="This is the example document, kept short for throughput tests."

. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# db-server (plain, core 0) for the HTTP front's document.
dbp=$(free_port)
RUST_LOG=warn taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/docs.db" --threads 1 \
  >"$work/db.log" 2>&1 &
db=$!
pids+=("$db")
wait_port "$dbp"

# test-server with TLS on the HTTP front or the frames (per $1: http | frames | none). Prints "pid frames_port http_port".
start_netmod() {
  local fp hp tls=()
  fp=$(free_port) hp=$(free_port)
  [ "$1" != none ] && tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --tls-on "$1")
  RUST_LOG=warn taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$fp" --http-listen "127.0.0.1:$hp" \
    --db "127.0.0.1:$dbp" --threads 1 --insecure-http-writes "${tls[@]}" --ping-interval 0 >"$work/ts.log" 2>&1 &
  local ts=$!
  wait_port "$hp"
  local scheme=http
  [ "$1" = http ] && scheme=https
  for _ in $(seq 100); do curl -sfk "$scheme://127.0.0.1:$hp/health" >/dev/null && break; sleep 0.05; done
  curl -sfk -X PUT -d "{\"content\":\"$content\"}" "$scheme://127.0.0.1:$hp/docs/example" >/dev/null
  echo "$ts $fp $hp"
}

# nginx (1 worker, core 0) from the peers' docs config, with or without ssl. Prints the master and worker PIDs.
start_nginx() { # port tls(0|1)
  local dir
  dir=$(mktemp -d "$work/nginx.XXXXXX")
  sed -e "s/PORT_HERE/$1/" -e "s/WORKERS_HERE/1/" "$peers/nginx-docs.conf" >"$dir/nginx.conf"
  if [ "$2" = 1 ]; then
    sed -i -e "s|listen 127.0.0.1:$1 reuseport|listen 127.0.0.1:$1 ssl reuseport|" \
      -e "s|default_type application/json;|default_type application/json; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.3;|" \
      "$dir/nginx.conf"
  fi
  taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf"
  for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
  local master
  master=$(cat "$dir/nginx.pid")
  echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), secs=$secs"
for round in $(seq "$runs"); do
  for test in http hs; do
    extra=()
    [ "$test" = hs ] && extra=(-H "Connection: close")
    for who in netmod nginx; do
      for scheme in http https; do
        [ "$test" = hs ] && [ "$scheme" = http ] && continue
        tls=0
        [ "$scheme" = https ] && tls=1
        if [ "$who" = netmod ]; then
          read -r ts _ port < <(start_netmod "$([ $tls = 1 ] && echo http || echo none)")
          pids+=("$ts")
          server=$ts
        else
          port=$(free_port)
          server=$(start_nginx "$port" "$tls")
          pids+=($server)
        fi
        url="$scheme://127.0.0.1:$port/docs/example"
        if [ "$test" = hs ]; then
          # load-http.sh takes no extra wrk flags: run wrk itself, the same way.
          t0=$(for p in $server; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc)
          out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency "${extra[@]}" "$url" 2>&1)
          t1=$(for p in $server; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc)
          line=$(echo "$out" | awk -v dt=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
            function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
            /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /requests in/ { n = $1 } /Requests\/sec:/ { rps = $2 }
            /Non-2xx or 3xx responses:/ { err += $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
            END { printf "rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d cpu_us_per_req=%.2f\n", rps, p50, p99, err, dt / hz * 1e6 / n }')
        else
          line=$(SERVER_PIDS="$server" bash "$peers/load-http.sh" "$url" 64 "$secs")
        fi
        echo "round=$round test=$test server=$who scheme=$scheme $line"
        stop $server
      done
    done
  done
  for scheme in plain tls; do
    read -r ts fp _ < <(start_netmod "$([ $scheme = tls ] && echo frames || echo none)")
    pids+=("$ts")
    t0=$(awk '{print $14 + $15}' "/proc/$ts/stat")
    tlsflag=()
    [ $scheme = tls ] && tlsflag=(--tls-ca "$work/cert.pem" --tls-name 127.0.0.1)
    last=$(taskset -c 1 "$bin/loadgen" ping --addr "127.0.0.1:$fp" --conns 50 --pipeline 16 \
      --duration "$((secs / 2))" "${tlsflag[@]}" 2>/dev/null | tail -1)
    t1=$(awk '{print $14 + $15}' "/proc/$ts/stat")
    rps=$(echo "$last" | sed -E 's/.*rps=([0-9.]+).*/\1/')
    cpu=$(awk -v dt=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v rps="$rps" -v s="$((secs / 2))" \
      'BEGIN { printf "%.2f", dt / hz * 1e6 / (rps * s) }')
    echo "round=$round test=frames server=netmod scheme=$scheme $last cpu_us_per_req=$cpu"
    stop "$ts"
  done
done
