#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs to build Converge Ledger, once.
# - libclang-dev: bindgen for the bundled RocksDB bindings (librocksdb-sys).
# - a C++ toolchain and make: RocksDB itself is compiled from source by the rocksdb crate.
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

need=()
# bindgen looks for libclang.so; Debian ships it in libclang-dev (or libclang1-N).
if [ -z "${LIBCLANG_PATH:-}" ] && ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null; then
  need+=(libclang-dev)
fi
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
