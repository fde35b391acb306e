#!/usr/bin/env bash
# What usage statistics cost Redis per 100,000 distinct clients in one hour, with the
# per-hour bound on clients counted per client at its default and at 10,000
# (examples/usage_memory.rs), on a redis-server of its own on loopback.
#
#   bench/usage_memory.sh
#
# Needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features redis --example usage_memory
release="$(scripts/target-dir)/release"
# shellcheck source=bench/lib.sh
. bench/lib.sh
REDIS_URL="redis://127.0.0.1:$redis_port" "$release/examples/usage_memory"
