#!/usr/bin/env bash
# Wall clock per extraction of several builds of `scan_once`, interleaved so
# that a busy machine slows each the same: the minimum of nine runs each.
#
#   cargo build --profile bench -p bbr-benches --example scan_once
#   cp target/release/examples/scan_once /tmp/scan_once_new   # and an older build
#   bash benches/scripts/interleaved.sh tools 1MiB 800 /tmp/scan_once_old /tmp/scan_once_new
#
# IMPL (default bbr_reject) picks the parser: sonic_get for sonic-rs.
# BODIES (default 1) distinct bodies of the class are taken in turn, so the
# branch predictor cannot learn one body (a server sees each body once).
set -euo pipefail
class=$1 size=$2 n=$3
shift 3
impl=${IMPL:-bbr_reject}
bodies=${BODIES:-1}
declare -A best
for _ in 1 2 3 4 5 6 7 8 9; do
  for bin in "$@"; do
    # The program times its own extractions (not the bodies' generation).
    ns=$("$bin" "$impl" "$class" "$size" "$n" "$bodies" | awk '{print $(NF - 1)}')
    if [ -z "${best[$bin]:-}" ] || [ "$ns" -lt "${best[$bin]}" ]; then best[$bin]=$ns; fi
  done
done
line="$impl $class $size, $bodies bodies (ns per extraction):"
for bin in "$@"; do line="$line $bin=${best[$bin]}"; done
echo "$line"
