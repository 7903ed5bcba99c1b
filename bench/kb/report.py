#!/usr/bin/env python3
"""Prints the bench-kb table, the ratios and the targets from the JSON files
run.sh and kb-load wrote into one directory.

    python3 report.py DIR
"""

import json
import os
import sys


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def num(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def bad(r):
    return 0 if r is None else r["errors"] + r["warmup_errors"]


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main():
    d = sys.argv[1]
    ix = load(d, "indexing.json")
    pgl = load(d, "pg-load.json")
    http, http1, raw = load(d, "http.json"), load(d, "http1.json"), load(d, "raw.json")
    pg, pg_and = load(d, "pg.json"), load(d, "pg-and.json")
    n = ix["entries"]

    print(f"bench-kb: {n:,} synthetic entries, {http['queries']} queries, "
          f"{http['concurrency']} connections/threads, {http['seconds']:.0f} s per system")
    print()
    print("indexing")
    rows = [["step", "seconds", "entries/s", "what"]]
    rows.append(["civichub kb import", num(ix["import_s"], 1), num(n / ix["import_s"]),
                 "JSON Lines into the database (SQLite), one transaction per entry"])
    rows.append(["civichub kb reindex", num(ix["reindex_s"], 1), num(n / ix["reindex_s"]),
                 "index build: read every entry from the database, rebuild kb-index, commit"])
    rows.append(["civichub serve start", num(ix["startup_s"], 1), "",
                 "process start until it listens (the index is brought up to date first)"
                 + ("; it rebuilt the whole index again" if ix.get("rebuilt_at_start") else "")])
    if pgl:
        rows.append(["PostgreSQL load", num(pgl["copy_s"] + pgl["gin_s"], 1),
                     num(n / (pgl["copy_s"] + pgl["gin_s"])),
                     f"bigram segmentation + COPY {pgl['copy_s']:.1f} s, GIN index {pgl['gin_s']:.1f} s "
                     f"(VACUUM ANALYZE {pgl['analyze_s']:.1f} s more), {pgl['total_bytes'] / 1048576:.0f} MB"])
    table(rows)
    if ix.get("segments") is not None:
        print(f"  index: {ix['segments']} segments when the hub started; raw Tantivy saw "
              f"{raw.get('index_docs', '-') if raw else '-'} documents")

    print()
    print("search (GET /api/public/kb/search?q=…&page=1&size=10 and its equivalents)")
    rows = [["system", "ops/s", "p50 ms", "p90 ms", "p99 ms", "hits/query", "matches/query", "server CPU", "client CPU", "other CPU", "errors"]]
    busy = []
    for r in (http, raw, pg, pg_and, http1):
        if r is None:
            continue
        server = r["server_cpu_pct"]
        client = r["generator_cpu_pct"]
        machine = r.get("machine_cpu_pct")
        other = None if machine is None else max(0.0, machine - (server or 0) - (client or 0))
        if other is not None and other > 15:
            busy.append(r["label"])
        rows.append([
            r["label"], num(r["ops_per_sec"], 1), num(r["p50_ms"], 2), num(r["p90_ms"], 2), num(r["p99_ms"], 2),
            num(r["mean_hits"], 1),
            num(r["mean_total"]),
            "-" if server is None else f"{server:.0f} %",
            "-" if client is None else f"{client:.0f} %",
            "-" if other is None else f"{other:.0f} %",
            bad(r),
        ])
    table(rows)
    cores = os.cpu_count()
    print(f"  (CPU: 100 % = one core, {cores} cores in all; raw Tantivy's searching threads are the client;"
          " other = the rest of the machine)")
    if busy:
        print(f"  warning: other processes used the CPU during {', '.join(busy)}: those numbers are low")
    for r in (raw, pg, pg_and):
        a = r and r.get("agreement_with_http")
        if a and r is raw:
            print(f"  {r['label']}: same scores rank by rank as HTTP for {a['same_scores']} of {a['queries']} queries, "
                  f"same top-10 ids for {a['same_top_ids']} (the rest differ only among equal scores)")
        elif a:
            print(f"  {r['label']}: same top-10 ids as HTTP for {a['same_top_ids']} of {a['queries']} queries, "
                  f"mean overlap {a['mean_overlap'] * 100:.0f} %")
    for r in (http, http1, raw, pg, pg_and):
        if r and r.get("first_error"):
            print(f"  note: {r['label']}: first error: {r['first_error']}")

    print()
    clean = all(bad(r) == 0 for r in (http, raw, pg))
    vs_raw = http["ops_per_sec"] / raw["ops_per_sec"] if raw and raw["ops_per_sec"] else None
    vs_pg = http["ops_per_sec"] / pg["ops_per_sec"] if pg and pg["ops_per_sec"] else None
    vs_pg_and = http["ops_per_sec"] / pg_and["ops_per_sec"] if pg_and and pg_and["ops_per_sec"] else None
    print(f"HTTP ÷ raw Tantivy throughput:          {num(vs_raw, 2)}")
    print(f"HTTP ÷ PostgreSQL FTS (OR) throughput:  {num(vs_pg, 1)}")
    if vs_pg_and is not None:
        print(f"HTTP ÷ PostgreSQL FTS (AND) throughput: {num(vs_pg_and, 1)}  (information: the stricter, cheaper query)")
    verdict = lambda ok: "met" if ok else "MISSED"
    targets = [
        (f"HTTP p99 <= 10 ms at {http['concurrency']} connections", http["p99_ms"] is not None and http["p99_ms"] <= 10 and bad(http) == 0),
        ("HTTP throughput >= 0.5 x raw in-process Tantivy", vs_raw is not None and vs_raw >= 0.5 and clean),
        ("HTTP throughput >= 10 x PostgreSQL full-text search", vs_pg is not None and vs_pg >= 10 and clean),
    ]
    print()
    for name, ok in targets:
        print(f"target: {name}: {verdict(ok)}")
    print(f"targets met: {sum(ok for _, ok in targets)} of {len(targets)}")


if __name__ == "__main__":
    main()
