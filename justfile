# Developer recipes. `just` is optional: the README's commands do not need it.

set shell := ["bash", "-euo", "pipefail", "-c"]
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/converge-ledger/target")

# Start a node on ./data, port 50051
run *ARGS:
    ./scripts/run.sh {{ARGS}}

# The whole test suite (release profile, like the node)
test *ARGS:
    ./scripts/test.sh {{ARGS}}

# Read-only checks: formatting, lints, tests
verify:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets --locked -- -D warnings
    ./scripts/test.sh

# Apply formatting and machine-applicable lint fixes
fix:
    cargo fmt --all
    cargo clippy --release --workspace --all-targets --fix --allow-dirty --allow-staged

# Benchmarks (add --quick for a short run); figures go to docs/BENCHMARKS.md
bench *ARGS:
    cargo build --release --locked --workspace --all-targets
    "$CARGO_TARGET_DIR/release/ledger-bench" embedded {{ARGS}}
