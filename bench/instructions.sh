#!/usr/bin/env bash
# Instructions per request through the layer, tower_governor and the bare inner service,
# counted by valgrind's callgrind (examples/layer_calls.rs): a count that does not move with
# the machine's load, for comparisons too fine for a timed benchmark. Each setup runs twice,
# with LOW and HIGH calls; (Ir(HIGH) - Ir(LOW)) / (HIGH - LOW) is its cost per request with
# the start-up taken out, and the overhead is that minus bare's.
#
#   bench/instructions.sh [setups...]      (default: every setup)
#
# LOW and HIGH (default 2000 and 12000) set the call counts. Needs valgrind (Debian:
# apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
low=${LOW:-2000}
high=${HIGH:-12000}
setups=${*:-bare allowed denied governor_allowed governor_allowed_headers governor_denied}

cargo build --release --features redis,axum --example layer_calls
release="$(scripts/target-dir)/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The total instructions (Ir) of one run.
count() {
  valgrind --tool=callgrind --callgrind-out-file="$work/out" \
    "$release/examples/layer_calls" "$1" "$2" >"$work/stdout" 2>"$work/stderr" ||
    { cat "$work/stderr" >&2; exit 1; }
  sed -n 's/^summary: //p' "$work/out"
}

declare -A per_call
for setup in bare $setups; do
  [ -n "${per_call[$setup]:-}" ] && continue
  a=$(count "$setup" "$low")
  b=$(count "$setup" "$high")
  per_call[$setup]=$(( (b - a) / (high - low) ))
  echo "$setup: $(cat "$work/stdout")" >&2
done

echo "| setup | instructions per request | overhead over bare |"
echo "|---|---:|---:|"
for setup in bare $setups; do
  [ "$setup" = bare ] && [ -n "${printed_bare:-}" ] && continue
  [ "$setup" = bare ] && printed_bare=1
  echo "| $setup | ${per_call[$setup]} | $(( per_call[$setup] - per_call[bare] )) |"
done
