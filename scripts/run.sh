#!/usr/bin/env bash
# The run command: ./scripts/run.sh [litefs-rs arguments]
#
# Installs the dependencies (scripts/deps.sh) and builds the release binary. Without
# arguments, starts a local cluster on 127.0.0.1: a primary and two replicas
# (config/local-cluster/*.yml; mounts and data under .litefs/<node>/ in the repository), prints
# where to write and where to read, and serves until Ctrl-C, which stops all three cleanly.
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

# The local cluster: a primary and two replicas on 127.0.0.1 (config/local-cluster/).
nodes=(primary replica1 replica2)
pids=()
stop() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM

mounted() { grep -qs " $1 fuse" /proc/self/mounts; }

for node in "${nodes[@]}"; do
  mkdir -p ".litefs/$node"
  "$bin" mount -config "config/local-cluster/$node.yml" 2> >(sed -u "s/^/[$node] /" >&2) &
  pids+=($!)
  mnt="$PWD/.litefs/$node/mnt"
  # Wait for the mount to appear (or for litefs-rs to give up).
  for _ in $(seq 100); do
    if mounted "$mnt"; then break; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      stop
      wait
      exit 1
    fi
    sleep 0.1
  done
done

p="$PWD/.litefs/primary/mnt"
r1="$PWD/.litefs/replica1/mnt"
r2="$PWD/.litefs/replica2/mnt"
cat <<NEXT

A local litefs-rs cluster is running: the primary at $p, replicas at $r1 and $r2
(data under $PWD/.litefs/<node>/data, internal APIs on 127.0.0.1:20202, :20203, :20204).
In another terminal, try:

  sqlite3 $p/my.db 'CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (42);'
  sqlite3 $r1/my.db 'SELECT count(*) FROM t;'     # replicated
  cat $p/my.db-pos $r1/my.db-pos $r2/my.db-pos    # same TXID/checksum everywhere
  cat $r1/.primary $r1/.lag                       # who the primary is, lag in ms
  sqlite3 $r2/my.db 'INSERT INTO t VALUES (1);'   # read-only: writes go to the primary
  curl -s http://127.0.0.1:20202/metrics

Press Ctrl-C to stop all three (each unmounts cleanly).
NEXT

# `wait` returns early when a trapped signal arrives: wait again until every node exited.
status=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
done
exit "$status"
