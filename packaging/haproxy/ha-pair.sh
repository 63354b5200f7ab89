#!/usr/bin/env bash
# A local trial of the fetchgate HA pair on loopback ports: redis-server (append-only
# file on), two fetchgate nodes (a and b, with --permissive-mode so a trial can fetch
# anything in a permissive session) and haproxy in front of them.
#
#   ha-pair.sh start [DIR]   start everything, state and logs under DIR
#   ha-pair.sh stop  [DIR]   stop what start started
#
# DIR defaults to ./ha-pair. Environment:
#   FETCHGATE            the fetchgate binary [default: fetchgate on PATH, else target/debug]
#   FETCH_SERVICE_AUTH   control credentials shared by both nodes [default: craft:craft]
#   HA_BASE_PORT         ports used: BASE (proxy via haproxy), BASE+1 (control via
#                        haproxy), BASE+2..+5 (nodes a and b), BASE+6 (redis) [default: 13100]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"
dir="${2:-ha-pair}"
base="${HA_BASE_PORT:-13100}"
auth="${FETCH_SERVICE_AUTH:-craft:craft}"

proxy_port=$base
control_port=$((base + 1))
a_proxy=$((base + 2)) a_control=$((base + 3))
b_proxy=$((base + 4)) b_control=$((base + 5))
redis_port=$((base + 6))

fetchgate_bin() {
  if [ -n "${FETCHGATE:-}" ]; then echo "$FETCHGATE"
  elif command -v fetchgate >/dev/null; then command -v fetchgate
  elif [ -x "$here/../../target/debug/fetchgate" ]; then echo "$here/../../target/debug/fetchgate"
  else echo "ha-pair.sh: no fetchgate binary (set FETCHGATE)" >&2; exit 1
  fi
}

wait_for() { # URL: until it answers 200, 30 s at most
  for _ in $(seq 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' "$1")" = 200 ]; then return 0; fi
    sleep 0.1
  done
  echo "ha-pair.sh: $1 did not answer 200" >&2
  return 1
}

start_node() { # NAME PROXY_PORT CONTROL_PORT PEER_CONTROL_PORT
  local name=$1
  mkdir -p "$dir/$name/config"
  FETCH_SERVICE_AUTH="$auth" "$(fetchgate_bin)" \
    --bind 127.0.0.1 --proxy-port "$2" --control-port "$3" \
    --config "$dir/$name/config" --spool "$dir/$name/spool" \
    --log-file "$dir/$name/fetchgate.log" \
    --redis "redis://127.0.0.1:$redis_port/" --node-id "$name" \
    --peer "http://127.0.0.1:$4" --permissive-mode </dev/null >"$dir/$name/stderr.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

start() {
  mkdir -p "$dir/redis"
  dir="$(cd "$dir" && pwd)"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis/redis.log"
  for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  start_node a "$a_proxy" "$a_control" "$b_control"
  start_node b "$b_proxy" "$b_control" "$a_control"
  wait_for "http://127.0.0.1:$a_control/status"
  wait_for "http://127.0.0.1:$b_control/status"
  FG_LISTEN=127.0.0.1 FG_PROXY_PORT=$proxy_port FG_CONTROL_PORT=$control_port \
    FG_A_HOST=127.0.0.1 FG_A_PROXY_PORT=$a_proxy FG_A_CONTROL_PORT=$a_control \
    FG_B_HOST=127.0.0.1 FG_B_PROXY_PORT=$b_proxy FG_B_CONTROL_PORT=$b_control \
    haproxy -D -p "$dir/haproxy.pid" -f "$here/haproxy.cfg"
  wait_for "http://127.0.0.1:$control_port/status"
  echo "proxy   http://127.0.0.1:$proxy_port (through haproxy)"
  echo "control http://127.0.0.1:$control_port (through haproxy, credentials $auth)"
  echo "nodes   a: proxy $a_proxy control $a_control; b: proxy $b_proxy control $b_control"
  echo "redis   127.0.0.1:$redis_port; state and logs in $dir"
}

stop() {
  local p
  for p in haproxy a b redis; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
