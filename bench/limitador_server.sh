#!/usr/bin/env bash
# `tollgate serve` against limitador-server (Kuadrant's rate limit service) on loopback, in
# one invocation: the same decisions through Envoy's rate limit service (gRPC
# `ShouldRateLimit`, both servers) and through each one's HTTP API (tollgate's `POST
# /check`, limitador's `POST /check_and_report`), in memory and on a redis-server of its
# own. 1000 clients in turn under one limit keyed by the descriptor entry `client_id` in
# domain (namespace) `bench`, with every call allowed (a limit no client reaches) and with
# nearly every call refused (1/second per client). examples/rls_load.rs makes the calls and
# reads the server's CPU time over the measured window. Setups alternate within each round,
# the order rotating from one round to the next; the table gives medians over rounds with
# the min–max, and tollgate's figure over limitador's for the same storage, protocol and
# round.
#
#   LIMITADOR_SERVER=/path/to/limitador-server bench/limitador_server.sh [rounds] [seconds] [calls in flight]
#                                                     (defaults 3, 5, 64)
#
# limitador-server is not on crates.io; build it from its source
# (github.com/Kuadrant/limitador: `cargo build --release -p limitador-server`, which needs
# protoc and libclang: apt-get install protobuf-compiler libclang-dev) and point
# LIMITADOR_SERVER at the binary. SETUPS and SCENARIOS pick a subset. Needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-5}"
concurrency="${3:-64}"
limitador=${LIMITADOR_SERVER:?set LIMITADOR_SERVER to a limitador-server binary (see the comment at the top)}
[ -x "$limitador" ] || { echo "$limitador is not an executable" >&2; exit 1; }

cargo build --release --all-features --bin tollgate --example rls_load
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh

# The same limit for both: tollgate's rules file and limitador's limits file.
limits() {
  local count=1000000
  [ "$1" = denied ] && count=1
  cat >"$work/rules.json" <<EOF
{"default": {"unlimited": true},
 "descriptors": {"bench": [{"key": "client_id", "limit": "$count/second"}]}}
EOF
  cat >"$work/limits.yaml" <<EOF
- namespace: bench
  max_value: $count
  seconds: 1
  conditions: []
  variables: ["descriptors[0].client_id"]
EOF
}

# Waits until something accepts connections on 127.0.0.1:$2; fails naming $1.
wait_for_port() {
  for _ in $(seq 1 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $2), 0.2).close()" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$1 did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
}

# start SERVER STORAGE: sets pid, http and grpc (the addresses).
start() {
  : > "$work/server.log"
  if [ "$1" = limitador ]; then
    local http_port grpc_port storage=(memory)
    http_port=$(free_port)
    grpc_port=$(free_port)
    [ "$2" = redis ] && storage=(redis "redis://127.0.0.1:$redis_port")
    env -i RUST_LOG=error "$limitador" --rls-ip 127.0.0.1 --rls-port "$grpc_port" \
      --http-ip 127.0.0.1 --http-port "$http_port" "$work/limits.yaml" "${storage[@]}" \
      >"$work/server.log" 2>&1 &
    pid=$!
    wait_for_port limitador-server "$grpc_port"
    wait_for_port limitador-server "$http_port"
    grpc=127.0.0.1:$grpc_port http=127.0.0.1:$http_port
    return
  fi
  local backend=()
  [ "$2" = redis ] && backend=(REDIS_URL="redis://127.0.0.1:$redis_port" FAIL_MODE=closed)
  env -i NO_COLOR=1 RUST_LOG=warn,tollgate=info PORT=0 GRPC_PORT=0 \
    RATE_LIMIT_RULES_PATH="$work/rules.json" TOLLGATE_STATE_FILE="$work/state.json" \
    "${backend[@]}" "$release/tollgate" serve >"$work/server.log" 2>&1 &
  pid=$!
  wait_for_log tollgate "listening on http://"
  grpc=$(sed -n 's/.*Envoy rate limit service (gRPC) on \([^ ]*\).*/\1/p' "$work/server.log")
  http=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/server.log")
}

results="$work/results"
: > "$results"
default_setups="tollgate-memory-grpc limitador-memory-grpc tollgate-memory-http limitador-memory-http
  tollgate-redis-grpc limitador-redis-grpc tollgate-redis-http limitador-redis-http"
for round in $(seq 1 "$rounds"); do
  for scenario in ${SCENARIOS:-allowed denied}; do
    limits "$scenario"
    read -r -a order <<<"$(echo ${SETUPS:-$default_setups})"
    shift_by=$(( (round - 1) % ${#order[@]} ))
    for setup in "${order[@]:$shift_by}" "${order[@]:0:$shift_by}"; do
      IFS=- read -r server storage protocol <<<"$setup"
      redis-cli -p "$redis_port" flushall >/dev/null
      start "$server" "$storage"
      address=$grpc
      calls=grpc
      if [ "$protocol" = http ]; then
        address=$http
        calls=http
        [ "$server" = limitador ] && calls=limitador-http
      fi
      line=$("$release/examples/rls_load" "$calls" "$address" --concurrency "$concurrency" \
        --seconds "$seconds" --warmup 1 --server-pid "$pid" 2>"$work/load.log") || {
        echo "round $round $scenario $setup: rls_load failed:" >&2
        cat "$work/load.log" "$work/server.log" >&2
        exit 1
      }
      read -r rate p50 p99 ok over errors total cpu client_cpu <<<"$line"
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      echo "$round $scenario $setup $line" >> "$results"
      printf 'round %s %-8s %-24s %10s calls/s  p50 %6s ms  p99 %6s ms  over %s/%s  errors %s  server %s µs/call\n' \
        "$round" "$scenario" "$setup" "$rate" "$p50" "$p99" "$over" "$total" "$errors" "$cpu"
    done
  done
done

python3 - "$results" <<'EOF'
import statistics
import sys

def spread(values, digits):
    values = list(values)
    if not values:
        return "-"
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text

rows = [line.split() for line in open(sys.argv[1])]
at = {(r[0], r[1], r[2]): r for r in rows}
print()
print("| scenario | storage | protocol | server | calls/s | p50 ms | p99 ms | over limit | errors | server CPU µs/call | tollgate/limitador calls/s | tollgate/limitador CPU |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for scenario in dict.fromkeys(r[1] for r in rows):
    for storage in ("memory", "redis"):
        for protocol in ("grpc", "http"):
            for server in ("limitador", "tollgate"):
                setup = f"{server}-{storage}-{protocol}"
                mine = [r for r in rows if r[1] == scenario and r[2] == setup]
                if not mine:
                    continue
                cells = [scenario, storage, protocol, server,
                         spread((float(r[3]) for r in mine), 0),
                         spread((float(r[4]) for r in mine), 2),
                         spread((float(r[5]) for r in mine), 2),
                         f"{statistics.median(int(r[7]) / max(1, int(r[9])) for r in mine):.1%}",
                         str(sum(int(r[8]) for r in mine)),
                         spread((float(r[10]) for r in mine if r[10] != "-"), 1)]
                if server == "tollgate":
                    other = f"limitador-{storage}-{protocol}"
                    paired = [(r, at[(r[0], scenario, other)]) for r in mine if (r[0], scenario, other) in at]
                    cells.append(spread((float(t[3]) / float(l[3]) for t, l in paired), 2))
                    cells.append(spread((float(t[10]) / float(l[10]) for t, l in paired
                                         if t[10] != "-" and l[10] != "-" and float(l[10]) > 0), 2))
                else:
                    cells += ["1", "1"]
                print("| " + " | ".join(cells) + " |")
EOF
