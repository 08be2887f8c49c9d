#!/usr/bin/env bash
# The test command: ./scripts/test.sh [extra arguments for cargo nextest run]
#
# Installs the dependencies (scripts/deps.sh), then checks formatting, runs clippy with
# warnings as errors, and runs every test of the workspace. Stops at the first failing step.
# The integration tests mount FUSE filesystems, so run it as root for the full suite.
# The fuzz targets (fuzz/, if present) are not part of this; they are run separately.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "dependencies (scripts/deps.sh)"
scripts/deps.sh
# The Consul agent the tests start (scripts/deps.sh puts Debian's consul there).
export LITEFS_CONSUL_BIN="${LITEFS_CONSUL_BIN:-$PWD/.cache/consul/usr/bin/consul}"

# Cargo.lock is committed: the checks must not silently change it.
locked=()
if [[ -f Cargo.lock ]]; then locked=(--locked); fi

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets ${locked[*]} -- -D warnings"
cargo clippy --workspace --all-targets "${locked[@]}" -- -D warnings

# nextest does not run documentation examples.
step "cargo test --workspace --doc ${locked[*]}"
cargo test --workspace --doc "${locked[@]}"

# The full test run comes last, so that its summary closes the output.
if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace --no-fail-fast ${locked[*]} $*"
  cargo nextest run --workspace --no-fail-fast "${locked[@]}" "$@"
else
  step "cargo test --workspace --no-fail-fast ${locked[*]} $* (cargo-nextest is not installed)"
  cargo test --workspace --no-fail-fast "${locked[@]}" "$@"
fi

step "all checks passed"
