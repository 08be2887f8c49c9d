#!/usr/bin/env bash
# The benchmark: SQLite on plain local disk versus through a litefs-rs mount, in one run.
#
#   ./scripts/bench.sh [--compress true|false] [--keep] [--workdir DIR] [bench args...]
#
# Installs the dependencies (scripts/deps.sh), builds the release binary, creates a fresh
# work dir (default: .cache/bench/run-<timestamp>/ in the repo) holding plain/, data/ and
# mnt/ (plain/ and data/ are on the same filesystem), writes a static-lease config, mounts
# litefs-rs in the background (log: <workdir>/mount.log, copied to
# .cache/bench/last-mount.log), waits for the mount in /proc/self/mounts, runs
# bench/mount_bench.py, then always stops the mount (SIGTERM to its PID; lazy fusermount3
# unmount if it is still mounted after a deadline) and removes the work dir.
#
# Options handled here:
#   --compress true|false   data.compress in the written config (default: true)
#   --keep                  keep the work dir (databases, LTX files, log)
#   --workdir DIR           use DIR (must not exist or be empty) instead of .cache/bench/run-*
#   --mount-debug           run litefs-rs with --debug (debug-level log)
# Everything else goes to bench/mount_bench.py, e.g. --repeat 5, --full-inserts 500,
# --only delete-full,read-delete (see `python3 bench/mount_bench.py --help`).
#
# Needs root (or a user allowed to mount FUSE filesystems).
# shellcheck disable=SC2317 # functions run indirectly (traps, wait_until)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

say() { echo "bench.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

compress=true
keep=0
mount_flags=()
workdir=""
pass=()
while (($# > 0)); do
  case "$1" in
    --compress) (($# >= 2)) || die "--compress needs true or false"; compress=$2; shift 2 ;;
    --compress=*) compress=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    --mount-debug) mount_flags+=(--debug); shift ;;
    --workdir) (($# >= 2)) || die "--workdir needs a directory"; workdir=$2; shift 2 ;;
    --workdir=*) workdir=${1#*=}; shift ;;
    -h | --help)
      sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      exec python3 bench/mount_bench.py --help
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
cargo build --release -p litefs-rs --locked
bin="$repo/${CARGO_TARGET_DIR:-target}/release/litefs-rs"
[[ -x $bin ]] || die "no binary at $bin"
# What was measured: the tree may have uncommitted changes, so say so.
build="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=$(git status --porcelain -- crates litefs-rs Cargo.toml Cargo.lock 2>/dev/null | wc -l)
if ((dirty > 0)); then build+=" + uncommitted changes in $dirty file(s) under crates/, litefs-rs/, Cargo.*"; fi

if [[ -z $workdir ]]; then
  workdir="$repo/.cache/bench/run-$(date +%Y%m%d-%H%M%S)-$$"
fi
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
if [[ -n $(ls -A "$workdir") ]]; then die "work dir $workdir is not empty"; fi
plain="$workdir/plain"
data="$workdir/data"
mnt="$workdir/mnt"
cfg="$workdir/litefs.yml"
log="$workdir/mount.log"
last_log="$repo/.cache/bench/last-mount.log"
mkdir -p "$plain" "$data" "$mnt" "$(dirname "$last_log")"
if [[ $(stat -c %d "$plain") != $(stat -c %d "$data") ]]; then
  die "$plain and $data are on different filesystems"
fi
# Run a private copy: another build may replace target/release/litefs-rs meanwhile.
cp "$bin" "$workdir/litefs-rs"
bin="$workdir/litefs-rs"
build+=", binary sha256 $(sha256sum "$bin" | cut -c1-12)"

cat >"$cfg" <<EOF
fuse:
  dir: "$mnt"
data:
  dir: "$data"
  compress: $compress
lease:
  type: static
  candidate: true
EOF

# /proc/self/mounts escapes space, tab, newline and backslash as octal.
mnt_escaped=$(printf '%s' "$mnt" | sed -e 's/\\/\\134/g' -e 's/ /\\040/g' -e 's/\t/\\011/g')
is_mounted() { awk -v m="$mnt_escaped" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; }

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

mount_pid=""
mount_status=""
# Exited (a zombie not yet reaped counts as exited; `kill -0` would still succeed on it).
process_gone() {
  local stat
  stat=$(cat "/proc/$mount_pid/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat%% *} == Z || ${stat%% *} == X ]]
}
not_mounted() { ! is_mounted; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $mount_pid ]]; then
    if ! process_gone; then
      say "stopping the mount (SIGTERM to PID $mount_pid)"
      kill -TERM "$mount_pid" 2>/dev/null
      if ! wait_until 30 process_gone; then
        say "WARNING: litefs-rs (PID $mount_pid) still running 30 s after SIGTERM"
      fi
    fi
    if process_gone; then
      wait "$mount_pid" 2>/dev/null
      mount_status=$?
      say "litefs-rs exited with status $mount_status"
      if ((mount_status != 0)); then
        say "WARNING: litefs-rs did not exit cleanly; last lines of its log:"
        tail -n 30 "$log" >&2
        ((status != 0)) || status=1
      fi
    fi
  fi
  if is_mounted && ! wait_until 10 not_mounted; then
    say "WARNING: $mnt still mounted; fusermount3 -u -z"
    fusermount3 -u -z "$mnt"
    ((status != 0)) || status=1
  fi
  if [[ -f $log ]]; then
    cp "$log" "$last_log"
    local problems
    problems=$(grep -ciE '\b(warn|error|panic)' "$log" || true)
    if ((problems > 0)); then
      say "the mount's log has $problems WARN/ERROR/panic line(s) (full log: $last_log):"
      grep -iE '\b(warn|error|panic)' "$log" | head -n 20 >&2
    fi
  fi
  if ((keep)); then
    say "kept the work dir: $workdir"
  elif ! is_mounted; then
    rm -rf "$workdir"
  else
    say "not removing $workdir: $mnt is still mounted"
  fi
  say "total run time (including build): $(awk -v a="$t_begin" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "work dir: $workdir (data.compress: $compress)"
NO_COLOR=1 "$bin" mount -config "$cfg" "${mount_flags[@]}" >"$log" 2>&1 &
mount_pid=$!

# Up when it is in /proc/self/mounts; stop waiting early if litefs-rs exits.
mount_settled() { process_gone || is_mounted; }
if ! wait_until 30 mount_settled || ! is_mounted; then
  say "the mount did not come up (litefs-rs $(process_gone && echo exited || echo 'still starting after 30 s')); its log:"
  cat "$log" >&2
  exit 1
fi
say "mounted at $mnt (PID $mount_pid)"

status=0
python3 bench/mount_bench.py --plain "$plain" --mount "$mnt" --data-dir "$data" \
  --note "litefs-rs data.compress=$compress; built from $build" "${pass[@]}" || status=$?
if ((status != 0)); then say "mount_bench.py exited with status $status"; fi
exit "$status"
