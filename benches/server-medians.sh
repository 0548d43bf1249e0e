#!/usr/bin/env bash
# Medians per server (and connection count) of the raw `round=… server=… rps=…` lines that
# benches/http_docs.sh and benches/proxy_lb.sh print, and each server's ratio to REF.
# usage: benches/server-medians.sh LOG REF     e.g. benches/server-medians.sh http.log nginx
set -euo pipefail
python3 - "$1" "$2" <<'PY'
import re, statistics as st, sys
log, ref = sys.argv[1], sys.argv[2]
keys = ("rps", "cpu_us_per_req", "user_us_per_req")
d = {}
for line in open(log):
    if not line.startswith("round="):
        continue
    f = dict(kv.split("=", 1) for kv in line.split())
    g = d.setdefault((f.get("conns", "-"), f["server"]), {})
    for k in keys:
        if k in f:
            g.setdefault(k, []).append(float(f[k]))
for (conns, server), g in sorted(d.items()):
    r = d.get((conns, ref), {})
    parts = []
    for k in keys:
        if k in g:
            m = st.median(g[k])
            ratio = f" ({m / st.median(r[k]):.2f}x {ref})" if k in r and server != ref else ""
            parts.append(f"{k}={m:.2f}{ratio}")
    print(f"conns={conns} server={server} rounds={len(g['rps'])} " + " ".join(parts))
PY
