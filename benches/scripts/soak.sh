#!/usr/bin/env bash
# Soak (not a test, not in CI): 64 clients send random bodies (dense
# multilingual prose, base64-heavy chat, tool-call turns, completions; 900 B
# to 1 MiB; model first or last; one in eight refusable) in random chunkings
# (1, 7, 64 bytes, or up to 16 KiB; content-length or chunked) for a bounded
# time through both paths, to an upstream the soak binary serves itself:
#   gateway   the example gateway (the bbr tower layer);
#   extproc   a real Envoy (deploy/envoy/bbr-full-duplex.yaml) + bbr-extproc.
# Every request is judged (lost / duplicated / mismatched, see
# benches/src/soak.rs); prints p50/p99 and the RSS of each process before
# and after. Exits 1 when a request went wrong in either path.
#
#   bash benches/scripts/soak.sh                     # 60 s per path
#   DURATION=10m CLIENTS=64 SEED=7 bash benches/scripts/soak.sh
#   PATHS=extproc bash benches/scripts/soak.sh
#
# ENVOY_BIN, else <workspace>/.venv/bin/envoy, else envoy on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-60s}
CLIENTS=${CLIENTS:-64}
SEED=${SEED:-1}
MAX_BODY=${MAX_BODY:-1048576}
PATHS=${PATHS:-gateway extproc}
# WORK, PIDS, the cleanup trap, free_port, wait_port, find_envoy.
. benches/scripts/lib.sh
find_envoy

cargo build --release -p bbr-axum-example -p bbr-extproc -p bbr-benches --bins >&2
BIN=target/release

soak() { # label target upstream pids...
  local label=$1 target=$2 upstream=$3; shift 3
  local pid_args=()
  for pid in "$@"; do pid_args+=(--pid "$pid"); done
  "$BIN/soak" --label "$label" --target "$target" --upstream "127.0.0.1:$upstream" \
    --clients "$CLIENTS" --duration "$DURATION" --seed "$SEED" --max-body "$MAX_BODY" "${pid_args[@]}"
}

status=0
for path in $PATHS; do
  UPSTREAM=$(free_port)
  case $path in
    gateway)
      GW_PORT=$(free_port)
      cat >"$WORK/gateway.yaml" <<YAML
pools:
  - name: soak
    endpoints: [127.0.0.1:$UPSTREAM]
routes:
  - pool: soak
    matches:
      - {model: food-review-1}
      - {model: ski-resorts}
      - {model: movie-critique}
      - {model: meta-llama/Llama-3.1-8B-Instruct}
      - {model: deepseek/vllm-deepseek-r1}
proxy:
  x_forwarded_for: false
YAML
      RUST_LOG=warn "$BIN/bbr-axum-example" --config "$WORK/gateway.yaml" \
        --listen "127.0.0.1:$GW_PORT" >"$WORK/gateway.log" 2>&1 &
      gw=$!; PIDS+=($gw)
      wait_port "$GW_PORT"
      soak gateway "http://127.0.0.1:$GW_PORT" "$UPSTREAM" "$gw" || status=1
      ;;
    extproc)
      [ -n "$ENVOY" ] || { echo "Envoy not found: set ENVOY_BIN or run bash scripts/install-tools" >&2; exit 1; }
      EXTPROC=$(free_port); HEALTH=$(free_port); METRICS=$(free_port)
      LISTEN=$(free_port); ADMIN=$(free_port)
      RUST_LOG=warn "$BIN/bbr-extproc" --secure-serving=false --bind-address 127.0.0.1 \
        --grpc-port "$EXTPROC" --grpc-health-port "$HEALTH" --metrics-port "$METRICS" \
        >"$WORK/extproc.log" 2>&1 &
      ext=$!; PIDS+=($ext)
      sed -e "s/\${LISTEN_PORT}/$LISTEN/; s/\${ADMIN_PORT}/$ADMIN/; s/\${EXTPROC_PORT}/$EXTPROC/" \
          -e "s/\${LLAMA_PORT}/$UPSTREAM/; s/\${DEEPSEEK_PORT}/$UPSTREAM/; s/\${DEFAULT_PORT}/$UPSTREAM/" \
          deploy/envoy/bbr-full-duplex.yaml >"$WORK/envoy.yaml"
      "$ENVOY" -c "$WORK/envoy.yaml" --disable-hot-restart --concurrency 2 -l error \
        >"$WORK/envoy.log" 2>&1 &
      envoy=$!; PIDS+=($envoy)
      wait_port "$EXTPROC"; wait_port "$LISTEN"
      soak extproc "http://127.0.0.1:$LISTEN" "$UPSTREAM" "$ext" "$envoy" || status=1
      ;;
    *) echo "unknown path $path (gateway, extproc)" >&2; exit 2 ;;
  esac
done
exit $status
