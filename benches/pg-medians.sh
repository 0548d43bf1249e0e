#!/usr/bin/env bash
# Medians of the raw lines benches/db_postgres.sh prints, and db-server's ratio to pgbench
# going direct, per workload (read/write × pipeline 1/16).
# usage: benches/pg-medians.sh LOG
set -euo pipefail
python3 - "$1" <<'PY'
import re, statistics as st, sys
d = {}
for line in open(sys.argv[1]):
    m = re.match(r"round=\d+ (dbserver_pg|pgbench)_(read|write)_(p\d+) (?:rps|statements_per_s)=([\d.]+)", line)
    if m:
        d.setdefault((m[2], m[3]), {}).setdefault(m[1], []).append(float(m[4]))
for (mode, depth), v in sorted(d.items()):
    ours, peer = st.median(v.get("dbserver_pg", [0])), st.median(v.get("pgbench", [0]))
    ratio = ours / peer if peer else float("nan")
    print(f"{mode}_{depth}: db-server {ours:,.0f} rps ({len(v.get('dbserver_pg', []))} runs), "
          f"pgbench {peer:,.0f}/s, ratio {ratio:.2f}x")
PY
