#!/usr/bin/env bash
# Starts a Consul dev agent (in memory, single server) in the background for manual use,
# on free loopback ports, and prints its HTTP address. Tests start their own agents.
#
# Usage: scripts/consul-dev.sh [start]   start (or show) the agent
#        scripts/consul-dev.sh stop      stop it, by the PID in its PID file
#        scripts/consul-dev.sh status    show whether it runs
#
# Then, e.g.:  export CONSUL_HTTP_ADDR=$(cat .cache/consul-dev/http-addr)
#
# The flags that work with Debian's consul 1.8.7 (every listener on 127.0.0.1, no fixed port):
#
#   consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 \
#     -http-port <free> -serf-lan-port <free> -serf-wan-port <free> -server-port <free> \
#     -dns-port -1 -grpc-port -1 -node <name> -log-level warn
#
#   -bind       serf LAN/WAN and server RPC address (loopback only)
#   -client     HTTP (and DNS/gRPC, if enabled) address
#   -dns-port -1 / -grpc-port -1   disable those listeners (the dev default would be 8600/8502)
#   serf LAN and WAN ports need both TCP and UDP free; HTTP and server RPC are TCP only.
#   HTTPS is off by default. With -dev the agent keeps all state in memory (no -data-dir) and
#   elects itself leader about a second after start: GET /v1/status/leader then returns
#   "127.0.0.1:<server-port>" instead of "". It exits with status 1 on SIGTERM.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="$repo/.cache/consul-dev"
pid_file="$state/consul.pid"
log_file="$state/consul.log"
addr_file="$state/http-addr"
consul_bin="${LITEFS_CONSUL_BIN:-$repo/.cache/consul/usr/bin/consul}"

running_pid() {
  local pid
  [[ -f $pid_file ]] || return 1
  pid=$(<"$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # Guard against a stale PID file whose number now belongs to another process.
  grep -qa consul "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# Prints four loopback ports that are free for both TCP and UDP.
free_ports() {
  python3 - <<'EOF'
import socket
held, ports = [], []
while len(ports) < 4:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    held += [t, u]
    ports.append(port)
print(*ports)
EOF
}

show() {
  echo "consul dev agent running: pid $1 (PID file $pid_file)"
  echo "  HTTP address: $(<"$addr_file")   log: $log_file"
  echo "  export CONSUL_HTTP_ADDR=$(<"$addr_file")"
  echo "  stop with: $0 stop"
}

start() {
  local pid http lan wan server leader i
  if pid=$(running_pid); then
    show "$pid"
    return 0
  fi
  if ! [[ -x $consul_bin ]]; then
    "$repo/scripts/deps.sh"
  fi
  mkdir -p "$state"
  read -r http lan wan server < <(free_ports)
  nohup "$consul_bin" agent -dev \
    -bind 127.0.0.1 -client 127.0.0.1 \
    -http-port "$http" -serf-lan-port "$lan" -serf-wan-port "$wan" -server-port "$server" \
    -dns-port -1 -grpc-port -1 \
    -node "litefs-dev-$(hostname -s 2>/dev/null || echo local)" -log-level warn \
    </dev/null >"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
  echo "127.0.0.1:$http" >"$addr_file"

  # Wait until it has elected itself leader, so it is ready for sessions and KV.
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pid_file"
      echo "consul exited during startup; its log ($log_file):" >&2
      cat "$log_file" >&2
      return 1
    fi
    leader=$(curl -fsS "http://127.0.0.1:$http/v1/status/leader" 2>/dev/null || true)
    if [[ -n $leader && $leader != '""' ]]; then
      show "$pid"
      return 0
    fi
    sleep 0.1
  done
  echo "consul (pid $pid) did not elect a leader within 10 s; see $log_file" >&2
  return 1
}

stop() {
  local pid i
  if ! pid=$(running_pid); then
    echo "consul dev agent is not running"
    rm -f "$pid_file"
    return 0
  fi
  kill "$pid"
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "consul (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -KILL "$pid"
  fi
  rm -f "$pid_file"
  echo "consul dev agent stopped (pid $pid)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid=$(running_pid); then show "$pid"; else
      echo "consul dev agent is not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
