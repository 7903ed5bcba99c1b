#!/usr/bin/env bash
# The whole test suite: Rust unit and end-to-end tests on SQLite and
# PostgreSQL, then the interop test with a relying party we did not write.
# Installs and starts what the tests need (Debian, as root) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
need_pkg() { # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  shift
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL on 127.0.0.1:5432 with trust auth (the CI machine runs one already).
need_pkg pg_isready postgresql-client
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  need_pkg pg_ctlcluster postgresql
  cluster=$(ls /etc/postgresql | head -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
need_pkg psql postgresql-client

# nats-server for the messaging tests: each starts its own on a free port
# with a temporary store (the CI machine's server on 4222 stays untouched).
need_pkg nats-server nats-server
[ -x /usr/sbin/nats-server ] && export PATH="$PATH:/usr/sbin"

# Node.js for the end-to-end tests that federate to oidc-provider (npm), and the interop tests.
need_pkg node nodejs
need_pkg npm npm
(cd bench/oidc && npm ci --no-audit --no-fund >/dev/null)

# Lints first: a warning fails the run (tests may unwrap; see clippy.toml).
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# Built first, then run. Every scenario has its own time limit; this one
# catches anything else that hangs, so a run fails with its output instead of
# running out of CI time.
cargo test --workspace --locked --no-run
timeout 30m cargo test --workspace --locked

export CIVICHUB_BIN="$PWD/target/debug/civichub"
bash tests/interop/run.sh

# Pages in headless Chromium (Debian's; a browser download would fail here).
need_pkg chromium chromium
bash tests/browser/run.sh
