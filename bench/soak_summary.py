#!/usr/bin/env python3
"""The flatness reading of a soak's JSON lines (docs/RELIABILITY.md, "What holds today").

    python3 bench/soak_summary.py /tmp/soak-redis.jsonl [more.jsonl ...]

For each file: the whole run's totals, then every measure over minutes 2-11, 10-19 and 21-30 (the window filling
is the warm-up, so 10-19 is the first ten after it), and the change from 10-19 to 21-30. RSS, file descriptors
and p99 latency are the targets: each must stay within 10 %, either way. RSS and descriptors are read as the
median of the window's minutes. The p99 is the 99th percentile of all the window's deliveries, added up from each
minute's latency buckets (loadgen writes them since 2026-12-05); lines without buckets fall back to the median of
the minutes' own p99s, which the earlier runs were judged by, and both readings are printed when both exist.
Exits 1 when a file misses a target, has a violation, or is too short to be read.
"""
import json
import statistics
import sys

WINDOWS = {"2-11": range(2, 12), "10-19": range(10, 20), "21-30": range(21, 31)}
LIMIT = 0.10
TARGETS = ("RSS, both hubs (MiB)", "open file descriptors, both hubs", "p99 latency (ms)")


def per_minute(lines):
    """One row of measures per whole minute, keyed by the minute's number (1 = the first)."""
    rows = {}
    previous = None
    for line in lines:
        minute = round(line["minute"])
        hubs_cpu = sum(h["cpu_s"] for h in line["hubs"])
        row = {
            "RSS, both hubs (MiB)": sum(h["rss_kib"] for h in line["hubs"]) / 1024,
            "open file descriptors, both hubs": sum(h["fds"] for h in line["hubs"]),
            "p99 latency (ms)": line["latency_ms"]["p99"],
            "p50 latency (ms)": line["latency_ms"]["p50"],
        }
        # The earliest runs' lines have no machine share and no load generator CPU.
        if line.get("machine"):
            row["machine busy"] = line["machine"]["busy"]
        if previous is not None:
            row["hubs' CPU per minute (s)"] = hubs_cpu - previous[0]
            if "loadgen_cpu_s" in line:
                row["load generator's CPU per minute (s)"] = line["loadgen_cpu_s"] - previous[1]
        previous = (hubs_cpu, line.get("loadgen_cpu_s", 0))
        rows[minute] = row
    return rows


def pooled_quantile(buckets, minutes, q):
    """The q-quantile in ms of every delivery of `minutes`, from their `[highest µs, count]` buckets."""
    counts = {}
    for m in minutes:
        for high, count in buckets[m]:
            counts[high] = counts.get(high, 0) + count
    total = sum(counts.values())
    seen = 0
    for high in sorted(counts):
        seen += counts[high]
        if seen >= q * total:
            return high / 1000


def verdict(measure, change):
    if measure not in TARGETS:
        return "(no target)"
    return "met" if abs(change) <= LIMIT else "MISSED"


def summarize(path):
    with open(path) as f:
        records = [json.loads(l) for l in f if l.startswith("{")]
    lines = [r for r in records if "minute" in r]
    rows = per_minute(lines)
    missing = [m for m in range(2, 31) if m not in rows]
    if missing:
        print(f"{path}: minutes {missing} are missing: not a 30-minute run")
        return False
    violations = max(l["violations"] for l in lines)
    last = lines[-1]
    print(f"{path}: {len(lines)} minutes, {violations} violations, "
          f"p99 per minute {min(r['p99 latency (ms)'] for r in rows.values()):.0f}-"
          f"{max(r['p99 latency (ms)'] for r in rows.values()):.0f} ms, slow consumers cut {last['slow_consumer_cuts']}")
    print(f"  {'measure':44} {'2-11':>9} {'10-19':>9} {'21-30':>9} {'10-19 -> 21-30':>15}  verdict")
    ok = violations == 0
    buckets = {round(l["minute"]): l.get("latency_buckets_us") for l in lines}
    pooled = all(buckets[m] for m in range(2, 31))

    def show(label, values, judged):
        nonlocal ok
        change = values["21-30"] / values["10-19"] - 1
        judged = judged(change)
        ok = ok and judged != "MISSED"
        print(f"  {label:44} {values['2-11']:9.2f} {values['10-19']:9.2f} {values['21-30']:9.2f} "
              f"{change * 100:+14.1f}%  {judged}")

    for measure in [k for k in rows[10] if all(k in rows[m] for m in range(2, 31))]:
        medians = {w: statistics.median(rows[m][measure] for m in ms) for w, ms in WINDOWS.items()}
        if measure == "p99 latency (ms)" and pooled:
            show("p99 latency (ms), median of the minutes'", medians, lambda _: "(the earlier reading)")
            all_deliveries = {w: pooled_quantile(buckets, ms, 0.99) for w, ms in WINDOWS.items()}
            show("p99 latency (ms), all deliveries", all_deliveries, lambda c: verdict(measure, c))
        else:
            show(measure, medians, lambda c: verdict(measure, c))
    return ok


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    results = [summarize(p) for p in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
