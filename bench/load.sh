#!/usr/bin/env bash
# Load comparison on loopback, in one invocation: bare axum, axum + tower_governor (keyed by
# X-Client-ID; governor-headers with its rate limit headers on, as tollgate writes its own),
# tollgate's memory backend and tollgate's Redis backend (on a redis-server of
# its own), exact and with 100 ms leases (tollgate-redis-lease), each with every request
# allowed and with nearly every request refused, over
# 1000 client IDs. Setups alternate within each round; the table gives, per setup, the median
# over rounds (with the min–max) of requests/s and of its ratio to bare axum measured in the
# same round, of the server's CPU time per request (from /proc/PID/stat over the measured
# run) and its ratio to bare's, and the median p50 and p99 latency. The order of the setups
# rotates from one round to the next.
#
#   bench/load.sh [rounds] [seconds per run] [connections]      (defaults 5, 5, 64)
#
# SETUPS and SCENARIOS pick a subset, e.g. SETUPS="bare tollgate-redis" SCENARIOS=allowed
# (bare is always run: every ratio is to it). tollgate-memory-usage and tollgate-redis-usage
# (usage statistics recorded) run only when named in SETUPS.
#
# Needs wrk (Debian: apt-get install wrk) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
seconds="${2:-5}"
connections="${3:-64}"

cargo build --release --all-features --example bench_server
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh

start() {
  SETUP=$1 SCENARIO=$2 PORT=$3 REDIS_URL="redis://127.0.0.1:$redis_port" \
    "$release/examples/bench_server" >"$work/server.log" 2>&1 &
  pid=$!
  wait_for_log "bench_server ($1)" ready
}

setups="bare ${SETUPS:-governor governor-headers tollgate-memory tollgate-redis tollgate-redis-lease}"
setups="bare ${setups//bare/}"
measure "$setups" "${SCENARIOS:-allowed denied}" / bench/clients.lua
python3 bench/summarize.py "$results" bare bare governor governor-headers tollgate-memory tollgate-memory-usage \
  tollgate-redis tollgate-redis-usage tollgate-redis-lease \
  --pair tollgate-memory:governor --pair tollgate-memory:governor-headers
