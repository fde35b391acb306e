# The harness bench/load.sh, bench/service.sh and bench/usage_flush.sh share; sourced, not
# run. It starts a redis-server of its own on a free loopback port, and `measure` runs every
# setup under every scenario with wrk. The sourcing script sets rounds, seconds and
# connections, and defines start SETUP SCENARIO PORT, which starts that server in the
# background, sets pid and returns once it accepts requests.

command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }

work=$(mktemp -d)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$work" --logfile "$work/redis.log" >/dev/null
cleanup() {
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until the server's log ($work/server.log) has a line matching $2; fails naming $1.
wait_for_log() {
  for _ in $(seq 1 200); do grep -qE "$2" "$work/server.log" && return 0; sleep 0.05; done
  echo "$1 did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
}

# The CPU time (user + system) process $1 has used, in clock ticks (fields 14 and 15 of
# /proc/PID/stat; the command name, field 2, may hold spaces, so count from its ")").
cpu_ticks() {
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
clock_ticks_per_sec=$(getconf CLK_TCK)
redis_pid=$(redis-cli -p "$redis_port" info server | awk -F: '/^process_id/ { print $2 + 0 }')

# measure "SETUPS" "SCENARIOS" PATH LUA: every setup under every scenario, each round
# starting one setup later so that no setup always runs right after another; one line per
# run in $work/results (round scenario setup req/s p50 p99 non-2xx total cpu-µs/request
# redis-cpu-µs/request). The server's CPU time per request, taken over the measured run
# alone, is disturbed less than requests/s when wrk, the server and Redis share the cores;
# Redis's is what the decisions cost it (setups that do not use Redis show its idle ticks).
measure() {
  command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
  local setups=$1 scenarios=$2 path=$3 lua=$4
  results="$work/results"
  : > "$results"
  for round in $(seq 1 "$rounds"); do
    for scenario in $scenarios; do
      read -r -a order <<<"$setups"
      shift_by=$(( (round - 1) % ${#order[@]} ))
      rotated="${order[*]:$shift_by} ${order[*]:0:$shift_by}"
      for setup in $rotated; do
        port=$(free_port)
        redis-cli -p "$redis_port" flushall >/dev/null
        # Emptied here: start's background redirection may truncate it only after
        # wait_for_log has matched the previous server's line.
        : > "$work/server.log"
        start "$setup" "$scenario" "$port"
        wrk -t2 -c"$connections" -d1s -s "$lua" "http://127.0.0.1:$port$path" >/dev/null
        cpu_before=$(cpu_ticks "$pid")
        redis_before=$(cpu_ticks "$redis_pid")
        out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$lua" "http://127.0.0.1:$port$path")
        cpu_after=$(cpu_ticks "$pid")
        redis_after=$(cpu_ticks "$redis_pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
        total=$(awk '/requests in/ {print $1}' <<<"$out")
        per_request() {
          awk -v t="$1" -v hz="$clock_ticks_per_sec" -v n="$total" \
            'BEGIN { printf "%.2f", t / hz * 1e6 / (n > 0 ? n : 1) }'
        }
        cpu_us=$(per_request "$((cpu_after - cpu_before))")
        redis_us=$(per_request "$((redis_after - redis_before))")
        echo "$round $scenario $setup $rps $p50 $p99 ${non2xx:-0} $total $cpu_us $redis_us" >> "$results"
        printf 'round %s %-8s %-20s %10s req/s  p50 %-9s p99 %-9s refused %s/%s  cpu %s us/req  redis %s us/req\n' \
          "$round" "$scenario" "$setup" "$rps" "$p50" "$p99" "${non2xx:-0}" "$total" "$cpu_us" "$redis_us"
      done
    done
  done
}
