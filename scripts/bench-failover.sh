#!/usr/bin/env bash
# The failover benchmark: two Consul-lease candidates on this machine, the primary stopped
# with SIGTERM or SIGKILL, the time until the survivor commits a write.
#
#   ./scripts/bench-failover.sh [--keep] [--workdir DIR] [--bin PATH] [bench args...]
#
# Installs the dependencies (scripts/deps.sh: fuse3, sqlite3, python3, the Consul agent),
# builds the release binary, creates a fresh work dir (default .cache/bench/failover-<timestamp>/
# in the repo) and runs bench/failover_bench.py, which starts a Consul dev agent and two
# candidate nodes as its child processes, one subdirectory each (run/consul/, run/node-a/,
# run/node-b/: litefs.yml, data/, mnt/, the log, pid). Whatever happens, the trap here then
# stops any of them still running, by the PID in its pid file (SIGTERM, SIGKILL after a
# deadline), lazily unmounts leftover mounts, copies the logs to
# .cache/bench/last-failover-<name>.log and removes the work dir.
#
# Options handled here:
#   --keep          keep the work dir (databases, LTX files, logs)
#   --workdir DIR   use DIR (must not exist or be empty) instead of .cache/bench/failover-*
#   --bin PATH      measure this litefs-rs binary instead of building the working tree
#   --mount-debug   run the nodes with --debug (debug-level logs)
# Everything else goes to bench/failover_bench.py, e.g. --runs 3, --kinds term
# (see `python3 bench/failover_bench.py --help`). The Consul agent is $LITEFS_CONSUL_BIN,
# else .cache/consul/usr/bin/consul.
#
# Needs root (or a user allowed to mount FUSE filesystems).
# shellcheck disable=SC2317 # functions run indirectly (traps, wait_until)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
command_line="./scripts/bench-failover.sh${*:+ $*}"

say() { echo "bench-failover.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

keep=0
given_bin=""
workdir=""
pass=()
while (($# > 0)); do
  case "$1" in
    --keep) keep=1; shift ;;
    --bin) (($# >= 2)) || die "--bin needs a path"; given_bin=$2; shift 2 ;;
    --bin=*) given_bin=${1#*=}; shift ;;
    --workdir) (($# >= 2)) || die "--workdir needs a directory"; workdir=$2; shift 2 ;;
    --workdir=*) workdir=${1#*=}; shift ;;
    --mount-debug) pass+=(--node-debug); shift ;;
    -h | --help)
      sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 bench/failover_bench.py --help
      ;;
    *) pass+=("$1"); shift ;;
  esac
done

t_begin=$(date +%s.%N)
scripts/deps.sh
consul_bin=${LITEFS_CONSUL_BIN:-$repo/.cache/consul/usr/bin/consul}
[[ -x $consul_bin ]] || die "no consul binary at $consul_bin"
consul_bin=$(realpath "$consul_bin")

if [[ -n $given_bin ]]; then
  bin=$(realpath "$given_bin")
  [[ -x $bin ]] || die "no binary at $given_bin"
  build="the given binary $bin"
else
  cargo build --release -p litefs-rs --locked
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$repo/$target
  bin=$target/release/litefs-rs
  [[ -x $bin ]] || die "no binary at $bin"
  build="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty=$(git status --porcelain -- crates litefs-rs Cargo.toml Cargo.lock 2>/dev/null | wc -l)
  if ((dirty > 0)); then build+=" + uncommitted changes in $dirty file(s) under crates/, litefs-rs/, Cargo.*"; fi
fi

[[ -n $workdir ]] || workdir="$repo/.cache/bench/failover-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$workdir" "$repo/.cache/bench"
workdir=$(cd "$workdir" && pwd)
[[ -z $(ls -A "$workdir") ]] || die "work dir $workdir is not empty"
# A private copy: another build may replace the binary meanwhile.
mkdir -p "$workdir/bin" "$workdir/run"
cp "$bin" "$workdir/bin/litefs-rs"
bin="$workdir/bin/litefs-rs"
build+=" ($("$bin" version 2>/dev/null | head -n 1)), binary sha256 $(sha256sum "$bin" | cut -c1-12)"
run="$workdir/run"

# /proc/self/mounts escapes space, tab, newline and backslash as octal.
is_mounted() {
  local escaped
  escaped=$(printf '%s' "$1" | sed -e 's/\\/\\134/g' -e 's/ /\\040/g' -e 's/\t/\\011/g')
  awk -v m="$escaped" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts
}

# Polls until the condition holds or the deadline (seconds) passes.
wait_until() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

# Gone, a zombie, or no longer running binary $2 (the PID was reused).
gone() {
  local stat
  [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$2" ]] || return 0
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat%% *} == Z || ${stat%% *} == X ]]
}

# Stops a leftover: the process in $1/pid, if it still runs binary $2 (SIGTERM, SIGKILL
# after 30 s). Returns 1 if there was one to stop.
stop_leftover() {
  local dir=$1 exe=$2 pid name conn
  name=$(basename "$dir")
  [[ -f $dir/pid ]] || return 0
  pid=$(<"$dir/pid")
  if ! [[ $pid =~ ^[0-9]+$ ]] || gone "$pid" "$exe"; then return 0; fi
  say "stopping $name (SIGTERM to PID $pid)"
  kill -TERM "$pid" 2>/dev/null
  if ! wait_until 30 gone "$pid" "$exe"; then
    say "WARNING: $name (PID $pid) still running 30 s after SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    wait_until 10 gone "$pid" "$exe" && return 1
    # Stuck in a request to its own mount, whose server is gone: abort that FUSE connection.
    conn=$(cat "$dir/fuse-conn" 2>/dev/null || true)
    say "WARNING: $name (PID $pid) still running after SIGKILL; aborting its FUSE connection '$conn'"
    if [[ -n $conn && -w /sys/fs/fuse/connections/$conn/abort ]]; then
      echo 1 >"/sys/fs/fuse/connections/$conn/abort"
      wait_until 10 gone "$pid" "$exe" || say "WARNING: $name (PID $pid) still running"
    fi
  fi
  return 1
}

bench_pid=""
bench_gone() { ! kill -0 "$bench_pid" 2>/dev/null; }
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $bench_pid ]] && ! bench_gone; then
    say "stopping failover_bench.py (SIGTERM to PID $bench_pid); it stops its processes"
    kill -TERM "$bench_pid" 2>/dev/null
    wait_until 90 bench_gone || say "WARNING: failover_bench.py (PID $bench_pid) still running"
  fi
  local dir name log problems still=0
  # The nodes first (a node stopping releases its lease in Consul), then Consul.
  for dir in "$run"/node-*/; do
    [[ -d $dir ]] || continue
    dir=${dir%/}
    stop_leftover "$dir" "$bin" || ((status != 0)) || status=1
    if is_mounted "$dir/mnt"; then
      say "WARNING: $dir/mnt still mounted; fusermount3 -u -z"
      fusermount3 -u -z "$dir/mnt"
      if is_mounted "$dir/mnt"; then still=1; fi
    fi
  done
  if [[ -d $run/consul ]]; then
    stop_leftover "$run/consul" "$consul_bin" || ((status != 0)) || status=1
  fi
  for log in "$run"/*/*.log; do
    [[ -f $log ]] || continue
    name=$(basename "$log" .log)
    cp "$log" "$repo/.cache/bench/last-failover-$name.log"
    [[ $name == consul ]] && continue
    problems=$(grep -ciE '\b(warn|error|panic)' "$log" || true)
    if ((problems > 0)); then
      say "$name's log has $problems WARN/ERROR/panic line(s) (full log: .cache/bench/last-failover-$name.log); the first 20:"
      grep -iE '\b(warn|error|panic)' "$log" | head -n 20 >&2
    fi
  done
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

say "work dir: $workdir"
status=0
python3 bench/failover_bench.py --bin "$bin" --consul-bin "$consul_bin" --workdir "$run" \
  --command "$command_line" --note "litefs-rs built from $build" "${pass[@]}" &
bench_pid=$!
wait "$bench_pid" || status=$?
bench_pid=""
((status == 0)) || say "failover_bench.py exited with status $status"
exit "$status"
