#!/usr/bin/env bash
# Side-by-side HTTP/1.1 reverse-proxy benchmark: switchyard vs nginx vs HAProxy (see README.md).
#   run.sh [--record] TARGET              TARGET = direct | nginx | haproxy | switchyard | switchyard-ratelimit | custom:HOST:PORT
#   run.sh [--record] compare T1 T2 ...   T1 T2 ... T1 T2 ... for $ROUNDS rounds, then medians + ratios
# switchyard-ratelimit is switchyard with a rate_limit that never triggers (conf/switchyard-ratelimit.yaml):
# `compare switchyard switchyard-ratelimit` gives the "rate limiting on vs off" ratio.
# Both run target/release/switchyard (SWITCHYARD=PATH: another binary); switchyard@PATH and
# switchyard-ratelimit@PATH run the binary at PATH, so two builds compare in one run:
#   run.sh compare nginx switchyard@/tmp/switchyard-old switchyard@/tmp/switchyard-new
# --record appends a dated section (command, machine, table of results) to bench/RESULTS.md;
# RESULTS=FILE does the same to FILE. Every other knob is an environment variable; defaults below.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=./lib.sh
. "$HERE/lib.sh"
: "${CONNS:=64}" "${DURATION:=10}" "${WARMUP:=2}" "${ROUNDS:=3}"
: "${WORKERS:=1}"            # nginx worker_processes / haproxy nbthread / switchyard workers
: "${PROXY_CPUS:=1}"         # taskset CPU list for the proxy (custom proxies are re-pinned too)
: "${LOAD_CPUS:=0}"          # taskset CPU list for backend + wrk
: "${PIN_CUSTOM:=1}"         # 0 = leave a custom proxy's affinity alone
: "${BACKEND_THREADS:=1}" "${BODY:=64}" "${URL_PATH:=/}"
: "${RATE:=}"                # empty = wrk closed loop; N = h2load at N req/s total (no p50/p99)
: "${MAX_STEAL:=10}"         # redo a run (twice at most) when steal_pct exceeds this
: "${BPORT:=18081}" "${PPORT:=18080}"   # backends on BPORT..BPORT+2, the proxy on PPORT
: "${APORT:=18099}"          # switchyard's admin listener
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"   # cargo target dir of the backend
: "${RESULTS:=}"             # file to append a results section to (--record: bench/RESULTS.md)
KNOBS=(CONNS DURATION WARMUP ROUNDS WORKERS PROXY_CPUS LOAD_CPUS BACKEND_THREADS BODY URL_PATH RATE MAX_STEAL)
ARGS=("$@")
SCRATCH=$(mktemp -d /tmp/bench.XXXXXX)
TICK=$(getconf CLK_TCK)
BACKEND_PID="" PROXY_PID=""

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" 5
  [[ -n $BACKEND_PID ]] && stop_pid "$BACKEND_PID" 5
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {   # wait until http://$1 answers 200; $2: a log to show if it never does
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf -o /dev/null "http://$1$URL_PATH" && return 0
    if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then break; fi   # the proxy died: stop waiting
    sleep 0.1
  done
  [[ -n ${2:-} ]] && cat "$2" >&2
  die "no HTTP 200 from $1"
}

check_target() {  # fail before any run starts when a target cannot run here
  case $1 in
    direct|custom:*:*) ;;
    nginx|haproxy) command -v "$1" >/dev/null || die "$1 not installed: run bench/setup.sh" ;;
    switchyard|switchyard-ratelimit|switchyard@*|switchyard-ratelimit@*) check_switchyard "$1" ;;
    *) die "unknown target '$1'" ;;
  esac
}

# shellcheck disable=SC2317  # start_proxy and bench run through run_targets (lib.sh)
start_proxy() { # nginx|haproxy|switchyard[-ratelimit][@PATH], foreground, pinned to PROXY_CPUS; sets PROXY_PID
  case $(target_kind "$1") in
    nginx)      spawn_proxy nginx "$HERE/conf/nginx.conf.in" ;;
    haproxy)    spawn_proxy haproxy "$HERE/conf/haproxy.cfg.in" ;;
    switchyard) spawn_proxy "$1" "$HERE/conf/switchyard.yaml.in" ;;
    switchyard-ratelimit)
                spawn_proxy "$1" "$HERE/conf/switchyard.yaml.in" "$HERE/conf/switchyard-ratelimit.yaml" ;;
  esac
  wait_http "127.0.0.1:$PPORT" "$SCRATCH/proxy.log"
}

start_backend() {
  local p
  spawn_backend --body "$BODY"
  for p in 0 1 2; do wait_http "127.0.0.1:$((BPORT + p))" "$SCRATCH/backend.log"; done
}

# shellcheck disable=SC2086,SC2317  # $pids: zero or more PIDs, split on purpose; run by run_targets
bench() {       # one measured run of one target -> one result line on stdout
  local target=$1 addr pids=""
  case $target in
    direct)        addr=127.0.0.1:$BPORT ;;
    nginx|haproxy|switchyard|switchyard-ratelimit|switchyard@*|switchyard-ratelimit@*)
                   start_proxy "$target"; addr=127.0.0.1:$PPORT; pids=$PROXY_PID ;;
    custom:*:*)    addr=${target#custom:}; wait_http "$addr"
                   pids=$(listen_pids "${addr##*:}")
                   [[ -z $pids ]] && log "warning: no PID found for $addr, CPU not measured"
                   if [[ $PIN_CUSTOM == 1 ]]; then
                     for p in $pids; do taskset -a -cp "$PROXY_CPUS" "$p" >/dev/null; done
                   fi ;;
  esac
  local url="http://$addr$URL_PATH" p0 p1 b0 b1 s0 s1 out
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
  p0=$(cpu_ticks $pids); b0=$(cpu_ticks $BACKEND_PID); s0=$(steal)
  if [[ -n $RATE ]]; then   # open loop: fixed total request rate (h2load spreads it over CONNS)
    out=$(taskset -c "$LOAD_CPUS" h2load --h1 -c"$CONNS" --rps=$((RATE / CONNS)) -D"$DURATION" "$url" 2>&1)
  else                      # closed loop: as fast as the slowest component allows
    out=$(taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url")
  fi
  p1=$(cpu_ticks $pids); b1=$(cpu_ticks $BACKEND_PID); s1=$(steal)
  [[ -n $PROXY_PID ]] && stop_proxy
  local n rps mean p50 p99 err
  read -r n rps mean p50 p99 err < <(awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                     if (v ~ /s$/) return v * 1000; return v * 60000 }
    BEGIN               { p50 = p99 = "na"; n = rps = mean = err = 0 }
    / requests in /     { n = $1 }                                   # wrk
    /^Requests\/sec:/   { rps = $2 }
    /^ +Latency +[0-9]/ { mean = ms($2) }
    /^ +50% /           { p50 = ms($2) }
    /^ +99% /           { p99 = ms($2) }
    /Socket errors:/    { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx/           { err += $NF }
    /^finished in /     { rps = $4 }                                 # h2load
    /^requests: /       { n = $8; err += $10 + $12 + $14 }
    /^status codes: /   { err += $7 + $9 }                          # 4xx + 5xx
    /^time for request:/ { mean = ms($6) }
    END { print n, rps, mean, p50, p99, err }' <<<"$out")
  result_line "$target" "$n" "${pids:+$((p1 - p0))}" $((b1 - b0)) "$s0 $s1" "$rps" "$mean" "$p50" "$p99" "$err"
}

if [[ ${1:-} == --record ]]; then
  shift; ARGS=("$@")
  [[ -n $RESULTS ]] || RESULTS=$HERE/RESULTS.md
fi
[[ $# -ge 1 ]] || die "usage: run.sh [--record] direct|nginx|haproxy|switchyard[@PATH]|switchyard-ratelimit[@PATH]|custom:HOST:PORT | compare T1 T2 ..."
COMPARE=0
if [[ $1 == compare ]]; then
  [[ $# -ge 2 ]] || die "compare needs targets"
  TARGETS=("${@:2}"); COMPARE=1
else
  [[ $# -eq 1 ]] || die "one target, or: compare T1 T2 ..."
  TARGETS=("$1")
fi
for t in "${TARGETS[@]}"; do check_target "$t"; done
command -v wrk >/dev/null || die "wrk not installed: run bench/setup.sh"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $LOAD0; conns=$CONNS duration=${DURATION}s warmup=${WARMUP}s workers=$WORKERS proxy_cpus=$PROXY_CPUS load_cpus=$LOAD_CPUS backend_threads=$BACKEND_THREADS body=${BODY}B rate=${RATE:-max}" \
  | tee "$SCRATCH/header"
start_backend
run_targets bench "${TARGETS[@]}"
[[ -n $RESULTS ]] && record_results throughput "$SCRATCH/header" "$SCRATCH/results" "$SCRATCH/medians"
exit 0
