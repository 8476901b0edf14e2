#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder (libFuzzer via cargo fuzz, nightly toolchain).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Seeds the corpus with valid inputs (crates/ledger-fuzz), then runs each target for the given
# time (default 60 s) with a 64 MB single-allocation limit (and libFuzzer's 2 GB RSS limit: AddressSanitizer's quarantine of freed memory alone takes a few hundred MB), so an input
# that makes a decoder allocate beyond the configured limits is reported as a crash. Crashes go
# to fuzz/artifacts/<target>/. The test suite runs the same targets on stable (a bounded
# mutation run); this is the longer, coverage-guided run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
secs="${1:-60}"
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
cargo run --release --locked -q -p ledger-fuzz --example write_seeds -- fuzz/corpus
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(snapshot_decode snapshot_stream leaf_decode checkpoint_parse request_decode digest_decode)
fi
cd fuzz
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${secs}s" >&2
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR}/fuzz" cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=64 -print_final_stats=1
done
