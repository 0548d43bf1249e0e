# Hosts in network namespaces, sourced by benches/cluster.sh and benches/failover.sh.
# The caller sets: ns (the namespaces' prefix, e.g. nm-), net (the bridge's namespace),
# hosts (names), ip (name -> address on a /24), work (a directory for logs), pids (an array).

remove_net() {
  for h in "${hosts[@]}"; do ip netns del "$ns$h" 2>/dev/null || true; done
  ip netns del "$net" 2>/dev/null || true
}
# A bridge in its own namespace, one veth pair per host (v-HOST for ns=nm-, v-f-HOST for nm-f-).
make_net() {
  ip netns add "$net"
  ip -n "$net" link add br0 type bridge
  ip -n "$net" link set br0 up
  local h
  for h in "${hosts[@]}"; do
    ip netns add "$ns$h"
    ip link add "v${ns#nm}$h" type veth peer name eth0 netns "$ns$h"
    ip link set "v${ns#nm}$h" netns "$net"
    ip -n "$net" link set "v${ns#nm}$h" master br0 up
    ip -n "$ns$h" addr add "${ip[$h]}/24" dev eth0
    ip -n "$ns$h" link set eth0 up
    ip -n "$ns$h" link set lo up
  done
}
# Every process of host $1 killed at once (SIGKILL): a host that dies.
kill_host() {
  local p
  p=$(ip netns pids "$ns$1" 2>/dev/null || true)
  [ -n "$p" ] && kill -9 $p 2>/dev/null || true
}
# Runs a program in host $1's namespace, in the background; its output goes to $work/$1.log.
run_in() {
  local h=$1; shift
  ip netns exec "$ns$h" "$@" >>"$work/$h.log" 2>&1 &
  pids+=($!)
  last_pid=$!
}
wait_for() { # HOST PORT: until it accepts a connection from the client host
  for _ in $(seq 200); do
    ip netns exec "${ns}client" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2"; exit 1
}
# The link of host $1 down (a partition: packets vanish) or up.
link() { ip -n "$net" link set "v${ns#nm}$1" "$2"; }
now() { date +%s.%N; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | head -1; }
# Seconds (0.1 s steps, at most LIMIT) until `CMD ARGS…` prints WANT; "never" if it does not.
seconds_until() { # LIMIT WANT CMD ARGS…
  local limit=$1 want=$2 t0 n=0
  shift 2
  t0=$(date +%s.%N)
  while [ "$("$@")" != "$want" ]; do
    n=$((n + 1)); [ "$n" -gt $((limit * 10)) ] && { echo "never"; return; }
    sleep 0.1
  done
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"
}
env_file() { # FILE: exports its KEY=VALUE lines (systemd's EnvironmentFile format)
  local k v
  while IFS='=' read -r k v; do
    [[ -z $k || $k == \#* ]] && continue
    export "$k=$v"
  done <"$1"
}
# SECONDS HOST TIMEOUT TAG: PUTs /docs/w-TAG-N on HOST:8000 (as $token) about 20 times a second;
# one line per write: `w START END STATUS NAME` (STATUS 0: no answer within TIMEOUT seconds).
writer() {
  ip netns exec "${ns}client" python3 - "$@" "$token" <<'PY'
import http.client, sys, time
secs, host, timeout, tag, token = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
end, n = time.time() + secs, 0
while time.time() < end:
    n += 1
    name = f"w-{tag}-{n}"
    t0 = time.time()
    try:
        c = http.client.HTTPConnection(host, 8000, timeout=timeout)
        c.request("PUT", f"/docs/{name}", body=b'{"content":"acked"}',
                  headers={"Authorization": f"Bearer {token}"})
        status = c.getresponse().status
        c.close()
    except OSError:
        status = 0
    print(f"w {t0:.3f} {time.time():.3f} {status} {name}", flush=True)
    time.sleep(0.05)
PY
}
# FILE CUT HEAL (epoch seconds): a writer's lines summed up; its acknowledged names are added
# to $work/acked-all. detect_s: the cut to the first failed write's answer; first_ok_s: the
# heal to the first acknowledged write; recovery_s: the heal to the first acknowledged write
# after the last failure (each event-loop thread of an app has its own db link, reconnecting
# on its own backoff, so a write can still fail after another loop's first success);
# unavailable_s: the longest time from the cut on in which no write was acknowledged (a write
# may fail or only wait meanwhile); slowest_failure_s; after_detect_s: the slowest
# failure that started after the first one (how fast writes fail once the cut is known);
# failed_outside: failures before the cut.
writes_summary() {
  python3 - "$@" "$work/acked-all" <<'PY'
import sys
path, cut, heal, acked_all = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = [(float(s), float(e), st, name) for _, s, e, st, name in
        (l.split() for l in open(path) if l.startswith("w "))]
ok = [r for r in rows if r[2] in ("200", "201")]
bad = [r for r in rows if r[2] not in ("200", "201")]
with open(acked_all, "a") as f:
    f.writelines(r[3] + "\n" for r in ok)
first_fail = min((e for s, e, _, _ in bad if e >= cut), default=None)
first_ok = min((e for s, e, _, _ in ok if s >= heal), default=None)
last_bad = max((e for s, e, _, _ in bad), default=heal)
settled = min((e for s, e, _, _ in ok if s >= max(heal, last_bad)), default=None)
since = lambda t, t0: f"{t - t0:.1f}" if t is not None else "never"
slowest = max((e - s for s, e, _, _ in bad), default=0.0)
after = max((e - s for s, e, _, _ in bad if first_fail is not None and s >= first_fail), default=0.0)
outside = sum(1 for s, e, _, _ in bad if e < cut)
acks = sorted(e for s, e, _, _ in ok if e >= cut)
last = max((e for s, e, _, _ in rows), default=cut)
gaps = [b - a for a, b in zip([cut] + acks, acks + [last])]
unavailable = f"{max(gaps):.1f}" if acks else "never"
print(f"writes={len(rows)} write_failed={len(bad)} acked_writes={len(ok)} "
      f"detect_s={since(first_fail, cut)} first_ok_s={since(first_ok, heal)} "
      f"recovery_s={since(settled, heal)} unavailable_s={unavailable} "
      f"slowest_failure_s={slowest:.2f} after_detect_s={after:.2f} failed_outside={outside}")
PY
}
# Logs in as admin on test-server at ADDR (port 7000) with $NETMOD_ADMIN_SECRET: sets $token.
admin_token() {
  for _ in $(seq 100); do
    token=$(ip netns exec "${ns}client" env NETMOD_SECRET="$NETMOD_ADMIN_SECRET" "$bin/client" \
      --addr "$1:7000" --user admin login 2>/dev/null) && return 0
    sleep 0.1
  done
  echo "cannot log in as admin on $1"; exit 1
}
# PUTs /docs/example on test-server at ADDR until it is stored: the app may still be setting up
# its tables (503) when the login succeeds (instances set up at once; the one that loses the
# race tries again after 2 s).
store_example() {
  local code=
  for _ in $(seq 100); do
    code=$(ip netns exec "${ns}client" curl -s -m 5 -o /dev/null -w '%{http_code}' -X PUT \
      -H "Authorization: Bearer $token" -d '{"content":"cluster"}' "http://$1:8000/docs/example")
    case $code in 200|201) return 0 ;; esac
    sleep 0.1
  done
  echo "cannot store the example document on $1 (last answer $code)"; exit 1
}
# HOST FILE: how many of the document names in FILE (one a line) HOST's `docs` table lacks
# (through the caller's `psql_on HOST DB SQL`).
missing_on() {
  local total found
  total=$(sort -u "$2" | grep -c . || true)
  [ "$total" -eq 0 ] && { echo 0; return; }
  found=$(psql_on "$1" netmod "SELECT count(*) FROM docs WHERE name IN ($(sort -u "$2" | sed "s/.*/'&'/" | paste -sd,))")
  echo $((total - found))
}
