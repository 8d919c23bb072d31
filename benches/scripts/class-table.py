#!/usr/bin/env python3
"""The README table of issue 10 from criterion's saved estimates of the
`extract` group: per body class and size, bbr-core's throughput with the
model last (whole body and 16 KiB chunks, validating as the contract asks)
and its ratio to sonic-rs `get` measured in the same run, `get_unchecked`,
and the model-first times.

Usage: python3 benches/scripts/class-table.py [target/criterion] [--since EPOCH_SECONDS]
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
root = pathlib.Path(args[0] if args else "target/criterion") / "extract"

results = {}
for bench in root.rglob("new/benchmark.json"):
    if bench.stat().st_mtime < since:
        continue
    meta = json.loads(bench.read_text())
    estimates = json.loads((bench.parent / "estimates.json").read_text())
    _, impl, spec = meta["full_id"].split("/", 2)
    size = (meta.get("throughput") or {}).get("Bytes")
    results[(impl, spec)] = (estimates["median"]["point_estimate"], size)


def gbps(impl, spec):
    r = results.get((impl, spec))
    return r[1] / r[0] if r and r[1] else None


def ns(impl, spec):
    r = results.get((impl, spec))
    return r[0] if r else None


def fmt_t(v):
    if v is None:
        return "—"
    if v < 1e3:
        return f"{v:.0f} ns"
    if v < 1e6:
        return f"{v / 1e3:.1f} µs"
    return f"{v / 1e6:.2f} ms"


def cell(value, base):
    if value is None:
        return "—"
    if base is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({value / base:.2f}×)"


SIZES = ["1KiB", "16KiB", "256KiB", "1MiB", "8MiB"]
print("| class | size | bbr whole GB/s (× sonic `get`) | bbr 16 KiB chunks GB/s (×) | sonic `get` GB/s | sonic `get_unchecked` GB/s | serde_json struct GB/s | bbr model last, time | sonic `get` time | model first: bbr / 16 KiB chunks / sonic `get` |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for cls in ["chat", "completions", "prose", "tools"]:
    for size in SIZES:
        last = f"{cls}/{size}/last"
        first = f"{cls}/{size}/first"
        if ("bbr_reject", last) not in results:
            continue
        sonic = gbps("sonic_get", last)
        print(
            f"| {cls} | {size} | {cell(gbps('bbr_reject', last), sonic)} "
            f"| {cell(gbps('bbr_reject_chunks16KiB', last), sonic)} "
            f"| {cell(sonic, None)} | {cell(gbps('sonic_get_unchecked', last), None)} "
            f"| {cell(gbps('serde_json_struct', last), None)} "
            f"| {fmt_t(ns('bbr_reject', last))} | {fmt_t(ns('sonic_get', last))} "
            f"| {fmt_t(ns('bbr_first_wins', first))} / {fmt_t(ns('bbr_first_wins_chunks16KiB', first))} / {fmt_t(ns('sonic_get', first))} |"
        )
matrix = sorted({s for (_, s) in results if s.startswith("matrix/")},
                key=lambda s: (s.split("/")[1], int(s.split("/")[2][5:])))
if matrix:
    print()
    print("| matrix body (1 MiB, model last) | bbr whole GB/s (× sonic `get`) | bbr 16 KiB chunks GB/s (×) | sonic `get` GB/s | sonic `get_unchecked` GB/s | serde_json struct GB/s | bbr ns per special |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec in matrix:
        sonic = gbps("sonic_get", spec)
        every = int(spec.split("/")[2][5:])
        t = ns("bbr_reject", spec)
        per = f"{t / ((1 << 20) / every):.2f}" if t else "—"
        print(
            f"| {spec.removesuffix('/1MiB/last')} | {cell(gbps('bbr_reject', spec), sonic)} "
            f"| {cell(gbps('bbr_reject_chunks16KiB', spec), sonic)} | {cell(sonic, None)} "
            f"| {cell(gbps('sonic_get_unchecked', spec), None)} | {cell(gbps('serde_json_struct', spec), None)} | {per} |"
        )
