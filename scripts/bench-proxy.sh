#!/usr/bin/env bash
# The proxy benchmark: what litefs-rs's HTTP proxy adds to a request, against the same
# requests sent straight to the application, in the same run.
#
#   ./scripts/bench-proxy.sh [--bin PATH] [bench args...]
#
# Installs the dependencies (scripts/deps.sh), builds the release binary (or measures the
# one given with --bin) and runs bench/proxy_bench.py, which starts one node with its proxy in
# front of a small Python app, prints a table of median and p99 latencies, and stops
# everything it started however it ends. Other arguments go to bench/proxy_bench.py, e.g.
# --requests 5000 (see `python3 bench/proxy_bench.py --help`).
#
# Needs root (or a user allowed to mount FUSE filesystems).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command_line="./scripts/bench-proxy.sh${*:+ $*}"
given_bin=""
pass=()
while (($# > 0)); do
  case "$1" in
    --bin) given_bin=${2:?--bin needs a path}; shift 2 ;;
    --bin=*) given_bin=${1#*=}; shift ;;
    -h | --help)
      sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exec python3 bench/proxy_bench.py --help
      ;;
    *) pass+=("$1"); shift ;;
  esac
done

scripts/deps.sh
if [[ -n $given_bin ]]; then
  bin=$(realpath "$given_bin")
  build="the given binary $bin"
else
  cargo build --release -p litefs-rs --locked
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$PWD/$target
  bin=$target/release/litefs-rs
  build="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
[[ -x $bin ]] || { echo "bench-proxy.sh: no binary at $bin" >&2; exit 1; }
exec python3 bench/proxy_bench.py --bin "$bin" --command "$command_line" \
  --note "litefs-rs built from $build" "${pass[@]}"
