#!/usr/bin/env bash
# Medians over several saved runs of benches/ab.sh (their raw `build=… round=…` lines), per
# build and shape, and B's ratio to A: more rounds than one run gives, on a noisy machine.
# usage: benches/ab-medians.sh ab-run1.log ab-run2.log …
set -euo pipefail
cat "$@" | python3 -c '
import re, statistics as st, sys
d = {}
for l in sys.stdin:
    m = re.match(r"build=(\w) round=\d+ conns=\d+ pipeline=(\w+) rps=([\d.]+).*servers_cpu_us_per_req=([\d.]+)", l)
    if m:
        d.setdefault((m[1], m[2]), []).append((float(m[3]), float(m[4])))
for shape in sorted({s for _, s in d}):
    a, b = d.get(("A", shape), []), d.get(("B", shape), [])
    if not a or not b:
        continue
    ar, br = st.median(x[0] for x in a), st.median(x[0] for x in b)
    ac, bc = st.median(x[1] for x in a), st.median(x[1] for x in b)
    print(f"pipeline={shape} rounds={len(a)}+{len(b)} A rps={ar:.0f} cpu_us={ac:.2f} | "
          f"B rps={br:.0f} cpu_us={bc:.2f} | B/A rps={br / ar:.3f} cpu={bc / ac:.3f}")
'
