#!/usr/bin/env bash
# Load benchmark (not a test): requests/s and latency through the gateway
# against calling the simulated model server directly, zero simulated
# latency, 1 KiB and 256 KiB chat and dense-prose bodies, concurrency 1
# and 64 (BODIES="1k prose-256k" picks some). When an
# Envoy is found (ENVOY_BIN, <workspace>/.venv/bin/envoy, PATH), the same
# requests also go through Envoy routing by a header the client sets itself
# (deploy/envoy/header-only.yaml, no body work) to the same model server:
# the design's yardstick for "body-based routing for free". After the
# table, the CPU time each setup's processes and the load generator used per
# request (from /proc and `times`): what a row costs, apart from the
# scheduling noise of a shared machine; on busy cores req/s goes as one
# over their sum.
#
# UPSTREAM=sim (default) is bbr-model-sim, the scenario's model server: it
# tokenizes every prompt, which costs more CPU than any proxy in front of
# it on a dense 256 KiB body. UPSTREAM=stub is bbr-extproc's fast stand-in
# (reads the body, answers with the routed model): what is left is the
# routing hop alone.
#
#   bash bbr-axum-example/bench/run-load.sh            # 10 s per run
#   DURATION=5s MODEL_POSITION=first bash bbr-axum-example/bench/run-load.sh
#
# MODEL_POSITION=last (default) puts "model" after "messages", as the
# OpenAI Python SDK does: the layer reads the whole body before deciding.
# MODEL_POSITION=first decides on the first bytes.
# GATEWAY_BIN runs another build of the gateway (a static musl binary,
# say) in the gateway column.
# Writes a markdown table to stdout and to target/bbr-axum-example-load.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
MODEL_POSITION=${MODEL_POSITION:-last}
BODIES=${BODIES:-1k 256k prose-1k prose-256k}
UPSTREAM=${UPSTREAM:-sim}
ENVOY_CONCURRENCY=${ENVOY_CONCURRENCY:-2}
# WORK, PIDS, the cleanup trap, free_port, wait_port, find_envoy, gen_body.
. benches/scripts/lib.sh
find_envoy

cargo build --release -p bbr-axum-example -p bbr-model-sim -p bbr-benches --bins >&2
[ "$UPSTREAM" = stub ] && cargo build --release -p bbr-extproc --example stub_upstream >&2
BIN=target/release

SIM_PORT=$(free_port)
GW_PORT=$(free_port)

# The stub names the model from the routing header, which a direct call
# then sets itself (as with Envoy header-only).
DIRECT_HEADER=()
case $UPSTREAM in
  sim)
    # One simulated replica, no latency, room for 64 concurrent requests
    # and for the 256 KiB body's tokens.
    "$BIN/model-sim" --model deepseek/vllm-deepseek-r1 --lora-modules ski-resorts \
      --port "$SIM_PORT" --max-num-seqs 256 --max-model-len 10000000 \
      --max-request-body-size-mb 4 --seed 1 >"$WORK/sim.log" 2>&1 & ;;
  stub)
    "$BIN/examples/stub_upstream" "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
    DIRECT_HEADER=(--header x-gateway-model-name:ski-resorts) ;;
  *) echo "UPSTREAM is sim or stub, not $UPSTREAM" >&2; exit 1 ;;
esac
PIDS+=($!); UPSTREAM_PID=$!
wait_port "$SIM_PORT"

cat >"$WORK/gateway.yaml" <<YAML
pools:
  - name: vllm-deepseek-r1
    endpoints: [127.0.0.1:$SIM_PORT]
routes:
  - pool: vllm-deepseek-r1
    matches: [{model: ski-resorts}]
proxy:
  x_forwarded_for: false
YAML
RUST_LOG=warn "${GATEWAY_BIN:-$BIN/bbr-axum-example}" --config "$WORK/gateway.yaml" \
  --listen "127.0.0.1:$GW_PORT" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!); GATEWAY_PID=$!
wait_port "$GW_PORT"

ENVOY_PORT=
if [ -n "$ENVOY" ]; then
  ENVOY_PORT=$(free_port); ADMIN_PORT=$(free_port)
  sed -e "s/\${LISTEN_PORT}/$ENVOY_PORT/; s/\${ADMIN_PORT}/$ADMIN_PORT/" \
      -e "s/\${LLAMA_PORT}/$SIM_PORT/; s/\${DEEPSEEK_PORT}/$SIM_PORT/; s/\${DEFAULT_PORT}/$SIM_PORT/" \
      deploy/envoy/header-only.yaml >"$WORK/envoy.yaml"
  "$ENVOY" -c "$WORK/envoy.yaml" --disable-hot-restart --concurrency "$ENVOY_CONCURRENCY" -l error \
    >"$WORK/envoy.log" 2>&1 &
  PIDS+=($!); ENVOY_PID=$!
  wait_port "$ENVOY_PORT"
else
  echo "no Envoy found (ENVOY_BIN, .venv/bin/envoy, PATH): skipping the Envoy header-only column" >&2
fi

# Chat bodies of exactly 1 KiB and 256 KiB.
python3 - "$WORK" "$MODEL_POSITION" <<'PY'
import json, sys
work, position = sys.argv[1], sys.argv[2]
for name, size in (("1k", 1024), ("256k", 256 * 1024)):
    def body(n):
        messages = [{"role": "developer", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "ski " * n}]
        fields = {"max_tokens": 16, "temperature": 0, "messages": messages}
        if position == "first":
            fields = {"model": "ski-resorts", **fields}
        else:
            fields["model"] = "ski-resorts"
        return json.dumps(fields, separators=(",", ":"))
    n = 0
    while len(body(n + 1)) <= size:
        n += 1
    text = body(n)
    text += " " * (size - len(text))
    assert len(text) == size
    json.loads(text)
    open(f"{work}/{name}.json", "w").write(text)
PY
# Dense multilingual prose (benches/src/lib.rs: a special byte every 8-20
# bytes), the same sizes.
gen_body prose-1k prose 1KiB "$MODEL_POSITION" ski-resorts
gen_body prose-256k prose 256KiB "$MODEL_POSITION" ski-resorts

run() { # url proxy-pid (0: none) body concurrency [extra loadgen args...]
  # The loadgen's JSON line, with the CPU µs the proxy and the upstream
  # used during the run.
  local url=$1 proxy=$2 body=$3 conc=$4; shift 4
  with_cpu "$proxy" "$UPSTREAM_PID" "$BIN/loadgen" --url "$url" --body "$WORK/$body.json" \
    --concurrency "$conc" --duration "$DURATION" --header content-type:application/json \
    --expect-status 200 --expect-body '"model":"ski-resorts"' "$@"
}

OUT=target/bbr-axum-example-load.md
CPU_ROWS=()
{
  echo "| body | concurrency | direct req/s | p50 | p99 | Envoy header-only req/s | p50 | p99 | gateway (BBR) req/s | p50 | p99 | gateway/direct | gateway/Envoy |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$OUT"
for body in $BODIES; do
  for conc in 1 64; do
    direct=$(run "http://127.0.0.1:$SIM_PORT/v1/chat/completions" 0 "$body" "$conc" "${DIRECT_HEADER[@]}")
    envoy=null
    if [ -n "$ENVOY_PORT" ]; then
      envoy=$(run "http://127.0.0.1:$ENVOY_PORT/v1/chat/completions" "$ENVOY_PID" "$body" "$conc" \
        --header x-gateway-model-name:ski-resorts)
    fi
    gateway=$(run "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$GATEWAY_PID" "$body" "$conc")
    CPU_ROWS+=("$body $conc $direct $envoy $gateway")
    python3 - "$body" "$conc" "$direct" "$envoy" "$gateway" >>"$OUT" <<'PY'
import json, sys
sys.path.insert(0, "benches/scripts")
from body_labels import LABELS
body, conc = sys.argv[1], sys.argv[2]
d, e, g = (json.loads(a) for a in sys.argv[3:6])
for r in (d, e, g):
    if r and r["errors"]:
        sys.exit(f"{r['errors']} errors in a run: {r}")
ms = lambda us: f"{us / 1000:.2f} ms"
cols = lambda r: f"{r['requests_per_sec']:.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])}" if r else "– | – | –"
ratio = lambda a, b: f"{a['requests_per_sec'] / b['requests_per_sec']:.2f}" if a and b else "–"
size = LABELS[body]
print(f"| {size} | {conc} | {cols(d)} | {cols(e)} | {cols(g)} | {ratio(g, d)} | {ratio(g, e)} |")
PY
  done
done
echo >>"$OUT"
cpu_table "CPU per request, µs (proxy + upstream + load generator = total; direct: no proxy):" \
  "direct|Envoy header-only|gateway (BBR)" "${CPU_ROWS[@]}" >>"$OUT"
echo "model position: $MODEL_POSITION, upstream: $UPSTREAM, $DURATION per run, Envoy --concurrency $ENVOY_CONCURRENCY, $(nproc) cores" >>"$OUT"
cat "$OUT"
