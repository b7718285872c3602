#!/usr/bin/env bash
# gRPC unary benchmark: switchyard (upstream_protocol: h2) vs nginx (grpc_pass) vs HAProxy
# (server ... proto h2), all in front of the same gRPC backend, placed like run.sh (see README.md).
#   grpc.sh [--record] TARGET              TARGET = direct | nginx | haproxy | switchyard | switchyard@PATH
#   grpc.sh [--record] compare T1 T2 ...   T1 T2 ... T1 T2 ... for $ROUNDS rounds, then medians + ratios
# Backend: bench/backend --grpc on BPORT..BPORT+2 (h2c; every POST answered 200, content-type
# application/grpc, one MSG-byte message, trailer grpc-status: 0). Load: h2load over h2c (prior
# knowledge), CONNS connections x STREAMS concurrent streams, every request a POST of GRPC_PATH
# with one length-prefixed MSG-byte message, content-type application/grpc and te: trailers.
# h2load counts HTTP statuses only, so gRPC is checked separately, and any failure is fatal:
#   - before each measured run and after it, one call by curl must get HTTP 200, content-type
#     application/grpc, the whole message and grpc-status 0 in the trailers, and (GRPCIO=auto
#     when python3 has grpcio, 1 = required, 0 = skipped) one call by a grpcio client must get OK;
#   - during the run, every 2xx h2load saw must be an answer the backend gave (its GET /count):
#     2xx answers a proxy made up itself count as errors, with h2load's failed, errored, timed-out
#     and non-2xx requests.
# A run with errors prints them and the proxy's log on stderr, and grpc.sh exits with status 2 at the end.
# Output: one `target=... rps=... proxy_cpu_us_per_req=...` line per run, as run.sh's (p50/p99
# from h2load's per-request log). --record appends a dated section to bench/RESULTS.md
# (RESULTS=FILE: to FILE). Every other knob is an environment variable; defaults below.
# shellcheck disable=SC2317  # the functions run_targets (lib.sh) runs look unreachable to shellcheck
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=./lib.sh
. "$HERE/lib.sh"
: "${CONNS:=16}" "${STREAMS:=16}"   # h2 connections, concurrent streams on each
: "${DURATION:=10}" "${WARMUP:=2}" "${ROUNDS:=3}"
: "${WORKERS:=1}"            # nginx worker_processes / haproxy nbthread / switchyard workers
: "${PROXY_CPUS:=1}"         # taskset CPU list for the proxy
: "${LOAD_CPUS:=0}"          # taskset CPU list for backend + h2load
: "${BACKEND_THREADS:=1}"
: "${MSG:=64}"               # bytes of the gRPC message each way (plus its 5-byte prefix)
: "${GRPC_PATH:=/bench.Echo/Unary}"
: "${GRPCIO:=auto}"          # the grpcio client check: auto | 1 (required) | 0 (skipped)
: "${MAX_STEAL:=10}"         # redo a run (twice at most) when steal_pct exceeds this
: "${BPORT:=18281}" "${PPORT:=18280}"   # backends on BPORT..BPORT+2, the proxy on PPORT
: "${APORT:=18299}"          # switchyard's admin listener
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"   # cargo target dir of the backend
: "${RESULTS:=}"             # file to append a results section to (--record: bench/RESULTS.md)
: "${KEEP:=0}"               # 1 = keep the scratch folder (configs, logs, h2load's request logs)
KNOBS=(CONNS STREAMS DURATION WARMUP ROUNDS WORKERS PROXY_CPUS LOAD_CPUS BACKEND_THREADS MSG GRPC_PATH MAX_STEAL)
ARGS=("$@")
SCRATCH=$(mktemp -d /tmp/bench-grpc.XXXXXX)
TICK=$(getconf CLK_TCK)
FRAME=$SCRATCH/request.grpc  # the request body: one length-prefixed gRPC message
BACKEND_PID="" PROXY_PID=""
CONF_SED=(-e "s|@INFLIGHT@|$((CONNS * STREAMS))|g")   # calls in flight (nginx's upstream keepalive)

cleanup() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" 5
  [[ -n $BACKEND_PID ]] && stop_pid "$BACKEND_PID" 5
  if [[ $KEEP == 1 ]]; then log "scratch folder kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_frame() {  # 0 (not compressed), the length as 4 big-endian bytes, MSG bytes of payload
  local bits esc=""
  for bits in 24 16 8 0; do esc+=$(printf '\\x%02x' $((MSG >> bits & 255))); done
  printf '%b' "\\x00$esc" > "$FRAME"
  head -c "$MSG" /dev/zero | tr '\0' m >> "$FRAME"
}

curl_call() {   # one gRPC call to http://$1 by curl; prints what is wrong and returns 1, or returns 0
  local hdr=$SCRATCH/call.hdr body=$SCRATCH/call.body code status
  rm -f "$hdr" "$body"
  if ! code=$(curl -sS --max-time 10 --http2-prior-knowledge -o "$body" -D "$hdr" -w '%{http_code}' \
                -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$FRAME" \
                "http://$1$GRPC_PATH" 2>&1); then
    echo "curl failed: $code"; return 1
  fi
  # -D holds the head and then, after a blank line, the trailers
  status=$(tr -d '\r' < "$hdr" | awk -F': *' 'tolower($1) == "grpc-status" { print $2 }' | tr '\n' ' ')
  if [[ $code != 200 ]] || ! grep -qi '^content-type: application/grpc' "$hdr" || [[ $status != "0 " ]] \
     || [[ $(stat -c %s "$body" 2>/dev/null || echo 0) != $((MSG + 5)) ]]; then
    echo "HTTP status $code, grpc-status '${status% }' (want 200 and 0), $(stat -c %s "$body" 2>/dev/null || echo 0)" \
         "body bytes (want $((MSG + 5))); headers and trailers:"
    tr -d '\r' < "$hdr" | sed 's/^/    /'
    return 1
  fi
}

grpcio_call() { # one unary call to $1 by a grpcio client; prints what is wrong and returns 1, or returns 0
  python3 - "$1" "$GRPC_PATH" "$MSG" <<'EOF'
import sys
import grpc
target, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        reply = call(b"m" * size, timeout=10)
    except grpc.RpcError as e:
        sys.exit(f"grpcio: {e.code().name}: {e.details()}")
    if len(reply) != size:
        sys.exit(f"grpcio: OK but {len(reply)} bytes of reply (want {size})")
EOF
}

check_calls() { # $1 = host:port, $2 = when: both checks, dying with the details and the proxy's log on a failure
  local why
  if ! why=$(curl_call "$1"); then
    log "$why"
    [[ -n $PROXY_PID ]] && { log "--- proxy log (last 40 lines):"; tail -40 "$SCRATCH/proxy.log" >&2; }
    die "$2: the gRPC call by curl through $1 failed (see above)"
  fi
  if [[ $GRPCIO != 0 ]] && ! why=$(grpcio_call "$1" 2>&1); then
    log "$why"
    [[ -n $PROXY_PID ]] && { log "--- proxy log (last 40 lines):"; tail -40 "$SCRATCH/proxy.log" >&2; }
    die "$2: the gRPC call by grpcio through $1 failed (see above)"
  fi
}

wait_grpc() {   # wait until a gRPC call to $1 succeeds; $2: a log to show if it never does
  local i why=""
  for ((i = 0; i < 100; i++)); do
    why=$(curl_call "$1") && return 0
    if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then break; fi   # the proxy died: stop waiting
    sleep 0.1
  done
  log "$why"; cat "$2" >&2
  die "no successful gRPC call to $1"
}

backend_count() { curl -sS --max-time 10 --http2-prior-knowledge "http://127.0.0.1:$BPORT/count"; }

check_target() {  # fail before any run starts when a target cannot run here
  case $1 in
    direct) ;;
    nginx|haproxy) command -v "$1" >/dev/null || die "$1 not installed: run bench/setup.sh" ;;
    switchyard|switchyard@*) check_switchyard "$1" ;;
    *) die "unknown target '$1' (direct | nginx | haproxy | switchyard | switchyard@PATH)" ;;
  esac
}

start_proxy() {
  case $(target_kind "$1") in
    nginx)      spawn_proxy nginx "$HERE/conf/nginx-grpc.conf.in" ;;
    haproxy)    spawn_proxy haproxy "$HERE/conf/haproxy-grpc.cfg.in" ;;
    switchyard) spawn_proxy "$1" "$HERE/conf/switchyard-grpc.yaml.in" ;;
  esac
  wait_grpc "127.0.0.1:$PPORT" "$SCRATCH/proxy.log"
}

# shellcheck disable=SC2086  # $pids: zero or one PID, split on purpose
bench_grpc() {  # one measured run of one target -> one result line on stdout
  local target=$1 addr pids=""
  if [[ $target == direct ]]; then
    addr=127.0.0.1:$BPORT
  else
    start_proxy "$target"; addr=127.0.0.1:$PPORT; pids=$PROXY_PID
  fi
  check_calls "$addr" "$target, before the run"
  local h2=(h2load -c"$CONNS" -m"$STREAMS" -d "$FRAME" -H 'content-type: application/grpc' -H 'te: trailers')
  local url="http://$addr$GRPC_PATH" p0 p1 b0 b1 s0 s1 c0 c1 out
  taskset -c "$LOAD_CPUS" "${h2[@]}" -D"$WARMUP" "$url" >/dev/null 2>&1 || true
  c0=$(backend_count)
  p0=$(cpu_ticks $pids); b0=$(cpu_ticks $BACKEND_PID); s0=$(steal)
  out=$(taskset -c "$LOAD_CPUS" "${h2[@]}" -D"$DURATION" --log-file "$SCRATCH/requests.log" "$url" 2>&1) || true
  p1=$(cpu_ticks $pids); b1=$(cpu_ticks $BACKEND_PID); s1=$(steal)
  c1=$(backend_count)
  check_calls "$addr" "$target, after the run"
  local n ok2xx rps mean err p50 p99 made
  read -r n ok2xx rps mean err < <(awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                     if (v ~ /s$/) return v * 1000; return v * 60000 }
    BEGIN                { n = ok = rps = mean = err = 0 }
    /^finished in /      { rps = $4 }
    /^requests: /        { n = $8; err += $10 + $12 + $14 }        # failed, errored, timeout
    /^status codes: /    { ok = $3; err += $5 + $7 + $9 }          # 3xx, 4xx, 5xx
    /^time for request:/ { mean = ms($6) }
    END { print n, ok, rps, mean, err }' <<<"$out")
  read -r p50 p99 < <(cut -f3 "$SCRATCH/requests.log" | sort -n | awk '{ d[NR] = $1 }
    END { if (!NR) { print "na na"; exit }
          printf "%.3f %.3f\n", d[int((NR - 1) * 0.5) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000 }')
  made=$((ok2xx - (c1 - c0)))   # 2xx answers that never came from the backend
  if ((made > 0)); then err=$((err + made)); fi
  if ((err > 0)) || ((n == 0)); then
    log "### $target: $err errors ($made 2xx answers the backend never gave: it answered $((c1 - c0)), h2load saw $ok2xx 2xx); h2load said:"
    log "$out"
    if [[ -n $PROXY_PID ]]; then log "--- proxy log (last 40 lines):"; tail -40 "$SCRATCH/proxy.log" >&2; fi
    echo "$target" >> "$SCRATCH/failed"
  fi
  [[ -n $PROXY_PID ]] && stop_proxy
  result_line "$target" "$n" "${pids:+$((p1 - p0))}" $((b1 - b0)) "$s0 $s1" "$rps" "$mean" "$p50" "$p99" "$err"
}

if [[ ${1:-} == --record ]]; then
  shift; ARGS=("$@")
  [[ -n $RESULTS ]] || RESULTS=$HERE/RESULTS.md
fi
[[ $# -ge 1 ]] || die "usage: grpc.sh [--record] direct|nginx|haproxy|switchyard[@PATH] | compare T1 T2 ..."
COMPARE=0
if [[ $1 == compare ]]; then
  [[ $# -ge 2 ]] || die "compare needs targets"
  TARGETS=("${@:2}"); COMPARE=1
else
  [[ $# -eq 1 ]] || die "one target, or: compare T1 T2 ..."
  TARGETS=("$1")
fi
for t in "${TARGETS[@]}"; do check_target "$t"; done
for tool in h2load curl; do
  command -v "$tool" >/dev/null || die "$tool not installed: run bench/setup.sh (apt-get install nghttp2-client curl)"
done
case $GRPCIO in
  0) ;;
  1)    python3 -c 'import grpc' 2>/dev/null || die "GRPCIO=1 but python3 cannot import grpc: pip install grpcio" ;;
  auto) if python3 -c 'import grpc' 2>/dev/null; then GRPCIO=1
        else GRPCIO=0; log "python3 has no grpcio (pip install grpcio): only curl checks the gRPC answers"; fi ;;
  *)    die "GRPCIO must be auto, 1 or 0" ;;
esac
((MSG >= 0 && MSG < 4294967296)) || die "MSG must be 0..4294967295 bytes"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $LOAD0; grpc conns=$CONNS streams=$STREAMS duration=${DURATION}s warmup=${WARMUP}s workers=$WORKERS proxy_cpus=$PROXY_CPUS load_cpus=$LOAD_CPUS backend_threads=$BACKEND_THREADS msg=${MSG}B path=$GRPC_PATH grpcio_check=$GRPCIO" \
  | tee "$SCRATCH/header"
make_frame
spawn_backend --grpc --body "$MSG"
for p in 0 1 2; do wait_grpc "127.0.0.1:$((BPORT + p))" "$SCRATCH/backend.log"; done
run_targets bench_grpc "${TARGETS[@]}"
[[ -n $RESULTS ]] && record_results gRPC "$SCRATCH/header" "$SCRATCH/results" "$SCRATCH/medians"
if [[ -s $SCRATCH/failed ]]; then
  die "runs with errors: $(sort -u "$SCRATCH/failed" | tr '\n' ' ')(details above)"
fi
exit 0
