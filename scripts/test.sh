#!/usr/bin/env bash
# Runs the whole test suite (unit, property, conformance, crash and end-to-end tests), in the
# same release profile the node runs in. Installs build dependencies first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# chromium and chromedriver for the observer's browser test (it skips, saying why, without them).
./scripts/browser.sh
. scripts/env.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run $LEDGER_PROFILE_FLAG --locked --workspace --no-fail-fast "$@"
else
  cargo test $LEDGER_PROFILE_FLAG --locked --workspace --no-fail-fast "$@"
fi
# Doc examples (nextest does not run them).
cargo test $LEDGER_PROFILE_FLAG --locked --workspace --doc
