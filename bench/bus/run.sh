#!/usr/bin/env bash
# `just bench-bus`: the messaging hub's throughput and latency, from
# POST /api/messages to the CMPP gateway (a simulator that timestamps what
# it receives), against raw async-nats JetStream publishing on the same NATS
# server. See README.md beside this file for what is measured.
#
# Environment (all optional):
#   BENCH_DURATION      measured seconds per phase (default 10)
#   BENCH_WARMUP        warm-up seconds (default 2)
#   BENCH_CONCURRENCY   connections of the closed-loop API run, and
#                       unacknowledged publishes of the raw run (default 16)
#   BENCH_RATE          messages/s of the open-loop API run (default 1000)
#   BENCH_DATABASE_URL  the hub's database (default: SQLite in the temporary
#                       data directory; a postgres://… URL must name an empty
#                       database of its own: the run neither creates nor drops it)
#   CIVICHUB_BIN        civichub binary to use (default: cargo build --release -p civichub)
#   NATS_SERVER_BIN     nats-server binary (default: nats-server on the PATH)
#   BENCH_CIVICHUB_LOG  civichub's --log filter (default warn)
#   BENCH_OUT           directory to keep the JSON results and the logs in
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
concurrency=${BENCH_CONCURRENCY:-16}
rate=${BENCH_RATE:-1000}
nats_bin=${NATS_SERVER_BIN:-nats-server}

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-bus.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${BENCH_OUT:-}" ]; then
    mkdir -p "$BENCH_OUT" && cp "$work"/*.json "$work"/*.out "$work"/*.err "$BENCH_OUT"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench-bus: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

# The hub reads CIVICHUB_* from the environment: none of the caller's may leak in.
for v in $(env | grep -oE '^CIVICHUB_[A-Z_]+' | grep -v '^CIVICHUB_BIN$' || true); do unset "$v"; done

command -v "$nats_bin" >/dev/null || die "nats-server is needed (Debian: nats-server), or set NATS_SERVER_BIN"
command -v python3 >/dev/null || die "python3 is needed"

echo "== building"
CARGO_TARGET_DIR="$root/bench/bus-load/target" \
  nice cargo build --release --quiet --manifest-path "$root/bench/bus-load/Cargo.toml"
load="$root/bench/bus-load/target/release/bus-load"
if [ -z "${CIVICHUB_BIN:-}" ]; then
  (cd "$root" && nice cargo build --release --quiet -p civichub)
  CIVICHUB_BIN="$root/target/release/civichub"
fi
[ -x "$CIVICHUB_BIN" ] || die "no civichub binary at $CIVICHUB_BIN"

echo "== nats-server (JetStream, store in $work/nats)"
nats_port=$(free_port)
mkdir -p "$work/nats"
"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.out" 2>"$work/nats.err" &
nats_pid=$!
pids+=("$nats_pid")
nats_url="nats://127.0.0.1:$nats_port"
for _ in $(seq 100); do
  grep -q "Server is ready" "$work/nats.err" "$work/nats.out" 2>/dev/null && break
  kill -0 "$nats_pid" 2>/dev/null || { cat "$work/nats.err" >&2; die "nats-server exited during startup"; }
  sleep 0.1
done
grep -q "Server is ready" "$work/nats.err" "$work/nats.out" 2>/dev/null || die "nats-server did not become ready"
echo "nats-server $("$nats_bin" --version 2>/dev/null | awk '{print $2}') at $nats_url (pid $nats_pid)"

echo "== load generator and CMPP simulator"
"$load" hub --nats "$nats_url" --nats-pid "$nats_pid" --ready-file "$work/sim.addr" --go-file "$work/go.json" \
  --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" --rate "$rate" \
  --json "$work/hub.json" > >(tee "$work/load.out") 2>"$work/load.err" &
load_pid=$!
pids+=("$load_pid")
for _ in $(seq 300); do
  [ -s "$work/sim.addr" ] && break
  kill -0 "$load_pid" 2>/dev/null || { cat "$work/load.err" >&2; die "the load generator exited during startup"; }
  sleep 0.1
done
[ -s "$work/sim.addr" ] || die "the CMPP simulator did not start"
sim_addr=$(cat "$work/sim.addr")

echo "== starting civichub ($CIVICHUB_BIN)"
data="$work/civichub-data"
mkdir -p "$data"
db_flags=()
[ -n "${BENCH_DATABASE_URL:-}" ] && db_flags=(--database-url "$BENCH_DATABASE_URL")
"$CIVICHUB_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" "${db_flags[@]}" \
  --log "${BENCH_CIVICHUB_LOG:-warn}" --nats-url "$nats_url" \
  --sms-gateway cmpp --cmpp-addr "$sim_addr" --cmpp-sp-id 901234 --cmpp-secret secret \
  --cmpp-src-id 10690012345 --cmpp-window 64 >"$work/civichub.out" 2>"$work/civichub.err" &
hub_pid=$!
pids+=("$hub_pid")
url=
for _ in $(seq 600); do
  url=$(grep -oE 'listening on http://[^ ]+' "$work/civichub.out" | head -1 | sed 's/^listening on //') || true
  [ -n "$url" ] && break
  kill -0 "$hub_pid" 2>/dev/null || { cat "$work/civichub.err" >&2; die "civichub exited during startup"; }
  sleep 0.1
done
[ -n "$url" ] || die "civichub did not report its address within 60 s"
echo "civichub listening at $url (pid $hub_pid; $(grep -E '^(database|bus):' "$work/civichub.out" | tr '\n' ' '))"

"$CIVICHUB_BIN" client add bench-bus --redirect-uri https://x.example/cb --first-party --scope messages:send \
  --data-dir "$data" "${db_flags[@]}" >"$work/client.out" 2>"$work/client.err" \
  || { cat "$work/client.err" >&2; die "civichub client add failed"; }
secret=$(sed -n 's/^client_secret: //p' "$work/client.out")
[ -n "$secret" ] || die "civichub client add printed no client_secret"
python3 -c 'import json,sys; print(json.dumps({"url": sys.argv[1], "pid": int(sys.argv[2]), "client_id": "bench-bus", "client_secret": sys.argv[3]}))' \
  "$url" "$hub_pid" "$secret" >"$work/go.json.tmp"
mv "$work/go.json.tmp" "$work/go.json"

echo
# The generator writes hub.json, then keeps its CMPP simulator up until the
# hub has stopped (so the hub's log does not end with a lost link).
while [ ! -s "$work/hub.json" ] && kill -0 "$load_pid" 2>/dev/null; do sleep 0.2; done
[ -s "$work/hub.json" ] || { wait "$load_pid" || true; cat "$work/load.err" >&2; die "the load generator failed"; }
rm -f "$work/go.json"  # the client secret
kill -0 "$hub_pid" 2>/dev/null || { cat "$work/civichub.err" >&2; die "civichub died during the run"; }
hub_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$hub_pid/status" 2>/dev/null || echo 0)
log_lines=$(wc -l <"$work/civichub.err")
stop "$hub_pid"
wait "$load_pid" || { cat "$work/load.err" >&2; die "the load generator failed"; }
stop "$load_pid"
python3 - "$work/civichub.err" "$hub_rss" "$log_lines" >"$work/hublog.json" <<'EOF'
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
# tracing's format: "<time>  WARN target: message"; ANSI colours stripped.
strip = lambda s: re.sub(r"\x1b\[[0-9;]*m", "", s)
running = int(sys.argv[3] or 0)  # lines written before the hub was told to stop
levels = {"WARN": 0, "ERROR": 0}
first = {}
for i, raw in enumerate(lines):
    line = strip(raw)
    m = re.search(r"\s(WARN|ERROR)\s+(.*)", line)
    if not m:
        continue
    when = "run" if i < running else "shutdown"
    if when == "run":
        levels[m.group(1)] += 1
    # Group by message with numbers and ids blanked out.
    key = (when, re.sub(r"[0-9a-f]{12,}|\d+", "N", m.group(2))[:160])
    first.setdefault(key, [0, m.group(1), m.group(2)[:300], when])
    first[key][0] += 1
top = sorted(first.values(), key=lambda x: (x[3] != "run", -x[0]))[:8]
print(json.dumps({"warn": levels["WARN"], "error": levels["ERROR"], "lines": len(lines),
                  "rss_end_kib": int(sys.argv[2] or 0),
                  "top": [{"count": c, "level": l, "example": e, "when": w} for c, l, e, w in top]}))
EOF

echo
echo "== raw JetStream publishing (civichub stopped), same nats-server"
"$load" raw --nats "$nats_url" --nats-pid "$nats_pid" --concurrency "$concurrency" \
  --duration "$duration" --warmup "$warmup" --json "$work/raw.json" \
  || die "the raw JetStream run failed"
echo

python3 "$here/report.py" "$work"
