# Shared by the load and soak scripts (sourced, not run):
#   . benches/scripts/lib.sh
# Sets WORK (a fresh temporary directory) and PIDS (append the pid of every
# process started in the background), and installs an EXIT trap that stops
# exactly those processes and removes WORK. Defines:
#   free_port          prints a free loopback TCP port
#   wait_port PORT     waits up to 10 s for something to listen on PORT
#   find_envoy         sets ENVOY: ENVOY_BIN, else .venv/bin/envoy, else PATH
#                      (empty when none is found)
#   cpu_us PID         CPU time (user + system) PID has used so far, in µs
#   with_cpu A B CMD.. runs CMD, prints its last line (a JSON object) with
#                      "cpu_us": [µs A used, µs B used] added (0: no process)
#   cpu_table TITLE SETUPS ROW..
#                      the CPU-per-request table of the rows (cpu-table.py)
#   gen_body NAME SHAPE SIZE POSITION MODEL
#                      writes $WORK/NAME.json with the body generator
#                      (needs $BIN/gen-body), exactly SIZE bytes

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

find_envoy() {
  ENVOY=${ENVOY_BIN:-}
  if [ -z "$ENVOY" ]; then
    if [ -x .venv/bin/envoy ]; then ENVOY=.venv/bin/envoy; else ENVOY=$(command -v envoy || true); fi
  fi
}

cpu_us() { awk -v tick="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1e6 / tick }' "/proc/$1/stat"; }

with_cpu() {
  local a=$1 b=$2 a0=0 b0=0 a1=0 b1=0 line; shift 2
  [ "$a" = 0 ] || a0=$(cpu_us "$a"); [ "$b" = 0 ] || b0=$(cpu_us "$b")
  line=$("$@" | tail -n 1)
  [ "$a" = 0 ] || a1=$(cpu_us "$a"); [ "$b" = 0 ] || b1=$(cpu_us "$b")
  echo "${line%\}},\"cpu_us\":[$(( a1 - a0 )),$(( b1 - b0 ))]}"
}

cpu_table() { python3 "$(dirname "${BASH_SOURCE[0]}")/cpu-table.py" "$@"; }

gen_body() { # name shape size position model
  "$BIN/gen-body" --shape "$2" --size "$3" --position "$4" --model "$5" >"$WORK/$1.json"
}
