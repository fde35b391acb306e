#!/usr/bin/env bash
# Load on `tollgate serve`'s POST /check, next to a bare axum JSON endpoint, on loopback in
# one invocation: `json` (bench_server's SETUP=json: the same body in, an answer of the
# same shape out, no decision), `serve-memory` (tollgate serve, in-memory backend) and
# `serve-redis` (tollgate serve on a redis-server of its own, FAIL_MODE=closed so that a
# missed deadline is a 503 wrk counts), each with every request allowed and with nearly
# every request refused, over 1000 identifiers. Setups alternate within each round, the
# order rotating from one round to the next; the table gives medians over rounds and the
# median ratio to `json` measured in the same round.
#
#   bench/service.sh [rounds] [seconds per run] [connections]      (defaults 5, 5, 64)
#
# SETUPS and SCENARIOS pick a subset (json always runs: every ratio is to it).
#
# Needs wrk (Debian: apt-get install wrk) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
seconds="${2:-5}"
connections="${3:-64}"

cargo build --release --all-features --example bench_server --bin tollgate
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh

start() {
  local limit=1000000/second
  [ "$2" = denied ] && limit=1/second
  case "$1" in
    json)
      SETUP=json PORT=$3 "$release/examples/bench_server" >"$work/server.log" 2>&1 & ;;
    serve-memory)
      env -i NO_COLOR=1 RUST_LOG=warn,tollgate=info PORT="$3" DEFAULT_RATE_LIMIT="$limit" \
        TOLLGATE_STATE_FILE="$work/state.json" \
        "$release/tollgate" serve >"$work/server.log" 2>&1 & ;;
    serve-redis)
      env -i NO_COLOR=1 RUST_LOG=warn,tollgate=info PORT="$3" DEFAULT_RATE_LIMIT="$limit" \
        REDIS_URL="redis://127.0.0.1:$redis_port" FAIL_MODE=closed \
        "$release/tollgate" serve >"$work/server.log" 2>&1 & ;;
    *) echo "unknown setup $1" >&2; exit 2 ;;
  esac
  pid=$!
  wait_for_log "$1" "ready|listening on"
}

setups="json ${SETUPS:-serve-memory serve-redis}"
setups="json ${setups//json/}"
measure "$setups" "${SCENARIOS:-allowed denied}" "" bench/check.lua
python3 bench/summarize.py "$results" json json serve-memory serve-redis
