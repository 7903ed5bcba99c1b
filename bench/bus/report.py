#!/usr/bin/env python3
"""Prints the bench-bus table, the ratio and the targets from the JSON files
run.sh and bus-load wrote into one directory.

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


def pct(v):
    return "-" if v is None else f"{v:.0f} %"


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def other_cpu(cpu):
    m = cpu.get("machine_cpu_pct")
    if m is None:
        return None
    return max(0.0, m - sum(cpu.get(k) or 0 for k in ("hub_cpu_pct", "nats_cpu_pct", "generator_cpu_pct")))


def main():
    d = sys.argv[1]
    hub, raw, log = load(d, "hub.json"), load(d, "raw.json"), load(d, "hublog.json")
    phases = hub["phases"]
    mx, rt, wu = phases.get("max"), phases.get("rate"), phases.get("warm-up")
    flight, batch = raw["in_flight"], raw["batch"]
    through = raw.get("through_consumer")

    print(f"bench-bus: {hub['concurrency']} connections / unacknowledged publishes, "
          f"{hub['duration']:.0f} s per phase after a {hub['warmup']:.0f} s warm-up, "
          f"open loop at {hub['rate']:.0f} messages/s")
    print()
    rows = [["system", "msgs/s", "accepted/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
             "missing", "dup", "hub CPU", "nats CPU", "client CPU", "other CPU", "errors"]]
    busy = []
    for label, r, what in (
        (flight["label"], flight, "publish"),
        (batch["label"] + " (info)", batch, "publish"),
        (through["label"] + " (info)" if through else "", through, "publish"),
        (f"CivicHub, max ({hub['concurrency']} connections)", mx, "api"),
        (f"CivicHub, open loop {hub['rate']:.0f}/s", rt, "api"),
    ):
        if r is None or not r.get("cpu"):
            continue
        cpu = r["cpu"]
        other = other_cpu(cpu)
        if other is not None and other > 15:
            busy.append(label)
        lat = r["latency"]
        if what == "publish":
            rows.append([label, num(r["msgs_per_sec"]), "", num(lat["p50_ms"], 2), num(lat["p90_ms"], 2),
                         num(lat["p99_ms"], 2), num(lat["max_ms"], 1), "", "",
                         "", pct(cpu["nats_cpu_pct"]), pct(cpu["generator_cpu_pct"]), pct(other), r["errors"]])
        else:
            rows.append([label, num(r["delivered_per_sec"]), num(r["accepted_per_sec"]),
                         num(lat["p50_ms"], 2), num(lat["p90_ms"], 2), num(lat["p99_ms"], 2), num(lat["max_ms"], 1),
                         r["missing"], r["duplicates"], pct(cpu["hub_cpu_pct"]), pct(cpu["nats_cpu_pct"]),
                         pct(cpu["generator_cpu_pct"]), pct(other), r["api_errors"]])
    table(rows)
    print(f"  msgs/s: raw = acknowledged publishes/s, latency publish → ack; CivicHub = messages the CMPP simulator"
          f" received per second of the measured window, latency POST → SMS at the simulator"
          f" (open loop: from the scheduled send time).")
    print(f"  CPU: 100 % = one core, {os.cpu_count()} cores in all; client = the load generator with the"
          f" CMPP simulator in it; other = the rest of the machine.")
    if busy:
        print(f"  warning: other processes used the CPU during {', '.join(busy)}: those numbers are low")
    print(f"  raw payload: {raw['payload_bytes']} bytes ({raw['payload_source']}), a unique Nats-Msg-Id each;"
          f" stream BENCH_RAW held {num(raw.get('stored'))} of {num(raw.get('published'))} published at the end")

    print()
    for r in (wu, mx, rt):
        if r is None:
            continue
        api = r["api_latency"]
        extra = ""
        if r["phase"] == "rate":
            extra = (f"; sent {num(r['sent_per_sec'])}/s, send lag behind schedule p99 "
                     f"{num(r['send_lag']['p99_ms'], 2)} ms")
        print(f"  {r['phase']}: {r['requests']:,} requests, {r['accepted']:,} accepted (API p50 "
              f"{num(api['p50_ms'], 2)} / p99 {num(api['p99_ms'], 2)} ms), {r['received']:,} received, "
              f"{r['missing']} missing, {r['duplicates']} duplicates, {r['wrong_recipient']} to a wrong number; "
              f"not yet at the simulator when the window closed: {r['backlog_at_window_end']:,}; last one arrived "
              f"{num(r['last_receipt_after_window_s'], 1)} s after the window (all in: {num(r.get('completed_per_sec'))}/s); hub idle "
              f"{num(r['settle_wait_s'], 1)} s after that{extra}")
        if r.get("in_outbox_at_window_end") is not None and r["backlog_at_window_end"]:
            print(f"    of those, in the hub's outbox (not yet in JetStream): {num(r['in_outbox_at_window_end'])}; "
                  f"in JetStream, not yet taken by its sms-sender: {num(r['sender_pending_at_window_end'])}; "
                  f"taken, not yet acknowledged: {num(r['sender_ack_pending_at_window_end'])}")
        if r.get("first_error"):
            print(f"    first API error: {r['first_error']}")
    if hub.get("unknown_receipts"):
        print(f"  the simulator received {hub['unknown_receipts']} texts that were not the benchmark's")

    bus = hub.get("bus", {})
    msgs = bus.get("messages", {})
    if msgs:
        acc = hub["accepted"]
        print(f"  bus (CIVICHUB_MESSAGES, {acc:,} messages accepted): "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(msgs.items()))
              + f"; dead letters {bus.get('dead_letters', '-')}")
    sim = hub.get("sim", {})
    print(f"  CMPP simulator: {sim.get('submits', 0):,} SUBMITs, {sim.get('logins', '-')} login(s) of the hub")
    if log:
        rss = log.get("rss_end_kib")
        print(f"  civichub log (--log warn) while running: {log['warn']} WARN, {log['error']} ERROR lines"
              + (f"; RSS at the end {rss / 1024:.0f} MB" if rss else "")
              + (f", peak during max {mx['cpu']['hub_peak_rss_kib'] / 1024:.0f} MB" if mx and mx["cpu"].get("hub_peak_rss_kib") else ""))
        for t in log.get("top", []):
            print(f"    {t['count']}× {t['level']}{' (at shutdown)' if t.get('when') == 'shutdown' else ''} {t['example']}")

    print()
    clean = lambda r: r is not None and r["missing"] == 0 and r["duplicates"] == 0 and r["wrong_recipient"] == 0
    all_clean = all(clean(r) for r in (wu, mx, rt) if r is not None)
    ratio = mx["delivered_per_sec"] / flight["msgs_per_sec"] if mx and flight["msgs_per_sec"] else None
    ratio_b = mx["delivered_per_sec"] / batch["msgs_per_sec"] if mx and batch["msgs_per_sec"] else None
    print(f"CivicHub ÷ raw JetStream ({flight['label']}):   {num(ratio, 3)}")
    print(f"CivicHub ÷ raw JetStream ({batch['label']}):  {num(ratio_b, 3)}  (information)")
    if through and through["msgs_per_sec"]:
        # Every message the hub sends is at least stored, delivered to a
        # consumer and acknowledged: what that costs alone, on this machine.
        floor = through["msgs_per_sec"] / flight["msgs_per_sec"] if flight["msgs_per_sec"] else None
        print(f"raw JetStream through a consumer ÷ raw publish: {num(floor, 3)}  (the bus alone, no hub: "
              f"publish, store, deliver, ack; information)")
    # Sustained: (nearly) every scheduled request accepted, and 95 % of them
    # at the simulator before the window closed (the rest: the pipeline's
    # latency times the rate, a few dozen at most when the hub keeps up).
    scheduled = hub["rate"] * rt["seconds"] if rt else 0
    sustained = rt is not None and rt["accepted"] >= 0.99 * scheduled and rt["delivered_in_window"] >= 0.95 * scheduled
    if rt is not None:
        print(f"open loop: {rt['accepted']:,} of {round(scheduled):,} scheduled messages accepted "
              f"({num(rt['accepted_per_sec'])}/s), {num(rt['delivered_per_sec'])}/s delivered within the window"
              + ("" if sustained else f": the hub did NOT sustain {hub['rate']:.0f}/s"))
    print(f"every message exactly once: {'yes' if all_clean else 'NO'}")
    verdict = lambda ok: "met" if ok else "MISSED"
    p99 = rt["latency"]["p99_ms"] if rt else None
    targets = [
        ("CivicHub throughput >= 0.3 x raw JetStream publish throughput",
         ratio is not None and ratio >= 0.3 and clean(mx)),
        (f"p99 API -> SMS <= 50 ms at {hub['rate']:.0f} msg/s",
         p99 is not None and p99 <= 50 and sustained and clean(rt)),
    ]
    print()
    for name, ok in targets:
        print(f"target: {name}: {verdict(ok)}")
    print(f"targets met: {sum(ok for _, ok in targets)} of {len(targets)}")


if __name__ == "__main__":
    main()
