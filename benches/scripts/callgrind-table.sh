#!/usr/bin/env bash
# Instruction counts per extraction (callgrind: stable on a busy machine),
# bbr-core against sonic-rs, one process per cell, as a markdown table:
#
#   bash benches/scripts/callgrind-table.sh                  # every class, 1 KiB to 1 MiB
#   CLASSES="tools prose" SIZES="1MiB 8MiB" bash benches/scripts/callgrind-table.sh
#   IMPLS="bbr_reject sonic_get" bash benches/scripts/callgrind-table.sh
#
# Model last, the whole body validated (`bbr_reject`), the same body in
# 16 KiB chunks (`bbr_reject_chunks16KiB`), sonic-rs `get` and
# `get_unchecked` (which validates nothing). Small bodies run many
# iterations in one process (1 KiB: 200, 16 KiB: 20) and are divided by
# them, so the process's own start does not count. The last column is
# sonic-rs `get` ÷ bbr-core `reject`: above 1, bbr-core executes fewer
# instructions. Needs valgrind. Writes to stdout and target/callgrind-table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLASSES=${CLASSES:-chat completions prose tools}
SIZES=${SIZES:-1KiB 16KiB 1MiB}
IMPLS=${IMPLS:-bbr_reject bbr_reject_chunks16KiB sonic_get sonic_get_unchecked}

cargo build --profile bench -p bbr-benches --example scan_once >&2
BIN=target/release/examples/scan_once

count() { # impl class size -> instructions per extraction
  local iterations=1
  case $3 in 1KiB) iterations=200 ;; 16KiB) iterations=20 ;; esac
  valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
    --toggle-collect='scan_once::timed' "$BIN" "$1" "$2" "$3" "$iterations" 2>&1 >/dev/null \
    | awk -v n="$iterations" '/refs:/ { gsub(",", "", $4); printf "%d", $4 / n }'
}

OUT=target/callgrind-table.md
{
  printf '| class | size |'
  for impl in $IMPLS; do printf ' %s |' "$impl"; done
  printf ' sonic_get ÷ bbr_reject |\n| --- | --- |'
  for _ in $IMPLS; do printf ' ---: |'; done
  printf ' ---: |\n'
  for class in $CLASSES; do
    for size in $SIZES; do
      printf '| %s | %s |' "$class" "$size"
      declare -A cell=()
      for impl in $IMPLS; do
        cell[$impl]=$(count "$impl" "$class" "$size")
        printf ' %s |' "${cell[$impl]}"
      done
      if [ -n "${cell[bbr_reject]:-}" ] && [ -n "${cell[sonic_get]:-}" ]; then
        awk -v s="${cell[sonic_get]}" -v b="${cell[bbr_reject]}" 'BEGIN { printf " %.2f× |\n", s / b }'
      else
        printf ' – |\n'
      fi
      unset cell
    done
  done
} | tee "$OUT"
