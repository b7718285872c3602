#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: user-space work of the
# proxy (its code, its libraries, libc), not kernel time and not cycles. Unlike wall-clock
# figures, the count hardly moves when something else loads the machine, so it tells whether
# a change to the request path made it cheaper even on a busy 2-core VM.
#
#   bench/instructions.sh                 # switchyard (target/release/switchyard) and nginx
#   bench/instructions.sh switchyard      # any of: switchyard switchyard-ratelimit nginx
#   N=50000 CONNS=16 bench/instructions.sh switchyard
#
# Same job as run.sh: keep-alive clients → proxy → round robin over the 3 bench backends
# (bench/backend), 64-byte bodies; nginx with conf/nginx.conf.in (one process: master off),
# switchyard with conf/switchyard.yaml.in (workers: 1). A warm-up of 2,000 requests is not
# counted (callgrind_control -z), then N requests by h2load --h1 are (callgrind_control -d).
# Prints `target=... requests=N instructions_per_request=...`; the callgrind files stay in
# the scratch folder when KEEP=1 (callgrind_annotate FILE for the profile).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

N=${N:-20000}
CONNS=${CONNS:-16}
BPORT=${BPORT:-18181}
PPORT=${PPORT:-18180}
APORT=${APORT:-18199}
TARGET_DIR=${TARGET_DIR:-$ROOT/target/bench-backend}
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(switchyard nginx)

for tool in valgrind callgrind_control h2load curl; do
  command -v "$tool" >/dev/null || { log "$tool not found: apt-get install valgrind nghttp2-client curl (or bench/setup.sh)"; exit 1; }
done
for p in "$BPORT" $((BPORT + 1)) $((BPORT + 2)) "$PPORT" "$APORT"; do
  if port_busy "$p"; then log "port $p is in use (set BPORT/PPORT/APORT)"; exit 1; fi
done

SCRATCH=$(mktemp -d /tmp/bench-instr.XXXXXX)
BACKEND_PID=
PROXY_PID=
cleanup() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" 5
  [[ -n $BACKEND_PID ]] && stop_pid "$BACKEND_PID" 5
  if [[ ${KEEP:-0} == 1 ]]; then log "callgrind files kept in $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT

BACKEND=$(backend_bin)
"$BACKEND" --port "$BPORT" --count 3 --workers 1 --body 64 >"$SCRATCH/backend.log" 2>&1 &
BACKEND_PID=$!

fill() {  # fill a conf/*.in template
  sed -e "s|@PPORT@|$PPORT|g" -e "s|@APORT@|$APORT|g" -e "s|@B1@|$BPORT|g" \
    -e "s|@B2@|$((BPORT + 1))|g" -e "s|@B3@|$((BPORT + 2))|g" -e "s|@WORKERS@|1|g" \
    -e "s|@SCRATCH@|$SCRATCH|g" "$1"
}

measure() {
  local target=$1 out="$SCRATCH/callgrind.$1.out" cmd
  case $target in
    switchyard|switchyard-ratelimit)
      fill "$HERE/conf/switchyard.yaml.in" >"$SCRATCH/switchyard.yaml"
      if [[ $target == switchyard-ratelimit ]]; then
        cat "$HERE/conf/switchyard-ratelimit.yaml" >>"$SCRATCH/switchyard.yaml"
      fi
      cmd=("$(switchyard_bin)" run -c "$SCRATCH/switchyard.yaml" --log-format text) ;;
    nginx)
      fill "$HERE/conf/nginx.conf.in" | sed 's/^daemon off;/daemon off;\nmaster_process off;/' >"$SCRATCH/nginx.conf"
      cmd=(nginx -c "$SCRATCH/nginx.conf" -p "$SCRATCH") ;;
    *) log "unknown target $target (switchyard | switchyard-ratelimit | nginx)"; exit 1 ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" >"$SCRATCH/$target.log" 2>&1 &
  PROXY_PID=$!
  local i ready=
  for ((i = 0; i < 200; i++)); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PPORT/"; then ready=1; break; fi
    sleep 0.2
  done
  [[ -n $ready ]] || { log "$target did not answer 200 within 40 s: see $SCRATCH/$target.log"; KEEP=1; exit 1; }
  h2load --h1 -n 2000 -c "$CONNS" "http://127.0.0.1:$PPORT/" >/dev/null
  callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
  local done_line
  done_line=$(h2load --h1 -n "$N" -c "$CONNS" "http://127.0.0.1:$PPORT/" | grep '^requests:')
  callgrind_control -d "$PROXY_PID" >/dev/null 2>&1
  sleep 1
  stop_pid "$PROXY_PID" 10
  PROXY_PID=
  case $done_line in
    *" $N succeeded"*) ;;
    *) log "$target: not every request succeeded: $done_line"; exit 1 ;;
  esac
  # The dump (callgrind.out.N, N >= 1) holds only what ran between -z and -d.
  local dump total
  dump=$(ls -t "$out".* | head -1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  echo "target=$target requests=$N conns=$CONNS instructions=$total instructions_per_request=$((total / N))"
}

log "$(machine_line)"
log "switchyard $(switchyard_rev)"
for t in "${TARGETS[@]}"; do measure "$t"; done
