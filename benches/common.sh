# Helpers the benchmark scripts share; sourced from the repository root (`. benches/common.sh`).

# A free TCP port on 127.0.0.1 (the kernel's pick; free when this returns).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
