# Helpers the benchmark scripts share; sourced from the repository root (`. benches/common.sh`).

# A free TCP port on 127.0.0.1 (the kernel's pick; free when this returns).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# User + system CPU ticks of process $1 and all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same, summed over the processes given.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
# db-server on SQLite ($work/NAME.db, emptied first) and test-server in front of it, both on
# core 0 with one loop, from BIN_DIR; extra test-server flags after NAME. Sets ts, db, port
# (frames) and http, adds both to pids, and returns once /health answers.
# usage: start_sqlite_stack BIN_DIR NAME [TEST_SERVER_FLAGS…]
start_sqlite_stack() {
  local bin=$1 name=$2 dbp
  shift 2
  dbp=$(free_port) port=$(free_port) http=$(free_port)
  rm -f "$work/$name.db"*
  taskset -c 0 "$bin/db-server" --listen "127.0.0.1:$dbp" --sqlite "$work/$name.db" --threads 1 \
    >"$work/db.log" 2>&1 &
  db=$!
  wait_port "$dbp"
  NETMOD_ADMIN_SECRET=$NETMOD_SECRET taskset -c 0 "$bin/test-server" --listen "127.0.0.1:$port" \
    --http-listen "127.0.0.1:$http" --db "127.0.0.1:$dbp" --threads 1 "$@" >"$work/ts.log" 2>&1 &
  ts=$!
  pids+=("$ts" "$db")
  wait_port "$port"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.05; done
}
# Runs `loadgen ARGS…` on core 1 against server PID $1 and prints loadgen's last line followed by
# ` cpu_us_per_req=…`: the server's CPU over the run divided by the requests answered.
# usage: loadgen_cpu PID LOADGEN ARGS…
loadgen_cpu() {
  local pid=$1 loadgen=$2 t0 t1 out reqs
  shift 2
  t0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 "$loadgen" "$@")
  t1=$(cpu_ticks "$pid")
  reqs=$(echo "$out" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
  echo "$(echo "$out" | tail -1) cpu_us_per_req=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    -v n="$reqs" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')"
}
