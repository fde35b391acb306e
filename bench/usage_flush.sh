#!/usr/bin/env bash
# The cost of writing usage statistics: one flush of N clients' calls, in memory and to a
# redis-server of its own on loopback (examples/usage_flush.rs).
#
#   bench/usage_flush.sh [rounds]      (default 11)
#
# Needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --all-features --example usage_flush
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh
REDIS_URL="redis://127.0.0.1:$redis_port" "$release/examples/usage_flush" "${1:-11}"
echo
echo "Redis memory after the run: $(redis-cli -p "$redis_port" info memory | grep '^used_memory_human')"
