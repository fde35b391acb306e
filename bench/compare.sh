#!/usr/bin/env bash
# tollgate next to limitador (Kuadrant's rate limiting library) on loopback, in one
# invocation: bench/compare's compare_server, one text route limited per X-Client-ID by
# tollgate or by limitador, in memory (tollgate-memory, limitador-memory) and in Redis
# (tollgate-redis, limitador-redis, on a redis-server of its own), each with every request
# allowed and with nearly every request refused, over 1000 client IDs. Setups alternate
# within each round, the order rotating from one round to the next. Two tables, one per
# storage, give the median over rounds (with the min–max) of requests/s, of the server's
# CPU time per request (from /proc/PID/stat over the measured run), and of their ratios to
# limitador's measured in the same round: "x limitador-memory req/s" on the tollgate-memory
# line is tollgate/limitador.
#
#   bench/compare.sh [rounds] [seconds per run] [connections]      (defaults 5, 5, 64)
#
# SETUPS and SCENARIOS pick a subset, e.g. SETUPS="tollgate-memory limitador-memory".
#
# Needs wrk (Debian: apt-get install wrk) and redis-server. limitador's Redis storage brings
# rocksdb (see bench/compare/Cargo.toml): building it needs libclang (apt-get install
# libclang-dev) and takes long. No setup here opens disk storage, so the linker drops every
# call into rocksdb; an empty archive can stand in for it and skip its build:
#
#   mkdir -p /tmp/norocksdb && ar rc /tmp/norocksdb/librocksdb.a
#   ROCKSDB_LIB_DIR=/tmp/norocksdb ROCKSDB_STATIC=1 bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
seconds="${2:-5}"
connections="${3:-64}"

(cd bench/compare && cargo build --release --bin compare_server)
compare_release="$(scripts/target-dir bench/compare/Cargo.toml)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh

start() {
  SETUP=$1 SCENARIO=$2 PORT=$3 REDIS_URL="redis://127.0.0.1:$redis_port" \
    "$compare_release/compare_server" >"$work/server.log" 2>&1 &
  pid=$!
  wait_for_log "compare_server ($1)" ready
}

measure "${SETUPS:-tollgate-memory limitador-memory tollgate-redis limitador-redis}" \
  "${SCENARIOS:-allowed denied}" / bench/clients.lua
for storage in memory redis; do
  python3 bench/summarize.py "$results" "limitador-$storage" "limitador-$storage" "tollgate-$storage"
done
