#!/usr/bin/env bash
# The run command: ./scripts/run.sh [litefs-rs arguments]
#
# Installs the dependencies (scripts/deps.sh) and builds the release binary. Without
# arguments, starts a local Consul agent and a local cluster on 127.0.0.1: three candidates
# (config/local-cluster/*.yml; mounts and data under .litefs/<node>/ in the repository) that
# elect a primary, prints where to write, where to read and how to watch a failover, and
# serves until Ctrl-C, which stops all three cleanly (and the Consul agent it started).
# With arguments, runs `litefs-rs <arguments>` instead (e.g. `./scripts/run.sh ltx dump FILE`).
set -euo pipefail

caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh

locked=()
if [[ -f Cargo.lock ]]; then locked=(--locked); fi
cargo build --release -p litefs-rs "${locked[@]}"
bin="$(realpath "${CARGO_TARGET_DIR:-target}/release/litefs-rs")"

if (($# > 0)); then
  # From the caller's directory, so that relative paths in the arguments mean what they say.
  cd "$caller_dir"
  exec "$bin" "$@"
fi

# The local cluster: three candidates on 127.0.0.1 (config/local-cluster/) electing a primary
# through a local Consul agent (scripts/consul-dev.sh, stopped again at the end if this script
# started it).
consul_was_running=0
if scripts/consul-dev.sh status >/dev/null 2>&1; then consul_was_running=1; fi
scripts/consul-dev.sh start >/dev/null
LITEFS_CONSUL_URL="http://$(<.cache/consul-dev/http-addr)"
export LITEFS_CONSUL_URL

nodes=(node1 node2 node3)
ports=(20202 20203 20204)
pids=()
stop() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM
stop_consul() {
  if ((!consul_was_running)); then scripts/consul-dev.sh stop >/dev/null || true; fi
}

mounted() { grep -qs " $1 fuse" /proc/self/mounts; }

for node in "${nodes[@]}"; do
  mkdir -p ".litefs/$node"
  "$bin" mount -config "config/local-cluster/$node.yml" 2> >(sed -u "s/^/[$node] /" >&2) &
  pids+=($!)
  echo "${pids[-1]}" >".litefs/$node/pid"
  mnt="$PWD/.litefs/$node/mnt"
  # Wait for the mount to appear (or for litefs-rs to give up).
  for _ in $(seq 100); do
    if mounted "$mnt"; then break; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      stop
      wait
      stop_consul
      exit 1
    fi
    sleep 0.1
  done
done

# Wait (up to 30 s) for the election.
primary=""
for _ in $(seq 300); do
  for i in "${!nodes[@]}"; do
    if curl -fsS "http://127.0.0.1:${ports[$i]}/info" 2>/dev/null | grep -q '"isPrimary":true'; then
      primary=${nodes[$i]}
    fi
  done
  [[ -n $primary ]] && break
  sleep 0.1
done
if [[ -z $primary ]]; then
  echo "run.sh: no node became primary within 30 s" >&2
  stop
  wait
  stop_consul
  exit 1
fi
others=()
for node in "${nodes[@]}"; do [[ $node != "$primary" ]] && others+=("$node"); done
proxy_of() { echo "808${1#node}"; }
p="$PWD/.litefs/$primary/mnt"
r="$PWD/.litefs/${others[0]}/mnt"
cat <<NEXT

A local litefs-rs cluster is running: three candidates (.litefs/node1, node2, node3; internal
APIs on 127.0.0.1:20202, :20203, :20204) and a Consul agent at $LITEFS_CONSUL_URL.
$primary won the election: it is the primary. In another terminal, try:

  sqlite3 $p/my.db 'CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (42);'
  sqlite3 $r/my.db 'SELECT count(*) FROM t;'      # replicated
  cat .litefs/node*/mnt/my.db-pos                   # same TXID/checksum everywhere
  cat $r/.primary                                   # who the primary is
  sqlite3 $r/my.db 'INSERT INTO t VALUES (1);'      # read-only: writes go to the primary

Each node runs the demo app (demo/app.py) behind its proxy (ports 8081, 8082, 8083):

  curl -X POST -d hello http://127.0.0.1:$(proxy_of "${others[0]}")/   # a write to a replica lands on $primary
  curl http://127.0.0.1:$(proxy_of "${others[1]}")/                    # any node reads it back

Watch a failover: kill the primary and see .primary move to another node.

  kill -9 \$(cat .litefs/$primary/pid)              # a crash: a new primary in about 4 s
  cat .litefs/${others[0]}/mnt/.primary .litefs/${others[1]}/mnt/.primary  # absent on the new primary
  curl -s http://127.0.0.1:20202/info; echo          # "isPrimary" on each node
  curl -s $LITEFS_CONSUL_URL/v1/kv/litefs-rs/local-cluster?raw; echo   # the lease key
  (kill -TERM instead hands the lease over at once.)

Press Ctrl-C to stop all three (each releases the lease and unmounts cleanly).
NEXT

# `wait` returns early when a trapped signal arrives: wait again until every node exited.
status=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
done
stop_consul
exit "$status"
