#!/usr/bin/env bash
# The run command: ./scripts/run.sh [litefs-rs arguments]
#
# Installs the dependencies (scripts/deps.sh) and builds the release binary. Without
# arguments, mounts a single-node litefs-rs with config/litefs.yml (mount at .litefs/mnt, data
# in .litefs/data, both under the repository) and serves until Ctrl-C, which unmounts cleanly.
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

mnt="$PWD/.litefs/mnt"
"$bin" mount -config config/litefs.yml &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; }
trap stop INT TERM

# Wait for the mount to appear (or for litefs-rs to give up).
for _ in $(seq 100); do
  if grep -qs " $mnt fuse" /proc/self/mounts; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; exit $?; fi
  sleep 0.1
done

cat <<NEXT

litefs-rs is serving $mnt (data in $PWD/.litefs/data). In another terminal, try:

  sqlite3 $mnt/my.db 'CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (42);'
  cat $mnt/my.db-pos                   # TXID/checksum of the last transaction
  ls $PWD/.litefs/data/dbs/my.db/ltx    # one LTX file per transaction
  $bin ltx verify $PWD/.litefs/data/dbs/my.db/ltx/*.ltx

Press Ctrl-C to stop (it unmounts cleanly).
NEXT

# `wait` returns early when a trapped signal arrives: wait again for the real exit.
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
exit "$status"
