#!/usr/bin/env bash
# The replication benchmark: a litefs-rs primary and replicas on this machine (static lease).
#
#   ./scripts/bench-cluster.sh [--compress true|false] [--keep] [--workdir DIR] [bench args...]
#
# Installs the dependencies (scripts/deps.sh), builds the release binary, creates a fresh
# work dir (default: .cache/bench/cluster-<timestamp>/ in the repo) and runs
# bench/cluster_bench.py, which starts the nodes as its child processes (a primary, then
# replicas following it over HTTP/2 on 127.0.0.1, on free ports), one subdirectory each:
# litefs.yml, data/, mnt/, node.log, pid. The script waits for each mount in
# /proc/self/mounts, measures, and stops the nodes. Whatever happens, the trap here then
# stops any node still running, by the PID in its pid file (SIGTERM; a lazy fusermount3
# unmount if it is still mounted after a deadline), copies the logs to
# .cache/bench/last-cluster-<node>.log, and removes the work dir.
#
# Options handled here:
#   --compress true|false   data.compress in every node's config (default: true)
#   --keep                  keep the work dir (databases, LTX files, logs)
#   --workdir DIR           use DIR (must not exist or be empty) instead of .cache/bench/cluster-*
#   --mount-debug           run the nodes with --debug (debug-level logs)
#   --bin PATH              measure this litefs-rs binary instead of building the working
#                           tree (to compare with another commit's build)
#   --journaled-fs          put each node on a fresh ext4 file system of its own, with a
#                           journal (a 4 GiB sparse image in the work dir, loop-mounted,
#                           removed at the end), as each machine has its volume; see
#                           bench/README.md for why
# Everything else goes to bench/cluster_bench.py, e.g. --replicas 2, --rate-repeat 5,
# --seq-inserts 1000, --burst-inserts 5000, --modes wal, --only sequential,burst
# (see `python3 bench/cluster_bench.py --help`).
#
# Needs root (or a user allowed to mount FUSE filesystems).
# shellcheck disable=SC2317 # functions run indirectly (traps, wait_until)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
command_line="./scripts/bench-cluster.sh${*:+ $*}"

say() { echo "bench-cluster.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

compress=true
keep=0
journaled=0
given_bin=""
pass=()
workdir=""
while (($# > 0)); do
  case "$1" in
    --compress) (($# >= 2)) || die "--compress needs true or false"; compress=$2; shift 2 ;;
    --compress=*) compress=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    --journaled-fs) journaled=1; shift ;;
    --bin) (($# >= 2)) || die "--bin needs a path"; given_bin=$2; shift 2 ;;
    --bin=*) given_bin=${1#*=}; shift ;;
    --mount-debug) pass+=(--node-debug); shift ;;
    --workdir) (($# >= 2)) || die "--workdir needs a directory"; workdir=$2; shift 2 ;;
    --workdir=*) workdir=${1#*=}; shift ;;
    -h | --help)
      sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 bench/cluster_bench.py --help
      ;;
    *) pass+=("$1"); shift ;;
  esac
done
case "$compress" in
  true | false) ;;
  *) die "--compress must be true or false, not '$compress'" ;;
esac

t_begin=$(date +%s.%N)

scripts/deps.sh
if [[ -n $given_bin ]]; then
  bin=$(realpath "$given_bin")
  [[ -x $bin ]] || die "no binary at $given_bin"
  build="the given binary $bin ($("$bin" version 2>/dev/null | head -n 1))"
else
  cargo build --release -p litefs-rs --locked
  bin="$repo/${CARGO_TARGET_DIR:-target}/release/litefs-rs"
  [[ -x $bin ]] || die "no binary at $bin"
  # What was measured: the tree may have uncommitted changes, so say so.
  build="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty=$(git status --porcelain -- crates litefs-rs Cargo.toml Cargo.lock 2>/dev/null | wc -l)
  if ((dirty > 0)); then build+=" + uncommitted changes in $dirty file(s) under crates/, litefs-rs/, Cargo.*"; fi
fi

stamp="$(date +%Y%m%d-%H%M%S)-$$"
if ((journaled)); then
  command -v mkfs.ext4 >/dev/null || die "--journaled-fs needs mkfs.ext4 (Debian: e2fsprogs)"
fi
if [[ -z $workdir ]]; then
  workdir="$repo/.cache/bench/cluster-$stamp"
fi
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
if [[ -n $(ls -A "$workdir") ]]; then die "work dir $workdir is not empty"; fi
mkdir -p "$repo/.cache/bench"
# Run a private copy: another build may replace target/release/litefs-rs meanwhile. The trap
# below only signals processes running this very file.
mkdir -p "$workdir/bin"
cp "$bin" "$workdir/bin/litefs-rs"
bin="$workdir/bin/litefs-rs"
build+=", binary sha256 $(sha256sum "$bin" | cut -c1-12)"
nodes="$workdir/nodes"
mkdir -p "$nodes"

# --journaled-fs: each node on a file system of its own, as each machine has its own volume.
node_fs=()
if ((journaled)); then
  replicas=2
  for ((i = 0; i < ${#pass[@]}; i++)); do
    case "${pass[i]}" in
      --replicas) replicas=${pass[i + 1]:-2} ;;
      --replicas=*) replicas=${pass[i]#*=} ;;
    esac
  done
  [[ $replicas =~ ^[0-9]+$ ]] || die "--replicas must be a number, not '$replicas'"
  for name in primary $(seq -f 'replica%g' 1 "$replicas"); do
    img="$workdir/$name.img"
    truncate -s 4G "$img"
    mkfs.ext4 -q -F "$img"
    mkdir -p "$nodes/$name"
    mount -o loop "$img" "$nodes/$name" || die "could not loop-mount $img"
    node_fs+=("$nodes/$name")
    rmdir "$nodes/$name/lost+found"
  done
  build+="; each node on a fresh ext4 file system with a journal (a 4 GiB loop-mounted image)"
fi

# /proc/self/mounts escapes space, tab, newline and backslash as octal.
is_mounted() {
  local escaped
  escaped=$(printf '%s' "$1" | sed -e 's/\\/\\134/g' -e 's/ /\\040/g' -e 's/\t/\\011/g')
  awk -v m="$escaped" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts
}
not_mounted() { ! is_mounted "$1"; }

# Polls (no fixed sleeps) until the condition holds or the deadline (seconds) passes.
wait_until() {
  local deadline=$1
  shift
  local end=$((SECONDS + deadline))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

# Gone, or no longer our binary (the PID was reused), or a zombie.
node_gone() {
  local pid=$1 stat
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$bin" ]] || return 0
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat%% *} == Z || ${stat%% *} == X ]]
}

bench_pid=""
bench_gone() { ! kill -0 "$bench_pid" 2>/dev/null; }
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  # The Python script stops its nodes itself; give it the chance first.
  if [[ -n $bench_pid ]] && ! bench_gone; then
    say "stopping cluster_bench.py (SIGTERM to PID $bench_pid); it stops its nodes"
    kill -TERM "$bench_pid" 2>/dev/null
    wait_until 90 bench_gone || say "WARNING: cluster_bench.py (PID $bench_pid) still running"
  fi
  local dir pid name problems i
  local dirs=("$nodes"/*/)
  # Replicas first (reverse order), then the primary: a replica whose primary went away
  # first logs a failed stream.
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
    dir=${dirs[i]}
    [[ -d $dir ]] || continue
    dir=${dir%/}
    name=$(basename "$dir")
    if [[ -f $dir/pid ]]; then
      pid=$(<"$dir/pid")
      if [[ $pid =~ ^[0-9]+$ ]] && ! node_gone "$pid"; then
        say "stopping $name (SIGTERM to PID $pid)"
        kill -TERM "$pid" 2>/dev/null
        if ! wait_until 30 node_gone "$pid"; then
          say "WARNING: $name (PID $pid) still running 30 s after SIGTERM"
        fi
        ((status != 0)) || status=1
      fi
    fi
    if is_mounted "$dir/mnt" && ! wait_until 10 not_mounted "$dir/mnt"; then
      say "WARNING: $dir/mnt still mounted; fusermount3 -u -z"
      fusermount3 -u -z "$dir/mnt"
      ((status != 0)) || status=1
    fi
    if [[ -f $dir/node.log ]]; then
      cp "$dir/node.log" "$repo/.cache/bench/last-cluster-$name.log"
      problems=$(grep -ciE '\b(warn|error|panic)' "$dir/node.log" || true)
      if ((problems > 0)); then
        say "$name's log has $problems WARN/ERROR/panic line(s) (full log: .cache/bench/last-cluster-$name.log); the first 20:"
        grep -iE '\b(warn|error|panic)' "$dir/node.log" | head -n 20 >&2
      fi
    fi
  done
  local still=0
  for dir in "$nodes"/*/; do
    [[ -d $dir ]] && is_mounted "${dir%/}/mnt" && still=1
  done
  if ((${#node_fs[@]} > 0)); then
    if ((keep)); then
      say "the nodes' file systems stay mounted (${node_fs[*]}): umount them when done"
    elif ((still == 0)); then
      for dir in "${node_fs[@]}"; do umount "$dir"; done
    fi
  fi
  if ((keep)); then
    say "kept the work dir: $workdir"
  elif ((still)); then
    say "not removing $workdir: a node's mount is still mounted"
  else
    rm -rf "$workdir"
  fi
  say "total run time (including build): $(awk -v a="$t_begin" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "work dir: $workdir (data.compress: $compress)"
status=0
python3 bench/cluster_bench.py --bin "$bin" --workdir "$nodes" --compress "$compress" \
  --command "$command_line" --note "litefs-rs built from $build" "${pass[@]}" &
bench_pid=$!
wait "$bench_pid" || status=$?
bench_pid=""
if ((status != 0)); then say "cluster_bench.py exited with status $status"; fi
exit "$status"
