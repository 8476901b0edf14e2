#!/usr/bin/env bash
# Starts a Converge Ledger node on the embedded default: data in ./data, gRPC on port 50051.
# Extra arguments go to `converge-ledger serve` (e.g. --data-dir, --port, --config).
# On a fresh machine the first run installs build dependencies and compiles (~15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
. scripts/env.sh
# The same package selection as the tests, clippy and the benchmarks: any other one unifies
# features differently and compiles RocksDB a second time (~15 minutes) in the shared target dir.
cargo build $LEDGER_PROFILE_FLAG --locked --workspace --all-targets
exec "$CARGO_TARGET_DIR/release/converge-ledger" serve "$@"
