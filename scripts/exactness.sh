#!/usr/bin/env bash
# Bigger run of tests/exactness.rs: N demo processes sharing one Redis (and a 3-master Redis
# Cluster), concurrent requests for one client spread across them, admitted count checked
# against capacity + refill_rate x elapsed.
#
#   scripts/exactness.sh [instances] [requests in flight] [seconds]
#   scripts/exactness.sh 6 32 30
set -euo pipefail
cd "$(dirname "$0")/.."
EXACTNESS_INSTANCES="${1:-6}" \
EXACTNESS_CONCURRENCY="${2:-32}" \
EXACTNESS_SECS="${3:-30}" \
  cargo test --release --all-features --test exactness -- --nocapture --test-threads 1
