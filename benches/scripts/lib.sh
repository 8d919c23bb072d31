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
#                      "cpu_us": [µs A used, µs B used, µs CMD used] added
#                      (0 for A or B: no process)
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

# Seconds in a `times` output (written to a file) -> user + system µs of
# the shell's waited-for children (second line).
times_us() {
  awk 'NR == 2 { t = 0; for (k = 1; k <= 2; k++) { split($k, p, "m"); t += p[1] * 60 + p[2] } printf "%d", t * 1e6 }' "$1"
}

with_cpu() {
  local a=$1 b=$2 a0=0 b0=0 a1=0 b1=0 line times="$WORK/times.$BASHPID"; shift 2
  [ "$a" = 0 ] || a0=$(cpu_us "$a"); [ "$b" = 0 ] || b0=$(cpu_us "$b")
  # CMD's own CPU: `times` in this shell (to a file: in a `$(...)`
  # subshell its counters would start at zero).
  times >"$times.0"
  line=$("$@" | tail -n 1)
  times >"$times.1"
  [ "$a" = 0 ] || a1=$(cpu_us "$a"); [ "$b" = 0 ] || b1=$(cpu_us "$b")
  echo "${line%\}},\"cpu_us\":[$(( a1 - a0 )),$(( b1 - b0 )),$(( $(times_us "$times.1") - $(times_us "$times.0") ))]}"
  rm -f "$times.0" "$times.1"
}

cpu_table() { python3 "$(dirname "${BASH_SOURCE[0]}")/cpu-table.py" "$@"; }

gen_body() { # name shape size position model
  "$BIN/gen-body" --shape "$2" --size "$3" --position "$4" --model "$5" >"$WORK/$1.json"
}
