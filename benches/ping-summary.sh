#!/usr/bin/env bash
# Medians (min–max) and the ratio to Redis from the raw lines of benches/ping_vs_redis.sh.
# usage: benches/ping_vs_redis.sh > ping.log; benches/ping-summary.sh ping.log
set -euo pipefail
python3 - "$@" <<'PY'
import re, statistics as st, sys
v = {}
for line in open(sys.argv[1]):
    for name, depth, rest in re.findall(r"(netmod_ping|redis_cpu)_p(\d+) (.*)", line):
        f = dict(kv.split("=") for kv in rest.split())
        v.setdefault((name, depth, "rps"), []).append(float(f["rps"]))
        v.setdefault((name, depth, "cpu"), []).append(float(f["server_cpu_us_per_req"]))
    for depth, rps in re.findall(r"redis_ping_p(\d+)_rps=([\d.]+)", line):
        v.setdefault(("redis_ping", depth, "rps"), []).append(float(rps))
def m(k):
    xs = v[k]
    return st.median(xs), min(xs), max(xs)
for depth in ("1", "16"):
    (n, nlo, nhi), (r, rlo, rhi) = m(("netmod_ping", depth, "rps")), m(("redis_ping", depth, "rps"))
    print(f"pipeline={depth} rps netmod={n:.0f} ({nlo:.0f}-{nhi:.0f}) redis={r:.0f} ({rlo:.0f}-{rhi:.0f}) ratio={n / r:.2f}")
    (n, nlo, nhi), (r, rlo, rhi) = m(("netmod_ping", depth, "cpu")), m(("redis_cpu", depth, "cpu"))
    print(f"pipeline={depth} cpu_us_per_req netmod={n:.3f} ({nlo:.3f}-{nhi:.3f}) redis={r:.3f} ({rlo:.3f}-{rhi:.3f}) ratio={n / r:.2f}")
PY
