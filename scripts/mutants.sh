#!/usr/bin/env bash
# Shows that the replication simulation catches each deliberately broken protocol rule: compiles
# ledger-replication once per `ledger_mutant` cfg (see the workspace Cargo.toml's check-cfg) and
# runs the simulation tests; fails unless every mutant makes some test fail.
#
#   scripts/mutants.sh                   # every mutant
#   scripts/mutants.sh no_view_fencing   # just these
#
# Its own target dir (RUSTFLAGS differ per mutant, so the shared one would be rebuilt each time):
# MUTANTS_TARGET_DIR, default ~/.cache/converge-ledger/mutants-target. SIM_SEEDS etc. pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${MUTANTS_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/converge-ledger/mutants-target}"
mutants=(
  no_earlier_sets
  floor_ignores_dead
  no_view_fencing
  stale_incarnation_claims
  genesis_majority_without_views
)
if [ $# -gt 0 ]; then
  mutants=("$@")
fi
logs="$target/mutant-logs"
mkdir -p "$logs"
survived=()
for m in "${mutants[@]}"; do
  log="$logs/$m.log"
  started=$(date +%s)
  if RUSTFLAGS="--cfg ledger_mutant=\"$m\"" CARGO_TARGET_DIR="$target" \
    cargo test --release -p ledger-replication --test simulation >"$log" 2>&1; then
    echo "mutant $m: SURVIVED (every simulation test passed; log $log)"
    survived+=("$m")
  elif grep -q '^test result: FAILED' "$log"; then
    caught=$(sed -n '/^failures:$/,/^test result/p' "$log" | grep -E '^    [a-z0-9_]+$' | sort -u | tr -d ' ' | paste -sd, -)
    first=$(grep -m1 -oE 'seed [0-9]+ failed: .{0,160}' "$log" || true)
    echo "mutant $m: caught in $(( $(date +%s) - started ))s by ${caught} (${first:-see $log})"
  else
    echo "mutant $m: the build failed (log $log)"
    survived+=("$m")
  fi
done
if [ ${#survived[@]} -gt 0 ]; then
  echo "not caught: ${survived[*]}"
  exit 1
fi
echo "every mutant was caught (${#mutants[@]})"
