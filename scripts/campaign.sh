#!/usr/bin/env bash
# The fault campaign, long version: a three-node Consul cluster under the bank and append
# workloads, one fault a cycle (kill -9 of the primary or a replica, SIGTERM of the primary,
# SIGSTOP of the primary past its lease, Consul stopped and restarted, the primary partitioned
# from its peers and Consul, the replication links cut), every invariant checked
# after each cycle (tests/campaign.rs). The short version (7 cycles, one of each kind) runs with the tests.
#
#   ./scripts/campaign.sh [--cycles N] [--seed S]
#
# Installs the dependencies (scripts/deps.sh) and prints the figures of the run at the end
# (the `campaign:` line). Needs root (FUSE mounts).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cycles=200
seed=""
while (($# > 0)); do
  case "$1" in
    --cycles) cycles=${2:?--cycles needs a number}; shift 2 ;;
    --seed) seed=${2:?--seed needs a number}; shift 2 ;;
    -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "campaign.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
scripts/deps.sh
export LITEFS_CONSUL_BIN="${LITEFS_CONSUL_BIN:-$PWD/.cache/consul/usr/bin/consul}"
export LITEFS_CAMPAIGN_CYCLES=$cycles
if [[ -n $seed ]]; then export LITEFS_TEST_SEED=$seed; fi
# One test, its output shown as it runs (a cycle a line, then the figures).
exec cargo nextest run -p litefs-rs --test campaign --locked --no-capture --profile campaign
