#!/usr/bin/env bash
# A/B of two builds, rounds interleaved A, B, A, B… so that machine noise falls on both alike:
# the frame path end to end (loadgen frames --op get through test-server → db-server on SQLite,
# 50 connections at pipeline 1 and 16) and the HTTP front (wrk -t1 -c64 GET /docs/example,
# answered from the document cache). Servers --threads 1 on core 0, the client on core 1 (B's
# loadgen for both). Prints the raw lines, then per build and shape the median rps and the
# servers' CPU µs per request, and B's ratio to A.
# usage: benches/ab.sh A_BIN_DIR B_BIN_DIR   (env: SECS=5 RUNS=3; needs wrk and curl;
#        PG_URL=postgresql://…: db-server on that PostgreSQL instead of a fresh SQLite file;
#        PG_URL_A=…: build A on another one, when the builds need different set-ups)
#   e.g. a worktree of the old commit built with CARGO_TARGET_DIR=/tmp/old, then
#        benches/ab.sh /tmp/old/release target/release
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?A_BIN_DIR} b=${2:?B_BIN_DIR}
secs=${SECS:-5} runs=${RUNS:-3}
export NETMOD_SECRET=bench-secret RUST_LOG=warn
. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

run_round() { # label bin_dir round
  local label=$1 bin=$2 round=$3 dbp port http db ts
  dbp=$(free_port) port=$(free_port) http=$(free_port)
  rm -f "$work/ab.db"*
  local backend=(--sqlite "$work/ab.db") url=${PG_URL:-}
  # PG_URL_A: another database for build A, when the two builds need different set-ups.
  [ "$label" = A ] && [ -n "${PG_URL_A:-}" ] && url=$PG_URL_A
  [ -n "$url" ] && backend=(--postgres "$url")
  taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" "${backend[@]}" --threads 1 \
    >"$work/db.log" 2>&1 &
  db=$!
  wait_port "$dbp"
  NETMOD_ADMIN_SECRET=$NETMOD_SECRET taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$port" \
    --http-listen "127.0.0.1:$http" --db "127.0.0.1:$dbp" --threads 1 --argon2-memory-kib 64 \
    --insecure-http-writes \
    >"$work/ts.log" 2>&1 &
  ts=$!
  pids+=("$ts" "$db")
  wait_port "$port"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.05; done
  for shape in "50 1" "50 16"; do
    read -r conns depth <<<"$shape"
    local t0 t1 out n us
    t0=$(ticks "$ts" "$db")
    out=$(taskset -c 1 "$b/loadgen" frames --op get --addr "127.0.0.1:$port" --conns "$conns" \
      --pipeline "$depth" --duration "$secs" --docs 1000)
    t1=$(ticks "$ts" "$db")
    n=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
    us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    echo "build=$label round=$round conns=$conns pipeline=$depth $(echo "$out" | tail -1) servers_cpu_us_per_req=$us"
  done
  curl -sf -X PUT -d '{"content":"Hello from netmod: this document lives in db-server."}' \
    "http://127.0.0.1:$http/docs/example" >/dev/null
  local t0 t1 out rps n us
  t0=$(ticks "$ts" "$db")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$http/docs/example")
  t1=$(ticks "$ts" "$db")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
  echo "build=$label round=$round conns=64 pipeline=http rps=$rps servers_cpu_us_per_req=$us"
  kill "$ts" "$db"; wait "$ts" "$db" 2>/dev/null || true
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, secs=$secs, A=$a B=$b (loadgen from B), db=$([ -n "${PG_URL:-}" ] && echo PostgreSQL || echo SQLite)"
for round in $(seq "$runs"); do
  run_round A "$a" "$round"
  run_round B "$b" "$round"
done | tee "$work/raw"

awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["build"] " " f["conns"] "x" f["pipeline"]; n[k]++
    rps[k, n[k]] = f["rps"]; cpu[k, n[k]] = f["servers_cpu_us_per_req"] }
  function median(arr, key, m,   v, i, j, t) {
    for (i = 1; i <= m; i++) v[i] = arr[key, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
  END {
    for (k in n) { mr[k] = median(rps, k, n[k]); mc[k] = median(cpu, k, n[k]) }
    for (s in n) { split(s, p, " "); if (p[1] != "A") continue
      shape = p[2]; ka = "A " shape; kb = "B " shape
      printf "median %s: A rps=%.0f cpu_us=%.2f | B rps=%.0f cpu_us=%.2f | B/A rps=%.3f cpu=%.3f\n",
        shape, mr[ka], mc[ka], mr[kb], mc[kb], mr[kb] / mr[ka], mc[kb] / mc[ka] }
  }' "$work/raw"
