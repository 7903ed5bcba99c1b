#!/usr/bin/env bash
# `just bench-oidc`: civichub and oidc-provider side by side on loopback.
# See README.md beside this file for what is measured.
#
# Environment (all optional):
#   CIVICHUB_BIN        civichub binary to use (default: cargo build --release -p civichub)
#   BENCH_DURATION      measured seconds per operation (default 10)
#   BENCH_WARMUP        warm-up seconds per operation (default 1)
#   BENCH_CONCURRENCY   concurrent connections (default 16)
#   BENCH_ID_TOKEN_ALG  RS256 or ES256, for both providers (default RS256)
#   BENCH_CIVICHUB_LOG  civichub's --log filter (default warn: no per-request log lines)
#   BENCH_OUT           directory to keep the JSON results in
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-1}
concurrency=${BENCH_CONCURRENCY:-16}
alg=${BENCH_ID_TOKEN_ALG:-RS256}
redirect=http://127.0.0.1:9/cb
username=bench
password=bench-password-1

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-oidc.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench-oidc: $*" >&2; exit 1; }

# Starts a server in the background (stdout to $work/NAME.out) and waits up
# to 30 s for its "listening on http://..." line; sets $url and $pid.
start() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    url=$(grep -oE 'listening on http://[^ ]+' "$work/$name.out" | head -1 | sed 's/^listening on //') || true
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.err" >&2; die "$name exited during startup"; }
    sleep 0.1
  done
  die "$name did not report its address within 30 s"
}

echo "== building"
(cd "$here" && npm ci --no-audit --no-fund --silent)
CARGO_TARGET_DIR="$root/bench/oidc-load/target" \
  cargo build --release --quiet --manifest-path "$root/bench/oidc-load/Cargo.toml"
load="$root/bench/oidc-load/target/release/oidc-load"
if [ -z "${CIVICHUB_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet -p civichub)
  CIVICHUB_BIN="$root/target/release/civichub"
fi
[ -x "$CIVICHUB_BIN" ] || die "no civichub binary at $CIVICHUB_BIN"

echo "== starting civichub ($CIVICHUB_BIN)"
data="$work/civichub-data"
mkdir -p "$data"
printf '%s\n' "$password" | "$CIVICHUB_BIN" user add "$username" --password-stdin \
  --name "Bench User" --email bench@example.test --department Benchmarks --data-dir "$data" >/dev/null
# One account per worker for password logins (people log in, not one person
# many times at once: an account's tries in flight count against its lockout).
for i in $(seq 0 $((concurrency - 1))); do
  printf '%s\n' "$password" | "$CIVICHUB_BIN" user add "$username-$i" --password-stdin --data-dir "$data" >/dev/null
done
secret=$("$CIVICHUB_BIN" client add bench-conf --redirect-uri "$redirect" --first-party \
  --id-token-alg "$alg" --data-dir "$data" 2>/dev/null | sed -n 's/^client_secret: *//p')
[ -n "$secret" ] || die "civichub client add printed no client_secret"
"$CIVICHUB_BIN" client add bench-public --public --first-party --redirect-uri "$redirect" \
  --id-token-alg "$alg" --data-dir "$data" >/dev/null 2>&1
start civichub "$CIVICHUB_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" --log "${BENCH_CIVICHUB_LOG:-warn}"
civichub_url=$url civichub_pid=$pid

echo "== starting oidc-provider"
start oidc-provider node "$here/provider.mjs" --port 0 --id-token-alg "$alg"
oidcp_url=$url oidcp_pid=$pid

sleep 1 # let both settle before the idle RSS reading
common=(--redirect-uri "$redirect" --username "$username" --password "$password"
  --concurrency "$concurrency" --duration "$duration" --warmup "$warmup")

echo
"$load" run --label civichub --issuer "$civichub_url" --pid "$civichub_pid" \
  --client-id bench-conf --client-secret "$secret" "${common[@]}" \
  --ops discovery,client_credentials,refresh,code_flow,password_login --login-users yes --json "$work/civichub.json"
echo
"$load" run --label oidc-provider --issuer "$oidcp_url" --pid "$oidcp_pid" \
  --client-id bench-conf --client-secret bench-conf-secret-0123456789abcdef "${common[@]}" \
  --ops discovery,client_credentials,refresh,code_flow --json "$work/oidc-provider.json"
echo
"$load" argon2 --duration 5 --json "$work/argon2.json"
signing=()
if [ "$alg" = RS256 ]; then
  "$load" rs256 --duration 5 --json "$work/rs256.json"
  signing=("$work/rs256.json")
fi
echo

node "$here/report.mjs" "$work/civichub.json" "$work/oidc-provider.json" "$work/argon2.json" "${signing[@]}"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT" && cp "$work"/*.json "$BENCH_OUT"/
fi
