#!/usr/bin/env bash
# Interop test: openid-client (certified RP) against the civichub binary.
# Uses CIVICHUB_BIN, else the newer of target/debug/civichub and
# target/release/civichub (build one first). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
# A test that hangs fails after five minutes instead of holding up the run.
exec node --test --test-timeout=300000 oidc.test.mjs openapi.test.mjs
