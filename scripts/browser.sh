#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the observer's browser test
# (tests/e2e_observer.rs), once. Never fails the caller: without a browser that test says it
# skipped and why.
set -uo pipefail

if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0
fi
if [ "${LEDGER_NO_BROWSER:-}" = "1" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: no apt-get here; the observer's browser test will skip (install chromium and chromedriver yourself)" >&2
  exit 0
fi
echo "browser: installing chromium and chromium-driver (Debian packages) for the observer test" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
  echo "browser: could not install chromium; the observer's browser test will skip" >&2
fi
exit 0
