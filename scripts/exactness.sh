#!/usr/bin/env bash
# Bigger run of server/tests/service/exactness.rs: N demo processes sharing one Redis (and a
# 3-master Redis Cluster), concurrent requests for one client spread across them, admitted
# count checked against capacity + refill_rate x elapsed.
#
#   scripts/exactness.sh [instances] [requests in flight] [seconds]
#   scripts/exactness.sh 4 16 30
#
# The rules fail closed: if Redis misses its deadline (REDIS_TIMEOUT_MS, default 50 here)
# because the machine cannot carry the load, requests get 503 and the run fails saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test starts the demo binary, which `cargo test --test` alone does not rebuild.
cargo build --release --all-features --examples
EXACTNESS_INSTANCES="${1:-4}" \
EXACTNESS_CONCURRENCY="${2:-16}" \
EXACTNESS_SECS="${3:-30}" \
  cargo test --release --all-features --test service exactness:: -- --nocapture --test-threads 1
