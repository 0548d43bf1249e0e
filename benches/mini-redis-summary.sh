#!/usr/bin/env bash
# Medians (min–max) and mini_redis / redis-server ratios from benches/mini_redis_vs_redis.sh.
# usage: benches/mini_redis_vs_redis.sh > mr.log; benches/mini-redis-summary.sh mr.log
set -euo pipefail
python3 - "$@" <<'PY'
import re, statistics as st, sys
v = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if "test" in f:
        for what in ("rps", "server_cpu_us_per_req"):
            v.setdefault((f["test"], f["pipeline"], what, f["server"]), []).append(float(f[what]))
    elif "idle_10000" in line:
        print(line.strip())
def m(xs):
    return st.median(xs), min(xs), max(xs)
for test in ("ping_mbulk", "set", "get"):
    for depth in ("1", "16"):
        for what, fmt in (("rps", "{:.0f}"), ("server_cpu_us_per_req", "{:.3f}")):
            a, alo, ahi = m(v[(test, depth, what, "mini")])
            b, blo, bhi = m(v[(test, depth, what, "redis")])
            f = lambda x: fmt.format(x)
            print(f"{test} pipeline={depth} {what} mini_redis={f(a)} ({f(alo)}-{f(ahi)}) "
                  f"redis={f(b)} ({f(blo)}-{f(bhi)}) ratio={a / b:.2f}")
PY
