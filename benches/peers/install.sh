#!/usr/bin/env bash
# Installs the peers and load tools that are missing, from Debian's packages, without starting
# any of their services.
set -euo pipefail
missing=()
want() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
want wrk wrk
want nginx nginx-light
want haproxy haproxy
want redis-server redis-server
want redis-benchmark redis-tools
want taskset util-linux
want python3 python3
[ ${#missing[@]} -eq 0 ] && exit 0
# A policy-rc.d answering 101 tells the packages' install scripts not to start services.
policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
fi
trap '[ -n "$ours" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
