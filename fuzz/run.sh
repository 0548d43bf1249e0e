#!/usr/bin/env bash
# Runs every fuzz target from its seeds (fuzz/seeds/<target>, which hold the required frame
# lengths 0, 2^20+1 and 0xFFFFFFFF and past crashes), each for SECS seconds; prints executions
# and whether it crashed. Needs a nightly toolchain and cargo-fuzz (installed if missing).
# usage: fuzz/run.sh [SECS=5] [SANITIZER=none|address]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5} sanitizer=${2:-none}
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in frame_decoder payloads http_request http_response admin; do
  mkdir -p "$work/$t"
  if out=$(cargo +nightly fuzz run -s "$sanitizer" "$t" "$work/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" 2>&1); then
    echo "fuzz $t ok $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1)"
  else
    echo "fuzz $t FAILED"; echo "$out" | tail -30; status=1
  fi
done
exit $status
