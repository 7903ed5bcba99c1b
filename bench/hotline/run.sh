#!/usr/bin/env bash
# `just bench-hotline`: ticket registrations per second and the latency from
# registering a ticket to the handler's DingTalk work notice arriving at the
# DingTalk simulator, through the whole hub: POST /api/hotline/tickets, then
# /dispatch, the outbox, NATS JetStream, the notice consumer, the message
# router and the DingTalk sender. No peer is named for this benchmark.
#
# Environment (all optional):
#   BENCH_DURATION     measured seconds (default 10)
#   BENCH_WARMUP       warm-up seconds (default 2)
#   BENCH_CONCURRENCY  agents' connections, each registering and dispatching in a loop (default 8)
#   BENCH_DATABASE_URL the hub's database (default SQLite in the temporary data directory)
#   CIVICHUB_BIN       civichub binary (default: cargo build --release -p civichub)
#   NATS_SERVER_BIN    nats-server binary (default: nats-server on the PATH)
#   BENCH_OUT          directory to keep the JSON result and the logs in
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
nats_bin=${NATS_SERVER_BIN:-nats-server}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-hotline.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${BENCH_OUT:-}" ]; then mkdir -p "$BENCH_OUT" && cp "$work"/*.json "$work"/*.out "$work"/*.err "$BENCH_OUT"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "bench-hotline: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for v in $(env | grep -oE '^CIVICHUB_[A-Z_]+' | grep -v '^CIVICHUB_BIN$' || true); do unset "$v"; done
command -v "$nats_bin" >/dev/null || die "nats-server is needed (Debian: nats-server), or set NATS_SERVER_BIN"
command -v python3 >/dev/null || die "python3 is needed"

echo "== building"
CARGO_TARGET_DIR="$root/bench/bus-load/target" nice cargo build --release --quiet --manifest-path "$root/bench/bus-load/Cargo.toml"
load="$root/bench/bus-load/target/release/bus-load"
if [ -z "${CIVICHUB_BIN:-}" ]; then
  (cd "$root" && nice cargo build --release --quiet -p civichub)
  CIVICHUB_BIN="$root/target/release/civichub"
fi

echo "== nats-server"
nats_port=$(free_port)
mkdir -p "$work/nats"
"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.out" 2>"$work/nats.err" &
pids+=("$!")
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.err" "$work/nats.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Server is ready" "$work/nats.err" "$work/nats.out" 2>/dev/null || die "nats-server did not become ready"

echo "== load generator and DingTalk simulator"
"$load" hotline --ready-file "$work/sim.json" --go-file "$work/go.json" --concurrency "${BENCH_CONCURRENCY:-8}" \
  --duration "${BENCH_DURATION:-10}" --warmup "${BENCH_WARMUP:-2}" --json "$work/hotline.json" \
  > >(tee "$work/load.out") 2>"$work/load.err" &
load_pid=$!
pids+=("$load_pid")
for _ in $(seq 300); do [ -s "$work/sim.json" ] && break; kill -0 "$load_pid" 2>/dev/null || { cat "$work/load.err" >&2; die "the load generator exited"; }; sleep 0.1; done
[ -s "$work/sim.json" ] || die "the DingTalk simulator did not start"
sim() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/sim.json" "$1"; }

echo "== starting civichub ($CIVICHUB_BIN)"
data="$work/civichub-data"
mkdir -p "$data"
db_flags=()
[ -n "${BENCH_DATABASE_URL:-}" ] && db_flags=(--database-url "$BENCH_DATABASE_URL")
"$CIVICHUB_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" "${db_flags[@]}" --log warn --nats-url "nats://127.0.0.1:$nats_port" \
  --dingtalk-app-key "$(sim app_key)" --dingtalk-app-secret "$(sim app_secret)" --dingtalk-agent-id "$(sim agent_id)" \
  --dingtalk-api-base "$(sim base_url)" --dingtalk-oapi-base "$(sim base_url)" >"$work/civichub.out" 2>"$work/civichub.err" &
hub_pid=$!
pids+=("$hub_pid")
url=
for _ in $(seq 600); do
  url=$(grep -oE 'listening on http://[^ ]+' "$work/civichub.out" 2>/dev/null | head -1 | sed 's/^listening on //') || true
  [ -n "$url" ] && break
  kill -0 "$hub_pid" 2>/dev/null || { cat "$work/civichub.err" >&2; die "civichub exited during startup"; }
  sleep 0.1
done
[ -n "$url" ] || die "civichub did not start"
cli() { "$CIVICHUB_BIN" "$@" --data-dir "$data" "${db_flags[@]}"; }
echo 'bench-agent-password' | cli user add bench-agent --password-stdin --role agent >/dev/null
echo 'bench-handler-password' | cli user add bench-handler --password-stdin --role handler --department 城管局 >/dev/null
cli user link bench-handler --dingtalk bench-handler >/dev/null
secret=$(cli client add bench-hotline --redirect-uri http://127.0.0.1:9/cb --first-party --scope hotline | sed -n 's/^client_secret: //p')
[ -n "$secret" ] || die "civichub client add printed no client_secret"
python3 -c 'import json,sys; print(json.dumps({"url": sys.argv[1], "client_id": "bench-hotline", "client_secret": sys.argv[2], "redirect_uri": "http://127.0.0.1:9/cb", "username": "bench-agent", "password": "bench-agent-password"}))' \
  "$url" "$secret" >"$work/go.json.tmp"
mv "$work/go.json.tmp" "$work/go.json"

wait "$load_pid" || { cat "$work/load.err" >&2; die "the load generator failed"; }
rm -f "$work/go.json"
kill -0 "$hub_pid" 2>/dev/null || { cat "$work/civichub.err" >&2; die "civichub died during the run"; }
echo
python3 - "$work/hotline.json" "$work/civichub.err" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["max"]
lat = r["latency"]
fmt = lambda v: "-" if v is None else f"{v:.1f}"
print(f"bench-hotline: {r['window_s']:.1f} s, registered and dispatched {r['dispatched']} tickets: {r['registered_per_s']:.1f} registrations/s")
print(f"registration → handler's DingTalk notice: p50 {fmt(lat['p50_ms'])} ms, p90 {fmt(lat['p90_ms'])} ms, p99 {fmt(lat['p99_ms'])} ms, max {fmt(lat['max_ms'])} ms")
print(f"notices {r['notified']}, missing {r['missing']}, API errors {r['errors']}" + (f" (first: {r['first_error']})" if r['first_error'] else ""))
warn = sum(1 for l in open(sys.argv[2], errors="replace") if " WARN " in l or " ERROR " in l)
print(f"civichub WARN/ERROR lines: {warn}")
PY
