# Shared settings for the project's scripts (sourced, not run).
# One cargo target dir outside the clone, so a fresh clone (and CI) reuses an existing RocksDB
# build instead of spending ~15 minutes compiling it again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/converge-ledger/target}"
# One profile for running, testing and benchmarking: RocksDB is compiled once, optimised.
export LEDGER_PROFILE_FLAG="--release"
