#!/usr/bin/env bash
# Load benchmark (not a test): requests/s and latency through the gateway
# against calling the simulated model server directly, zero simulated
# latency, 1 KiB and 256 KiB chat bodies, concurrency 1 and 64.
#
#   bash bbr-axum-example/bench/run-load.sh            # 10 s per run
#   DURATION=5s MODEL_POSITION=first bash bbr-axum-example/bench/run-load.sh
#
# MODEL_POSITION=last (default) puts "model" after "messages", as the
# OpenAI Python SDK does: the layer reads the whole body before deciding.
# MODEL_POSITION=first decides on the first bytes.
# Writes a markdown table to stdout and to target/bbr-axum-example-load.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
MODEL_POSITION=${MODEL_POSITION:-last}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -p bbr-axum-example -p bbr-model-sim -p bbr-benches --bins >&2
BIN=target/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}

SIM_PORT=$(free_port)
GW_PORT=$(free_port)

# One simulated replica, no latency, room for 64 concurrent requests and
# for the 256 KiB body's tokens.
"$BIN/model-sim" --model deepseek/vllm-deepseek-r1 --lora-modules ski-resorts \
  --port "$SIM_PORT" --max-num-seqs 256 --max-model-len 10000000 \
  --max-request-body-size-mb 4 --seed 1 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
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
RUST_LOG=warn "$BIN/bbr-axum-example" --config "$WORK/gateway.yaml" \
  --listen "127.0.0.1:$GW_PORT" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
wait_port "$GW_PORT"

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

run() { # target url body concurrency
  "$BIN/loadgen" --url "$2" --body "$WORK/$3.json" --concurrency "$4" --duration "$DURATION" \
    --header content-type:application/json --expect-status 200 | tail -n 1
}

OUT=target/bbr-axum-example-load.md
{
  echo "| body | concurrency | direct req/s | direct p50 | direct p99 | gateway req/s | gateway p50 | gateway p99 | gateway/direct req/s |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$OUT"
for body in 1k 256k; do
  for conc in 1 64; do
    direct=$(run direct "http://127.0.0.1:$SIM_PORT/v1/chat/completions" "$body" "$conc")
    gateway=$(run gateway "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$body" "$conc")
    python3 - "$body" "$conc" "$direct" "$gateway" >>"$OUT" <<'PY'
import json, sys
body, conc, d, g = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
for r in (d, g):
    if r["errors"]:
        sys.exit(f"{r['errors']} errors in a run: {r}")
ms = lambda us: f"{us / 1000:.2f} ms"
print(f"| {'1 KiB' if body == '1k' else '256 KiB'} | {conc} | {d['requests_per_sec']:.0f} | {ms(d['p50_us'])} | {ms(d['p99_us'])} "
      f"| {g['requests_per_sec']:.0f} | {ms(g['p50_us'])} | {ms(g['p99_us'])} | {g['requests_per_sec'] / d['requests_per_sec']:.2f} |")
PY
  done
done
echo "model position: $MODEL_POSITION, $DURATION per run, $(nproc) cores" >>"$OUT"
cat "$OUT"
