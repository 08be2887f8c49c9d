#!/usr/bin/env bash
# The run command: ./scripts/run.sh [litefs-rs arguments]
#
# Installs the dependencies (scripts/deps.sh) and builds the release binary. With arguments,
# runs `litefs-rs <arguments>` (e.g. `./scripts/run.sh ltx dump FILE`); without, shows the
# example configuration as litefs-rs loads it and the LTX tools.
set -euo pipefail

caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

scripts/deps.sh

locked=()
if [[ -f Cargo.lock ]]; then locked=(--locked); fi
cargo build --release -p litefs-rs "${locked[@]}"
bin="${CARGO_TARGET_DIR:-target}/release/litefs-rs"

if (($# > 0)); then
  # From the caller's directory, so that relative paths in the arguments mean what they say.
  bin=$(realpath "$bin")
  cd "$caller_dir"
  exec "$bin" "$@"
fi

step "$bin config -config config/litefs.yml"
"$bin" config -config config/litefs.yml

step "$bin ltx --help"
"$bin" ltx --help

cat <<NEXT

Next, try for example:
  $bin version
  $bin ltx verify ../shared/fixtures/ltx-v1/*.ltx
  ./scripts/run.sh ltx dump FILE.ltx
  scripts/consul-dev.sh          # a local Consul dev agent (scripts/consul-dev.sh stop)
NEXT
