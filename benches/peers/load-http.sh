#!/usr/bin/env bash
# Loads URL with one wrk thread and prints one line: rps= p50_ms= p99_ms= errors= and, given the
# servers' PIDs, what they spent per request (from /proc: utime + stime, and utime alone).
# usage: load-http.sh URL [CONNS=64] [SECS=10]
#   CLIENT_CPU=1   core for wrk (empty: not pinned)
#   SERVER_PIDS    adds others_cores= cpu_us_per_req= user_us_per_req=
#   BACKEND_PIDS   (a proxy's backends) adds backend_us_per_req=
# others_cores: CPU used during the run by everything except wrk and those processes, in cores;
# above ~0.1 something disturbed the run.
set -euo pipefail
url=$1 conns=${2:-64} secs=${3:-10} cpu=${CLIENT_CPU-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
sum_field() { # FIELD PID... : sum of that /proc/PID/stat field
  local f=$1 total=0 p; shift
  for p in "$@"; do total=$((total + $(awk -v f="$f" '{print $f}' "/proc/$p/stat"))); done
  echo "$total"
}
cpu_of() { echo $(( $(sum_field 14 "$@") + $(sum_field 15 "$@") )); }
machine() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
children() { awk '{print $16 + $17}' "/proc/$$/stat"; }
# shellcheck disable=SC2086  # the PID lists are word lists
read_all() { echo "$(cpu_of ${SERVER_PIDS:-}) $(sum_field 14 ${SERVER_PIDS:-}) $(cpu_of ${BACKEND_PIDS:-}) $(machine) $(children)"; }
read -r s0 u0 b0 m0 c0 <<<"$(read_all)"
out=$(${cpu:+taskset -c "$cpu"} wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" 2>&1)
read -r s1 u1 b1 m1 c1 <<<"$(read_all)"
echo "$out" | awk -v srv=$((s1 - s0)) -v usr=$((u1 - u0)) -v bk=$((b1 - b0)) \
  -v others=$(( (m1 - m0) - (s1 - s0) - (b1 - b0) - (c1 - c0) )) -v secs="$secs" \
  -v hz="$(getconf CLK_TCK)" -v servers="${SERVER_PIDS:-}" -v backends="${BACKEND_PIDS:-}" '
  function to_ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
  $1 == "50%" { p50 = to_ms($2) }
  $1 == "99%" { p99 = to_ms($2) }
  /requests in/ { requests = $1 }
  /^Requests\/sec:/ { rps = $2 }
  /Non-2xx or 3xx responses:/ { errors += $NF }
  /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
  END {
    printf "rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d", rps, p50, p99, errors
    if (servers != "") printf " others_cores=%.2f", others / hz / secs
    if (servers != "" && requests > 0)
      printf " cpu_us_per_req=%.2f user_us_per_req=%.2f", srv / hz * 1e6 / requests, usr / hz * 1e6 / requests
    if (backends != "" && requests > 0) printf " backend_us_per_req=%.2f", bk / hz * 1e6 / requests
    printf "\n"
  }'
