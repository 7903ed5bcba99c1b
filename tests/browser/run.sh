#!/usr/bin/env bash
# Page tests in headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core). Uses CIVICHUB_BIN, else the newer of target/debug and
# target/release. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
# A test that hangs fails after five minutes instead of holding up the run.
exec node --test --test-timeout=300000
