#!/usr/bin/env bash
# The docker-compose.yml stack without Docker, to try by hand: a redis-server, two demo
# replicas and the rate limit service (`tollgate serve`) sharing it, and nginx in front of
# the replicas, rendered from deploy/nginx/default.conf.template (the template the compose
# stack mounts). Everything listens on 127.0.0.1 only.
#
#   scripts/stack-without-docker.sh          run, show a curl loop, keep running until Ctrl-C
#   scripts/stack-without-docker.sh --once   run, show the curl loop, stop
#
# Ports (override with the variables): nginx STACK_PORT=8080, redis REDIS_PORT=6399,
# replicas APP1_PORT=8001 and APP2_PORT=8002, the service SERVICE_PORT=8000. The replicas
# and the service read the repository's rate_limits.json, so edits to it take effect while
# the stack runs.
#
# Needs cargo, curl, redis-server, nginx and envsubst
# (Debian/Ubuntu: apt-get install redis-server nginx gettext-base curl).
# Whatever it started is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
case "${1:-}" in
  --once) once=true ;;
  "") ;;
  *) echo "usage: $0 [--once]" >&2; exit 2 ;;
esac

STACK_PORT=${STACK_PORT:-8080}
REDIS_PORT=${REDIS_PORT:-6399}
APP1_PORT=${APP1_PORT:-8001}
APP2_PORT=${APP2_PORT:-8002}
SERVICE_PORT=${SERVICE_PORT:-8000}

nginx_bin=$(command -v nginx || true)
if [ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ]; then nginx_bin=/usr/sbin/nginx; fi
for tool in cargo curl redis-server envsubst; do
  command -v "$tool" >/dev/null || { echo "$tool not found (see the top of $0)" >&2; exit 1; }
done
[ -n "$nginx_bin" ] || { echo "nginx not found: apt-get install nginx" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$STACK_PORT" "$REDIS_PORT" "$APP1_PORT" "$APP2_PORT" "$SERVICE_PORT"; do
  if port_open "$port"; then
    echo "port $port is taken; choose others (see the top of $0)" >&2
    exit 1
  fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  # Newest first: nginx, the service, the replicas, then Redis.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until something listens on $1, or fails with the log of process $2.
wait_for() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 200); do
    port_open "$port" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "nothing listens on $port after 20 s; $log:" >&2
  cat "$log" >&2
  return 1
}

echo "building the demo and the service (cargo build --release -p tollgate-server --bin tollgate --example demo)"
cargo build --quiet --release -p tollgate-server --bin tollgate --example demo
# Where cargo put them: CARGO_TARGET_DIR, if set, moves them out of target/.
release="$(scripts/target-dir)/release"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$REDIS_PORT" "$!" "$work/redis.log"

# The replicas see nginx as their peer on loopback, which they trust by default to set
# X-Client-ID and X-Forwarded-For; a client on this host reaching them directly would be
# trusted too (loopback): use nginx's port. Three processes decide on the shared limits.
for port in "$APP1_PORT" "$APP2_PORT"; do
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT" TRUSTED_PROXY_HOPS=1 LOCAL_FALLBACK_INSTANCES=3 \
    HOST=127.0.0.1 PORT=$port \
    RATE_LIMIT_RULES_PATH="$PWD/rate_limits.json" NO_COLOR=1 \
    "$release/examples/demo" >"$work/app-$port.log" 2>&1 &
  pids+=($!)
  wait_for "$port" "$!" "$work/app-$port.log"
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT" LOCAL_FALLBACK_INSTANCES=3 \
  HOST=127.0.0.1 PORT=$SERVICE_PORT \
  RATE_LIMIT_RULES_PATH="$PWD/rate_limits.json" NO_COLOR=1 \
  "$release/tollgate" serve >"$work/service.log" 2>&1 &
pids+=($!)
wait_for "$SERVICE_PORT" "$!" "$work/service.log"

mkdir "$work/conf.d"
# As the official nginx image does: substitute only these variables, so that nginx's own
# $variables stay. The single quotes are meant.
# shellcheck disable=SC2016
NGINX_PORT="127.0.0.1:$STACK_PORT" APP1_ADDR="127.0.0.1:$APP1_PORT" APP2_ADDR="127.0.0.1:$APP2_PORT" \
  envsubst '${NGINX_PORT} ${APP1_ADDR} ${APP2_ADDR}' \
  <deploy/nginx/default.conf.template >"$work/conf.d/default.conf"
# shellcheck disable=SC2016
PREFIX="$work" envsubst '${PREFIX}' <deploy/local/nginx.conf.template >"$work/nginx.conf"
"$nginx_bin" -p "$work" -c "$work/nginx.conf" -e "$work/error.log" >"$work/nginx.log" 2>&1 &
pids+=($!)
wait_for "$STACK_PORT" "$!" "$work/error.log"

base="http://127.0.0.1:$STACK_PORT"
cat <<EOF
Stack up: nginx $base -> replicas 127.0.0.1:$APP1_PORT and 127.0.0.1:$APP2_PORT -> redis 127.0.0.1:$REDIS_PORT
          service http://127.0.0.1:$SERVICE_PORT (tollgate serve) -> the same redis

for i in \$(seq 1 12); do curl -s -o /dev/null -D - -H 'X-API-Key: demo-key-alice' $base/api/data; done
(nginx maps the key to X-Client-ID: alice; shipped rules: /api/data allows a burst of 10,
then 1 a second, whichever replica answers)

EOF
for i in $(seq 1 12); do
  curl -s -o /dev/null -D - -H 'X-API-Key: demo-key-alice' "$base/api/data" | tr -d '\r' | awk -v i="$i" '
    NR == 1 { status = $2 }
    tolower($1) == "x-ratelimit-remaining:" { remaining = $2 }
    tolower($1) == "x-upstream:" { upstream = $2 }
    END { printf "%2d  %s  remaining %s  from %s\n", i, status, remaining, upstream }'
done

if $once; then
  exit 0
fi
cat <<EOF

Try it: curl -i $base/api/data   (keyed by your address, as nginx saw it)
        curl -i -H 'X-Forwarded-For: 1.2.3.4' $base/api/data   (same bucket: spoofing fails)
        curl -i -H 'X-Client-ID: bob' $base/api/data   (same bucket: nginx drops the header)
        curl -i -H 'X-API-Key: demo-key-bob' $base/api/data   (bob's own bucket)
        curl -s -H 'content-type: application/json' -d '{"key": "alice", "limit": "2/minute"}' \
             http://127.0.0.1:$SERVICE_PORT/configure   (alice: 2 a minute, on both replicas)
        curl -s http://127.0.0.1:$SERVICE_PORT/stats/alice
Edit rate_limits.json and the replicas and the service reload it. Logs: $work. Ctrl-C stops everything.
EOF
wait
