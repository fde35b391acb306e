#!/usr/bin/env bash
# Envoy's rate limit service (gRPC `ShouldRateLimit`) against the HTTP API (`POST /check`)
# of the same `tollgate serve`, asked the same thing: 1000 clients in turn under one
# descriptor rule (`client_id` in domain `bench`), with every call allowed (a limit no
# client reaches) and with nearly every call refused (1/second per client), on the memory
# backend and on a redis-server of its own (FAIL_MODE=closed, so that a missed deadline
# counts as an error). examples/rls_load.rs makes the calls and reads the server's CPU
# time (user + system, /proc/PID/stat) over the measured window. Setups alternate within
# each round, the order rotating from one round to the next; the table gives medians over
# rounds with the min–max, and the gRPC/HTTP ratio measured in the same round.
#
#   bench/envoy.sh [rounds] [seconds per run] [calls in flight]      (defaults 3, 5, 64)
#
# CHANNELS sets the gRPC client's HTTP/2 connections (default: one per 16 calls in flight);
# SETUPS and SCENARIOS pick a subset. Needs redis-server. Binaries are taken from where
# cargo builds them (CARGO_TARGET_DIR when it is set).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-5}"
concurrency="${3:-64}"

cargo build --release --all-features --bin tollgate --example rls_load --example bare_rls
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh

rules() {
  local limit=1000000/second
  [ "$1" = denied ] && limit=1/second
  cat >"$work/rules.json" <<EOF
{"default": {"unlimited": true},
 "descriptors": {"bench": [{"key": "client_id", "limit": "$limit"}]}}
EOF
}

# start BACKEND: tollgate serve on free ports (bare_rls for `bare`); sets pid, http and
# grpc (the addresses).
start() {
  local backend=()
  # Emptied here, not by the background job's redirection, which may run after
  # wait_for_log has read the previous server's log.
  : > "$work/server.log"
  if [ "$1" = bare ]; then
    env -i GRPC_PORT=0 "$release/examples/bare_rls" >"$work/server.log" 2>&1 &
    pid=$!
    wait_for_log "$1" "Envoy rate limit service \(gRPC\) on "
    grpc=$(sed -n 's/.*Envoy rate limit service (gRPC) on \([^ ]*\).*/\1/p' "$work/server.log")
    http=
    return
  fi
  [ "$1" = redis ] && backend=(REDIS_URL="redis://127.0.0.1:$redis_port" FAIL_MODE=closed)
  env -i NO_COLOR=1 RUST_LOG=warn,tollgate=info PORT=0 GRPC_PORT=0 \
    RATE_LIMIT_RULES_PATH="$work/rules.json" TOLLGATE_STATE_FILE="$work/state.json" \
    "${backend[@]}" "$release/tollgate" serve >"$work/server.log" 2>&1 &
  pid=$!
  wait_for_log "$1" "listening on http://"
  grpc=$(sed -n 's/.*Envoy rate limit service (gRPC) on \([^ ]*\).*/\1/p' "$work/server.log")
  http=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/server.log")
}

channels=()
[ -n "${CHANNELS:-}" ] && channels=(--channels "$CHANNELS")
results="$work/results"
: > "$results"
for round in $(seq 1 "$rounds"); do
  for scenario in ${SCENARIOS:-allowed denied}; do
    rules "$scenario"
    read -r -a order <<<"${SETUPS:-bare-grpc memory-grpc memory-http redis-grpc redis-http}"
    shift_by=$(( (round - 1) % ${#order[@]} ))
    for setup in "${order[@]:$shift_by}" "${order[@]:0:$shift_by}"; do
      backend=${setup%-*} protocol=${setup#*-}
      redis-cli -p "$redis_port" flushall >/dev/null
      start "$backend"
      [ "$protocol" = grpc ] && address=$grpc || address=$http
      line=$("$release/examples/rls_load" "$protocol" "$address" --concurrency "$concurrency" \
        --seconds "$seconds" --warmup 1 --server-pid "$pid" "${channels[@]}" 2>"$work/load.log") || {
        echo "round $round $scenario $setup: rls_load failed:" >&2
        cat "$work/load.log" "$work/server.log" >&2
        exit 1
      }
      read -r rate p50 p99 ok over errors calls cpu client_cpu <<<"$line"
      if [ "$errors" != 0 ]; then
        echo "round $round $scenario $setup: $errors errors; the server's log ends with:" >&2
        tail -5 "$work/server.log" >&2
      fi
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      echo "$round $scenario $setup $line" >> "$results"
      printf 'round %s %-8s %-12s %10s calls/s  p50 %6s ms  p99 %6s ms  over %s/%s  errors %s  server %s µs/call  client %s µs/call\n' \
        "$round" "$scenario" "$setup" "$rate" "$p50" "$p99" "$over" "$calls" "$errors" "$cpu" "$client_cpu"
    done
  done
done
python3 bench/envoy_summary.py "$results"
