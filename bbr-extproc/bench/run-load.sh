#!/usr/bin/env bash
# Load benchmark (not a test): requests/s and latency through a real Envoy
# in three setups, to the same fast stub model server, with the same load
# generator; 1 KiB and 256 KiB chat and dense-prose bodies (BODIES="1k
# prose-256k" picks some), concurrency 1 and 64:
#   header-only  Envoy routing by a header the client sets itself
#                (deploy/envoy/header-only.yaml, no ext_proc);
#   no-op        Envoy with deploy/envoy/bbr-full-duplex.yaml pointed at
#                examples/noop_extproc.rs: FULL_DUPLEX_STREAMED, headers
#                answered at once with a fixed model, every chunk echoed,
#                no JSON work (the floor for any ext_proc processor);
#   holding      the same no-op with --hold: headers reply and chunks held
#                until the body ends, then sent (the floor for a processor
#                that must read the whole body first: model last);
#   bbr          the same Envoy config pointed at bbr-extproc.
# Prints req/s, p50, p99 and the ratios bbr/no-op, bbr/holding and
# bbr/header-only, then the CPU time each setup's Envoy and processor and
# the load generator used per request (from /proc and `times`: what a row
# costs, apart from the noise of a shared machine's scheduling).
#
#   bash bbr-extproc/bench/run-load.sh                 # 10 s per run
#   DURATION=5s MODEL_POSITION=first bash bbr-extproc/bench/run-load.sh
#
# MODEL_POSITION=last (default) puts "model" after "messages", as the
# OpenAI Python SDK does; first decides on the first bytes.
# ENVOY_BIN, else <workspace>/.venv/bin/envoy, else envoy on PATH.
# EXTPROC_BIN runs another build of bbr-extproc in the bbr column (the
# image's static musl binary, say); the floors stay this workspace's.
# Writes a markdown table to stdout and to target/bbr-extproc-load.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
MODEL_POSITION=${MODEL_POSITION:-last}
BODIES=${BODIES:-1k 256k prose-1k prose-256k}
ENVOY_CONCURRENCY=${ENVOY_CONCURRENCY:-2}
# WORK, PIDS, the cleanup trap, free_port, wait_port, find_envoy, gen_body.
. benches/scripts/lib.sh
find_envoy
[ -n "$ENVOY" ] || { echo "Envoy not found: set ENVOY_BIN or run bash scripts/install-tools" >&2; exit 1; }

cargo build --release -p bbr-extproc -p bbr-benches --bins >&2
cargo build --release -p bbr-extproc --example stub_upstream --example noop_extproc >&2
BIN=target/release

STUB=$(free_port); EXTPROC=$(free_port); HEALTH=$(free_port); METRICS=$(free_port)
NOOP=$(free_port); HOLD=$(free_port)
"$BIN/examples/stub_upstream" "127.0.0.1:$STUB" >"$WORK/stub.log" 2>&1 &
PIDS+=($!)
"$BIN/examples/noop_extproc" --port "$NOOP" --model ski-resorts >"$WORK/noop.log" 2>&1 &
PIDS+=($!); NOOP_PID=$!
"$BIN/examples/noop_extproc" --port "$HOLD" --model ski-resorts --hold >"$WORK/hold.log" 2>&1 &
PIDS+=($!); HOLD_PID=$!
RUST_LOG=warn "${EXTPROC_BIN:-$BIN/bbr-extproc}" --secure-serving=false --metrics-endpoint-auth=false --bind-address 127.0.0.1 \
  --grpc-port "$EXTPROC" --grpc-health-port "$HEALTH" --metrics-port "$METRICS" \
  >"$WORK/extproc.log" 2>&1 &
PIDS+=($!); BBR_PID=$!
wait_port "$STUB"; wait_port "$EXTPROC"; wait_port "$NOOP"; wait_port "$HOLD"

# Runs in this shell, not in a `$(...)` subshell: a PID appended there
# would never reach PIDS, and the cleanup trap would leave the Envoy running.
start_envoy() { # config file, ext_proc port, setup name -> sets ENVOY_PORT
  local listen admin out="$WORK/$3.yaml"
  listen=$(free_port); admin=$(free_port)
  sed -e "s/\${LISTEN_PORT}/$listen/; s/\${ADMIN_PORT}/$admin/; s/\${EXTPROC_PORT}/$2/" \
      -e "s/\${LLAMA_PORT}/$STUB/; s/\${DEEPSEEK_PORT}/$STUB/; s/\${DEFAULT_PORT}/$STUB/" \
      "deploy/envoy/$1" >"$out"
  "$ENVOY" -c "$out" --disable-hot-restart --concurrency "$ENVOY_CONCURRENCY" -l error \
    >"$WORK/$3.log" 2>&1 &
  PIDS+=($!)
  wait_port "$listen"
  ENVOY_PORT=$listen ENVOY_PID=$!
}
start_envoy header-only.yaml 0 header-only; HEADER_PORT=$ENVOY_PORT HEADER_ENVOY=$ENVOY_PID
# The same file for both processors; only the ext_proc port differs.
start_envoy bbr-full-duplex.yaml "$NOOP" noop; NOOP_PORT=$ENVOY_PORT NOOP_ENVOY=$ENVOY_PID
start_envoy bbr-full-duplex.yaml "$HOLD" hold; HOLD_PORT=$ENVOY_PORT HOLD_ENVOY=$ENVOY_PID
start_envoy bbr-full-duplex.yaml "$EXTPROC" bbr; BBR_PORT=$ENVOY_PORT BBR_ENVOY=$ENVOY_PID

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

run() { # port envoy-pid processor-pid (0: none) body concurrency [extra loadgen args...]
  # The loadgen's JSON line, with the CPU µs the setup's Envoy and
  # processor used during the run.
  local port=$1 envoy=$2 processor=$3 body=$4 conc=$5; shift 5
  with_cpu "$envoy" "$processor" "$BIN/loadgen" --url "http://127.0.0.1:$port/v1/chat/completions" \
    --body "$WORK/$body.json" --concurrency "$conc" --duration "$DURATION" \
    --header content-type:application/json --expect-status 200 --expect-body '"model":"ski-resorts"' "$@"
}

OUT=target/bbr-extproc-load.md
CPU_ROWS=()
{
  echo "| body | conc. | header-only req/s | p50 | p99 | no-op req/s | p50 | p99 | holding req/s | p50 | p99 | bbr-extproc req/s | p50 | p99 | bbr/no-op | bbr/holding | bbr/header-only |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$OUT"
for body in $BODIES; do
  for conc in 1 64; do
    # Back to back, so load from elsewhere on the machine tends to hit
    # all four setups of a row alike.
    header=$(run "$HEADER_PORT" "$HEADER_ENVOY" 0 "$body" "$conc" --header x-gateway-model-name:ski-resorts)
    noop=$(run "$NOOP_PORT" "$NOOP_ENVOY" "$NOOP_PID" "$body" "$conc")
    hold=$(run "$HOLD_PORT" "$HOLD_ENVOY" "$HOLD_PID" "$body" "$conc")
    bbr=$(run "$BBR_PORT" "$BBR_ENVOY" "$BBR_PID" "$body" "$conc")
    CPU_ROWS+=("$body $conc $header $noop $hold $bbr")
    python3 - "$body" "$conc" "$header" "$noop" "$hold" "$bbr" >>"$OUT" <<'PY'
import json, sys
sys.path.insert(0, "benches/scripts")
from body_labels import LABELS
body, conc = sys.argv[1], sys.argv[2]
h, n, w, b = (json.loads(a) for a in sys.argv[3:7])
for r in (h, n, w, b):
    if r["errors"]:
        sys.exit(f"{r['errors']} errors in a run: {r}")
ms = lambda us: f"{us / 1000:.2f} ms"
cells = lambda r: f"{r['requests_per_sec']:.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])}"
rate = lambda r: r["requests_per_sec"]
size = LABELS[body]
print(f"| {size} | {conc} | {cells(h)} | {cells(n)} | {cells(w)} | {cells(b)} "
      f"| {rate(b) / rate(n):.2f} | {rate(b) / rate(w):.2f} | {rate(b) / rate(h):.2f} |")
PY
  done
done
echo >>"$OUT" # the table ends here for markdown
cpu_table "CPU per request, µs (Envoy + processor + load generator = total):" "header-only|no-op|holding|bbr-extproc" \
  "${CPU_ROWS[@]}" >>"$OUT"
echo "model position: $MODEL_POSITION, $DURATION per run, Envoy --concurrency $ENVOY_CONCURRENCY, $(nproc) cores" >>"$OUT"
# Time spent inside the extractor, from bbr-extproc's own histogram.
python3 - "$METRICS" >>"$OUT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
values = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("bbr_extraction_duration_seconds_") and " " in l}
total, count = values.get("bbr_extraction_duration_seconds_sum", 0.0), values.get("bbr_extraction_duration_seconds_count", 0.0)
if count:
    print(f"bbr-extproc extraction time: {total / count * 1e6:.1f} µs per request on average over {count:.0f} requests (bbr_extraction_duration_seconds)")
    # The mean hides the shape: how many calls stayed within each bucket.
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in values.items()
                     if k.startswith("bbr_extraction_duration_seconds_bucket") and "+Inf" not in k)
    print("within: " + ", ".join(f"{le * 1e6:g} µs {v / count:.0%}" for le, v in buckets if le <= 1e-3))
PY
cat "$OUT"
