#!/usr/bin/env bash
# The document cache under a steady writer: `loadgen http` over 1,000 documents, read-only and
# with 10 % PUTs, against test-server's HTTP front (db-server on a fresh SQLite file, both
# --threads 1 on core 0, loadgen on core 1). For each build and round: the requests, the GETs
# among them (the front's cache hits + misses from /metrics), the cache hit ratio, the GETs per
# second and the servers' CPU per request. Rounds interleave builds A and B (B's loadgen for
# both) so that machine noise falls on both alike; then medians per build and mix, and the
# mixed run's GET throughput as a ratio of the read-only run's.
# usage: benches/cache_mix.sh A_BIN_DIR B_BIN_DIR   (env: SECS=5 RUNS=3 DOCS=1000 PUTS=10
#        CONNS=50, PCTS="0 10": the PUT percentages run, 0 first; "0 10 100" adds the cost of
#        a PUT alone; B alone: benches/cache_mix.sh target/release target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?A_BIN_DIR} b=${2:?B_BIN_DIR}
secs=${SECS:-5} runs=${RUNS:-3} docs=${DOCS:-1000} puts=${PUTS:-10} conns=${CONNS:-50}
pcts=${PCTS:-0 $puts}
export NETMOD_SECRET=bench-secret RUST_LOG=warn
. benches/common.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

counter() { # http_port name -> value
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

run_round() { # label bin_dir round
  local label=$1 bin=$2 round=$3 port http db ts
  start_sqlite_stack "$bin" mix --argon2-memory-kib 64 --insecure-http-writes
  for pct in $pcts; do
    local h0 m0 h1 m1 t0 t1 out n gets
    h0=$(counter "$http" netmod_doc_cache_hits_total) m0=$(counter "$http" netmod_doc_cache_misses_total)
    t0=$(ticks "$ts" "$db")
    out=$(taskset -c 1 "$b/loadgen" http --addr "127.0.0.1:$http" --conns "$conns" \
      --duration "$secs" --docs "$docs" --put-percent "$pct" 2>&1)
    t1=$(ticks "$ts" "$db")
    h1=$(counter "$http" netmod_doc_cache_hits_total) m1=$(counter "$http" netmod_doc_cache_misses_total)
    n=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
    gets=$((h1 - h0 + m1 - m0))
    awk -v l="$label" -v r="$round" -v pct="$pct" -v n="$n" -v g="$gets" -v h=$((h1 - h0)) \
      -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$secs" -v last="$(echo "$out" | tail -1)" 'BEGIN {
        printf "build=%s round=%d put_percent=%d requests=%d gets=%d hit_ratio=%.4f get_rps=%.0f servers_cpu_us_per_req=%.2f %s\n",
          l, r, pct, n, g, (g ? h / g : 0), g / s, t * 1e6 / hz / n, last }'
  done
  kill "$ts" "$db"; wait "$ts" "$db" 2>/dev/null || true
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), secs=$secs docs=$docs puts=$puts% conns=$conns, A=$a B=$b (loadgen from B)"
for round in $(seq "$runs"); do
  run_round A "$a" "$round"
  run_round B "$b" "$round"
done | tee "$work/raw"

python3 - "$work/raw" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    rows.setdefault((f["build"], int(f["put_percent"])), []).append(f)
med = lambda rs, k: st.median(float(r[k]) for r in rs)
for build in sorted({b for b, _ in rows}):
    pcts = sorted(p for b, p in rows if b == build)
    base = med(rows[(build, 0)], "get_rps")
    for p in pcts:
        rs = rows[(build, p)]
        print(f"median build={build} put_percent={p} rounds={len(rs)} rps={med(rs, 'rps'):.0f} "
              f"get_rps={med(rs, 'get_rps'):.0f} ({med(rs, 'get_rps') / base:.2f}x read-only) "
              f"hit_ratio={med(rs, 'hit_ratio'):.4f} servers_cpu_us_per_req={med(rs, 'servers_cpu_us_per_req'):.2f}")
PY
