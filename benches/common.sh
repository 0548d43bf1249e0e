# Helpers the benchmark scripts share; sourced from the repository root (`. benches/common.sh`).

# A free TCP port on 127.0.0.1 (the kernel's pick; free when this returns).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# User + system CPU ticks of process $1 and all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
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
