#!/usr/bin/env python3
"""The CPU-per-request table of the load scripts (sourced lib.sh's
`with_cpu` adds `"cpu_us": [first, second, load generator]` to each
loadgen JSON line).

    cpu-table.py TITLE "setup|setup|..." "BODY CONC JSON JSON ..." ...

One argument per row: the body name, the concurrency and one loadgen JSON
line (or `null`: the setup did not run) per setup. A cell is each
process's µs per request joined by `+` (a process of pid 0, none, left out;
the last one is the load generator itself), then their sum: on a machine
whose cores are all busy, requests/s goes as one over that sum.
"""
import json
import sys

from body_labels import LABELS


def cell(run):
    if run is None:
        return "–"
    requests = max(run["requests"], 1)
    used = [us / requests for us in run["cpu_us"] if us]
    parts = " + ".join(f"{us:.0f}" for us in used) or "0"
    return f"{parts} = {sum(used):.0f}" if len(used) > 1 else parts


def main(title, setups, rows):
    setups = setups.split("|")
    print(title)
    print()
    print("| body | conc. | " + " | ".join(setups) + " |")
    print("| --- | ---: |" + " ---: |" * len(setups))
    for row in rows:
        body, conc, *runs = row.split()
        assert len(runs) == len(setups), row
        cells = " | ".join(cell(json.loads(r)) for r in runs)
        print(f"| {LABELS.get(body, body)} | {conc} | {cells} |")
    print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
