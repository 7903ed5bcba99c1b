#!/usr/bin/env bash
# `just bench-kb`: the knowledge base's indexing rate and search throughput
# and latency, over HTTP, in-process (raw Tantivy) and in PostgreSQL
# full-text search, on one synthetic corpus and one query list.
# See README.md beside this file for what is measured.
#
# Environment (all optional):
#   BENCH_KB_ENTRIES    corpus size (default 100000; e.g. 10000 for a quick run)
#   BENCH_KB_QUERIES    queries in the list (default 400)
#   BENCH_KB_SEED       corpus and query seed (default 12345)
#   BENCH_DURATION      measured seconds per system (default 10)
#   BENCH_WARMUP        warm-up seconds per system (default 2)
#   BENCH_CONCURRENCY   connections / threads, the same for every system (default 4)
#   BENCH_PG_URL        a PostgreSQL database to connect to for creating and
#                       dropping the benchmark's own database
#                       (default postgres://postgres@127.0.0.1:5432/test)
#   CIVICHUB_BIN        civichub binary to use (default: cargo build --release -p civichub)
#   BENCH_CIVICHUB_LOG  civichub's --log filter (default warn: no per-request log lines)
#   BENCH_OUT           directory to keep the corpus, queries and JSON results in
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
entries=${BENCH_KB_ENTRIES:-100000}
nqueries=${BENCH_KB_QUERIES:-400}
seed=${BENCH_KB_SEED:-12345}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
concurrency=${BENCH_CONCURRENCY:-4}
pg_admin=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
pg_db=bench_kb_$$
pg_url="${pg_admin%/*}/$pg_db"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-kb.XXXXXX")
pids=()
pg_created=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_created" ]; then
    psql "$pg_admin" -qAt -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "${BENCH_OUT:-}" ]; then
    mkdir -p "$BENCH_OUT" && cp "$work"/*.json "$work"/*.jsonl "$work"/*.txt "$BENCH_OUT"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench-kb: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Starts the hub in the background (stdout to $work/NAME.out) and waits up
# to 30 min for its "listening on http://..." line (it indexes before it
# listens); sets $url and $pid.
start() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 18000); do
    url=$(grep -oE 'listening on http://[^ ]+' "$work/$name.out" | head -1 | sed 's/^listening on //') || true
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.err" >&2; die "$name exited during startup"; }
    sleep 0.1
  done
  die "$name did not report its address within 30 min"
}

stop() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

command -v psql >/dev/null || die "psql is needed (Debian: postgresql-client)"
psql "$pg_admin" -qAt -c 'SELECT 1' >/dev/null || die "cannot connect to PostgreSQL at $pg_admin"

echo "== building"
CARGO_TARGET_DIR="$root/bench/kb-load/target" \
  nice cargo build --release --quiet --manifest-path "$root/bench/kb-load/Cargo.toml"
load="$root/bench/kb-load/target/release/kb-load"
if [ -z "${CIVICHUB_BIN:-}" ]; then
  (cd "$root" && nice cargo build --release --quiet -p civichub)
  CIVICHUB_BIN="$root/target/release/civichub"
fi
[ -x "$CIVICHUB_BIN" ] || die "no civichub binary at $CIVICHUB_BIN"

echo "== corpus"
python3 "$here/corpus.py" --entries "$entries" --queries "$nqueries" --seed "$seed" --out "$work" | tee "$work/corpus.txt"
corpus="$work/corpus.jsonl"
queries="$work/queries.jsonl"
data="$work/civichub-data"
mkdir -p "$data"

echo "== civichub kb import ($entries entries, one transaction each)"
t0=$(now)
"$CIVICHUB_BIN" kb import "$corpus" --data-dir "$data" >"$work/import.out" 2>"$work/import.err" \
  || { cat "$work/import.err" >&2; die "import failed"; }
t1=$(now)
import_s=$(secs "$t0" "$t1")
cat "$work/import.out"
grep -q "$entries loaded, 0 refused" "$work/import.out" || die "the import did not load every entry"
echo "import: ${import_s} s"

echo "== civichub kb reindex (no hub running: rebuilds $data/kb-index here)"
t0=$(now)
"$CIVICHUB_BIN" kb reindex --data-dir "$data" >"$work/reindex.out" 2>"$work/reindex.err" \
  || { cat "$work/reindex.err" >&2; die "reindex failed"; }
t1=$(now)
reindex_s=$(secs "$t0" "$t1")
cat "$work/reindex.out"
grep -q "index rebuilt: $entries published entries" "$work/reindex.out" || die "kb reindex did not index every entry"
echo "reindex: ${reindex_s} s"

# The index's commit counter and segment count (meta.json): a rebuild of N
# entries moves the counter by more than N.
meta() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["opstamp"], len(m["segments"]))' "$data/kb-index/meta.json"; }
read -r opstamp_before _ < <(meta)

echo "== starting civichub ($CIVICHUB_BIN)"
t0=$(now)
start civichub "$CIVICHUB_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" \
  --log "${BENCH_CIVICHUB_LOG:-warn}" --kb-rate-limit 0
t1=$(now)
startup_s=$(secs "$t0" "$t1")
civichub_pid=$pid
read -r opstamp_after segments < <(meta)
rebuilt_at_start=false
[ $((opstamp_after - opstamp_before)) -ge "$entries" ] && rebuilt_at_start=true
echo "civichub listening at $url after ${startup_s} s (index: $segments segments; rebuilt at start: $rebuilt_at_start)"

cat >"$work/indexing.json" <<EOF
{"entries": $entries, "import_s": $import_s, "reindex_s": $reindex_s, "startup_s": $startup_s,
 "rebuilt_at_start": $rebuilt_at_start, "segments": $segments}
EOF

common=(--queries "$queries" --concurrency "$concurrency" --duration "$duration" --warmup "$warmup")
echo
echo "== HTTP search: GET /api/public/kb/search, $concurrency connections"
"$load" http --url "$url" --pid "$civichub_pid" --record "$work/http-top.json" "${common[@]}" \
  --label "HTTP search" --json "$work/http.json"
"$load" http --url "$url" --pid "$civichub_pid" --queries "$queries" --concurrency 1 \
  --duration "$duration" --warmup "$warmup" --label "HTTP search, 1 conn" --json "$work/http1.json"
stop "$civichub_pid"

echo
echo "== raw Tantivy: KbIndex::search in process on the same index, $concurrency threads"
"$load" raw --index "$data/kb-index" --compare "$work/http-top.json" "${common[@]}" \
  --label "raw Tantivy" --json "$work/raw.json"

echo
echo "== PostgreSQL full-text search (database $pg_db)"
psql "$pg_admin" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $pg_db" >/dev/null
pg_created=1
"$load" pg-load --pg "$pg_url" --corpus "$corpus" --json "$work/pg-load.json"
"$load" pg --pg "$pg_url" --mode or --compare "$work/http-top.json" "${common[@]}" \
  --label "PostgreSQL FTS (OR)" --json "$work/pg.json"
"$load" pg --pg "$pg_url" --mode and --compare "$work/http-top.json" "${common[@]}" \
  --label "PostgreSQL FTS (AND)" --json "$work/pg-and.json"
echo

python3 "$here/report.py" "$work"
