#!/usr/bin/env bash
# Load comparison on loopback, in one invocation: bare axum, axum + tower_governor (keyed by
# X-Client-ID), tollgate's memory backend and tollgate's Redis backend (on a redis-server of
# its own), exact and with 100 ms leases (tollgate-redis-lease), each with every request
# allowed and with nearly every request refused, over
# 1000 client IDs. Setups alternate within each round; the table gives, per setup, the median
# over rounds of requests/s, p50 and p99 latency, and the median of its ratio to bare axum
# measured in the same round. The order of the setups rotates from one round to the next.
#
#   bench/load.sh [rounds] [seconds per run] [connections]      (defaults 3, 5, 64)
#
# SETUPS and SCENARIOS pick a subset, e.g. SETUPS="bare tollgate-redis" SCENARIOS=allowed
# (bare is always run: every ratio is to it).
#
# Needs wrk (Debian: apt-get install wrk) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-5}"
connections="${3:-64}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }

cargo build --release --all-features --example bench_server
server=target/release/examples/bench_server
work=$(mktemp -d)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$work" --logfile "$work/redis.log" >/dev/null
cleanup() {
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

setups="bare ${SETUPS:-governor tollgate-memory tollgate-redis tollgate-redis-lease}"
setups="bare ${setups//bare/}"
scenarios="${SCENARIOS:-allowed denied}"
results="$work/results"
: > "$results"
for round in $(seq 1 "$rounds"); do
  for scenario in $scenarios; do
    # Each round starts one setup later, so that no setup always runs right after another.
    read -r -a order <<<"$setups"
    shift_by=$(( (round - 1) % ${#order[@]} ))
    rotated="${order[*]:$shift_by} ${order[*]:0:$shift_by}"
    for setup in $rotated; do
      port=$(free_port)
      SETUP=$setup SCENARIO=$scenario PORT=$port REDIS_URL="redis://127.0.0.1:$redis_port" "$server" >"$work/server.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 200); do grep -q ready "$work/server.log" && break; sleep 0.05; done
      grep -q ready "$work/server.log" || { echo "bench_server ($setup) did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
      redis-cli -p "$redis_port" flushall >/dev/null
      wrk -t2 -c"$connections" -d1s -s bench/clients.lua "http://127.0.0.1:$port/" >/dev/null
      out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/clients.lua "http://127.0.0.1:$port/")
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      non2xx=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
      total=$(awk '/requests in/ {print $1}' <<<"$out")
      echo "$round $scenario $setup $rps $p50 $p99 ${non2xx:-0} $total" >> "$results"
      printf 'round %s %-8s %-16s %10s req/s  p50 %-9s p99 %-9s refused %s/%s\n' \
        "$round" "$scenario" "$setup" "$rps" "$p50" "$p99" "${non2xx:-0}" "$total"
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def ms(text):
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)
bare = {(r[0], r[1]): float(r[3]) for r in rows if r[2] == "bare"}
print()
print(f"{'scenario':8} {'setup':20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} {'x bare':>7}")
for scenario in ("allowed", "denied"):
    for setup in ("bare", "governor", "tollgate-memory", "tollgate-redis", "tollgate-redis-lease"):
        mine = [r for r in rows if r[1] == scenario and r[2] == setup]
        if not mine:
            continue
        rps = statistics.median(float(r[3]) for r in mine)
        p50 = statistics.median(ms(r[4]) for r in mine)
        p99 = statistics.median(ms(r[5]) for r in mine)
        refused = statistics.median(int(r[6]) / max(1, int(r[7])) for r in mine)
        ratio = statistics.median(float(r[3]) / bare[(r[0], scenario)] for r in mine)
        print(f"{scenario:8} {setup:20} {rps:10.0f} {p50:8.3f} {p99:8.3f} {refused:8.1%} {ratio:7.3f}")
        if scenario == "allowed" and refused > 0:
            print(f"  warning: {setup} answered {refused:.1%} non-2xx in the allowed scenario (503: Redis missed its deadline)")
PY
