#!/usr/bin/env bash
# Runs the whole test suite (unit, property, conformance, crash and end-to-end tests), in the
# same release profile the node runs in. Installs build dependencies first if they are missing.
#
# The container suite (tests/e2e_containers.rs: the image of deploy/image.sh, the compose
# cluster of deploy/compose, attacked by a nemesis) runs after the others and alone, with its
# table shown; with no Docker engine reachable it says that it skipped and why.
# Arguments go to the test runner (then everything runs in one invocation).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# chromium and chromedriver for the observer's browser test (it skips, saying why, without them).
./scripts/browser.sh
. scripts/env.sh
status=0
if cargo nextest --version >/dev/null 2>&1; then
  if [ $# -eq 0 ]; then
    cargo nextest run $LEDGER_PROFILE_FLAG --locked --workspace --no-fail-fast \
      -E 'not binary(e2e_containers)' || status=$?
    cargo nextest run $LEDGER_PROFILE_FLAG --locked -p ledger-node --test e2e_containers \
      --no-fail-fast --no-capture || status=$?
  else
    cargo nextest run $LEDGER_PROFILE_FLAG --locked --workspace --no-fail-fast "$@" || status=$?
  fi
else
  cargo test $LEDGER_PROFILE_FLAG --locked --workspace --no-fail-fast "$@" || status=$?
fi
# Doc examples (nextest does not run them).
cargo test $LEDGER_PROFILE_FLAG --locked --workspace --doc || status=$?
exit $status
