#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 180), one after the other, one job
# each: ./scripts/fuzz.sh [SECONDS] [TARGET...] (all targets of `cargo fuzz list` by default)
#
# Needs a nightly toolchain (`cargo +nightly`); installs cargo-fuzz if it is missing. Each
# target's corpus grows in fuzz/corpus/TARGET, seeded from fuzz/seeds/TARGET (and the LTX
# decoder's by fuzz/seed.sh); crashes land in fuzz/artifacts/TARGET, and the full libFuzzer
# output in fuzz/logs/TARGET.log. Prints one summary line per target and exits non-zero if any
# target found a crash, an out-of-memory or a timeout. See docs/fuzzing.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-180}"
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build

mkdir -p logs
# The golden LTX files of shared/fixtures, when present, seed the LTX decoder.
if [[ ! -d corpus/ltx_decoder && -d ../../shared/fixtures ]]; then ./seed.sh >/dev/null || true; fi
failed=0
printf '%-18s %8s %14s %8s %8s %8s\n' target seconds executions corpus cov crashes
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Hand-made seeds (fuzz/seeds/T), where the fuzzer would take long to find a valid start.
  if [[ -d "seeds/$t" ]]; then cp -n "seeds/$t"/* "corpus/$t/"; fi
  before=$(find "artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  set +e
  # One process, one job (libFuzzer's default; `-jobs=1` would send the output to fuzz-0.log).
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"logs/$t.log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  after=$(find "artifacts/$t" -type f | wc -l)
  # libFuzzer's last status line ("#N ... cov: C ... corp: K/...") and its final stats.
  execs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "logs/$t.log" | grep -o "[0-9]*$" | tail -1 || true)
  if [[ -z "$execs" ]]; then
    execs=$(grep -o '^#[0-9]*' "logs/$t.log" | tail -1 | tr -d '#' || true)
  fi
  cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*' || true)
  corpus=$(find "corpus/$t" -type f | wc -l)
  crashes=$(( after - before ))
  if [[ $rc -ne 0 && $crashes -eq 0 ]]; then crashes="?(rc $rc)"; fi
  if [[ "$crashes" != 0 ]]; then failed=1; fi
  printf '%-18s %8s %14s %8s %8s %8s\n' "$t" "$took" "${execs:-?}" "$corpus" "${cov:-?}" "$crashes"
done
exit "$failed"
