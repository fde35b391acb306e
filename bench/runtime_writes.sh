#!/usr/bin/env bash
# What a runtime change costs as the number of entries grows: `POST /configure` on one
# `tollgate serve` instance, with a second instance on the same Redis applying every change,
# at 1,000, 4,000 and 20,000 client overrides already stored (written straight into Redis
# before the instances start). Each change replaces one of them with a new limit, so the
# count stays put. Prints, per count, the median and 90th percentile of `/configure`'s
# latency, and the CPU time per change of the instance that made it and of the other one.
#
#   bench/runtime_writes.sh [changes per count] [binary]     (defaults 200, a release build)
#
# ENTRIES changes the counts (default "1000 4000 20000"). Needs redis-server and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
changes="${1:-200}"
binary="${2:-}"
if [ -z "$binary" ]; then
  cargo build --release --all-features --bin tollgate
  binary="$(scripts/target-dir)/release/tollgate"
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh
pid_a=; pid_b=
trap 'kill $pid_a $pid_b 2>/dev/null || true; cleanup' EXIT

start_instance() { # name port grpc_port
  env -i NO_COLOR=1 RUST_LOG=warn PORT="$2" GRPC_PORT="$3" DEFAULT_RATE_LIMIT=1000/second \
    REDIS_URL="redis://127.0.0.1:$redis_port" REDIS_PREFIX=bench \
    TOLLGATE_MAX_RUNTIME_ENTRIES=1000000 \
    "$binary" serve >"$work/$1.log" 2>&1 &
  echo $!
}

wait_listening() { # port
  for _ in $(seq 1 400); do
    curl -fs -o /dev/null "http://127.0.0.1:$1/health" && return 0
    sleep 0.05
  done
  echo "the instance on $1 did not start" >&2
  exit 1
}

printf '%8s %12s %12s %18s %18s\n' entries "p50 ms" "p90 ms" "cpu ms/change A" "cpu ms/change B"
for entries in ${ENTRIES:-1000 4000 20000}; do
  redis-cli -p "$redis_port" flushall >/dev/null
  python3 - "$entries" <<'EOF' | redis-cli -p "$redis_port" --pipe >/dev/null
import sys
for n in range(int(sys.argv[1])):
    rule = '{"limit":"5/hour"}'
    # RESP, as redis-cli --pipe takes it.
    args = ["HSET", "bench:runtime", f"client:id:pre-{n}", rule]
    sys.stdout.write(f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args))
EOF
  port_a=$(free_port); port_b=$(free_port)
  pid_a=$(start_instance a "$port_a" "$(free_port)")
  pid_b=$(start_instance b "$port_b" "$(free_port)")
  wait_listening "$port_a"; wait_listening "$port_b"
  cpu_a=$(cpu_ticks "$pid_a"); cpu_b=$(cpu_ticks "$pid_b")
  latencies=$(python3 - "$port_a" "$changes" "$entries" <<'EOF'
import http.client, json, statistics, sys, time
port, changes, entries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
connection = http.client.HTTPConnection("127.0.0.1", port)
took = []
for n in range(changes):
    body = json.dumps({"key": f"pre-{(n * 7919) % entries}", "limit": f"{n % 50 + 1}/hour"})
    started = time.perf_counter()
    connection.request("POST", "/configure", body, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    took.append((time.perf_counter() - started) * 1000)
    assert response.status == 200, response.status
took.sort()
print(f"{statistics.median(took):.2f} {took[int(len(took) * 0.9)]:.2f}")
EOF
)
  # The other instance applies each change as it is announced: give it a moment to finish.
  sleep 1
  used_a=$(( $(cpu_ticks "$pid_a") - cpu_a )); used_b=$(( $(cpu_ticks "$pid_b") - cpu_b ))
  kill "$pid_a" "$pid_b"; wait "$pid_a" "$pid_b" 2>/dev/null || true; pid_a=; pid_b=
  per_change() { awk -v t="$1" -v hz="$clock_ticks_per_sec" -v n="$changes" 'BEGIN { printf "%.2f", t / hz * 1000 / n }'; }
  read -r p50 p90 <<<"$latencies"
  printf '%8s %12s %12s %18s %18s\n' "$entries" "$p50" "$p90" "$(per_change "$used_a")" "$(per_change "$used_b")"
done
