#!/usr/bin/env python3
"""Turns criterion's saved estimates (target/criterion/<group>/...) into the
markdown tables of benches/RESULTS.md: median time and throughput per
implementation and body, and the checks against the performance goals.

Usage: python3 benches/scripts/results-table.py [target/criterion] [--since EPOCH_SECONDS]

--since keeps only benchmarks measured after that time (criterion keeps the
estimates of every benchmark ever run, so a quick run would otherwise be
mixed with older ones).
"""
import json
import pathlib
import sys

args = sys.argv[1:]
since = 0.0
if "--since" in args:
    i = args.index("--since")
    since = float(args[i + 1])
    del args[i : i + 2]
root = pathlib.Path(args[0] if args else "target/criterion")


def load(group):
    results = {}
    for bench in (root / group).rglob("new/benchmark.json"):
        if bench.stat().st_mtime < since:
            continue
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        # full_id: <group>/<implementation>/<shape>/<size>/<position>
        _, impl, spec = meta["full_id"].split("/", 2)
        median_ns = estimates["median"]["point_estimate"]
        size = (meta.get("throughput") or {}).get("Bytes")
        results[(impl, spec)] = (median_ns, size)
    return results


def fmt_time(ns):
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def gbps(ns, size):
    return size / ns if size else float("nan")  # bytes per ns = GB/s


def spec_key(spec):
    shape, size, pos = spec.split("/")
    unit = 1 << 20 if size.endswith("MiB") else 1 << 10
    return (shape, int(size.rstrip("KMiB")) * unit, pos)


def table(results, impls, title):
    specs = sorted({s for (_, s) in results}, key=spec_key)
    present = [i for i in impls if any((i, s) in results for s in specs)]
    print(f"\n### {title}\n")
    print("| body | " + " | ".join(f"`{i}`" for i in present) + " |")
    print("| --- |" + " ---: |" * len(present))
    for spec in specs:
        cells = []
        for impl in present:
            if (impl, spec) in results:
                ns, size = results[(impl, spec)]
                cells.append(f"{fmt_time(ns)} ({gbps(ns, size):.2f} GB/s)")
            else:
                cells.append("—")
        print(f"| {spec} | " + " | ".join(cells) + " |")


def goals(results):
    print("\n### Goals\n")
    print("| goal | body | measured | verdict |")
    print("| --- | --- | --- | --- |")
    for (impl, spec), (ns, _) in sorted(results.items(), key=lambda kv: (kv[0][0], spec_key(kv[0][1]))):
        if impl in ("bbr_first_wins", "bbr_first_wins_chunks16KiB") and spec.endswith("/first"):
            verdict = "met" if ns <= 100 else f"missed by {ns - 100:.0f} ns"
            print(f"| model first ≤ 100 ns (`{impl}`) | {spec} | {fmt_time(ns)} | {verdict} |")
    for spec in ("chat/1MiB/last", "chat/8MiB/last"):
        ours = results.get(("bbr_reject", spec))
        get = results.get(("sonic_get", spec))
        unchecked = results.get(("sonic_get_unchecked", spec))
        if ours and get:
            ratio = get[0] / ours[0]
            verdict = "met" if ratio >= 1.5 else f"missed ({ratio:.2f}x of 1.5x)"
            print(f"| model last ≥ 1.5x sonic-rs `get` (`bbr_reject`) | {spec} | {ratio:.2f}x ({gbps(*ours):.2f} vs {gbps(*get):.2f} GB/s) | {verdict} |")
        if ours and unchecked:
            ratio = unchecked[0] / ours[0]
            print(f"| stretch: reach `get_unchecked` | {spec} | {ratio:.2f}x ({gbps(*unchecked):.2f} GB/s) | {'met' if ratio >= 1 else 'not reached'} |")
    for (impl, spec), (ns, _) in sorted(results.items(), key=lambda kv: (kv[0][0], spec_key(kv[0][1]))):
        base = {"bbr_reject_chunks16KiB": "bbr_reject", "bbr_first_wins_chunks16KiB": "bbr_first_wins"}.get(impl)
        if base and (base, spec) in results:
            contiguous = results[(base, spec)][0]
            if spec_key(spec)[1] <= 16 * 1024 and impl == "bbr_first_wins_chunks16KiB":
                continue  # one chunk: same as contiguous
            ratio = ns / contiguous
            verdict = "met" if ratio <= 1.15 else f"missed (+{(ratio - 1) * 100:.0f}%)"
            print(f"| 16 KiB chunks within 15% of contiguous (`{impl}`) | {spec} | {(ratio - 1) * 100:+.1f}% | {verdict} |")


extract = load("extract")
if extract:
    impls = ["bbr_first_wins", "bbr_reject", "bbr_first_wins_chunks16KiB", "bbr_reject_chunks16KiB",
             "bbr_reject_chunks1B", "serde_json_value", "serde_json_struct", "simd_json_struct",
             "sonic_get", "sonic_get_unchecked"]
    table(extract, impls, "extract (median time per body, throughput)")
    goals(extract)
tower = load("tower_layer")
if tower:
    table(tower, ["without_layer", "with_layer"], "tower_layer (median time per request)")
    print("\n| body | added by the layer |\n| --- | ---: |")
    for spec in sorted({s for (_, s) in tower}, key=spec_key):
        if ("with_layer", spec) in tower and ("without_layer", spec) in tower:
            added = tower[("with_layer", spec)][0] - tower[("without_layer", spec)][0]
            print(f"| {spec} | {fmt_time(added)} |")
