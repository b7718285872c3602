#!/usr/bin/env bash
# TLS termination benchmark: switchyard vs nginx with the same certificate, one worker each,
# in front of the same backend (see README.md for the layout; RESULTS.md for figures).
#   tls.sh [--record] [TARGET ...]      TARGET = nginx | switchyard (default: both)
# Per target and round, one line with:
#   full_hs_s        new TLS connections per second, one GET each, no resumption
#                    (openssl s_time -new, CLIENTS processes in parallel)
#   resumed_hs_s     the same with session resumption (openssl s_time -reuse); resumed_pct is
#                    the share of connections that really resumed (s_time prints r / *)
#   h1_rps           HTTPS requests/s over CONNS keep-alive HTTP/1.1 connections (wrk)
#   h2_rps           HTTPS requests/s over CONNS HTTP/2 connections x STREAMS streams (h2load)
#   *_cpu_us         the proxy's CPU time (user+sys, all threads) per handshake or request:
#                    the fair comparison when the load side, not the proxy, is the bottleneck
# --record appends a dated section (command, machine, tools, medians, all runs) to
# bench/RESULTS.md (RESULTS=FILE for another file). Knobs are environment variables below.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=./lib.sh
. "$HERE/lib.sh"
: "${DURATION:=10}" "${WARMUP:=2}" "${ROUNDS:=3}"
: "${CONNS:=64}" "${STREAMS:=10}"    # keep-alive connections (wrk, h2load); h2 streams per connection
: "${CLIENTS:=4}"                    # parallel openssl s_time processes for the handshake rates
: "${KEY:=ec}"                       # ec (P-256) | rsa (2048 bit): the certificate both proxies serve
: "${WORKERS:=1}"                    # nginx worker_processes / switchyard workers
: "${PROXY_CPUS:=1}" "${LOAD_CPUS:=0}"
: "${BACKEND_THREADS:=1}" "${BODY:=64}"
: "${BPORT:=18081}" "${PPORT:=18443}" "${APORT:=18099}"
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"
: "${RESULTS:=}"
KNOBS=(DURATION WARMUP ROUNDS CONNS STREAMS CLIENTS KEY WORKERS PROXY_CPUS LOAD_CPUS BACKEND_THREADS BODY)
ARGS=("$@")
SWITCHYARD_BIN=$(switchyard_bin)
SCRATCH=$(mktemp -d /tmp/bench-tls.XXXXXX)
TICK=$(getconf CLK_TCK)
BACKEND_PID="" PROXY_PID=""

die() { log "tls.sh: $*"; exit 2; }

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" 5
  [[ -n $BACKEND_PID ]] && stop_pid "$BACKEND_PID" 5
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() {   # utime+stime (clock ticks, all threads) of PID $1 and its children (nginx workers)
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

make_cert() {   # one certificate for both proxies
  local newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [[ $KEY == rsa ]] && newkey=(-newkey rsa:2048)
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$SCRATCH/key.pem" -out "$SCRATCH/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
}

render() {
  sed -e "s|@WORKERS@|$WORKERS|g; s|@SCRATCH@|$SCRATCH|g; s|@PPORT@|$PPORT|g; s|@APORT@|$APORT|g" \
      -e "s|@CERT@|$SCRATCH/cert.pem|g; s|@KEY@|$SCRATCH/key.pem|g" \
      -e "s|@B1@|$BPORT|g; s|@B2@|$((BPORT + 1))|g; s|@B3@|$((BPORT + 2))|g" "$1" > "$2"
}

wait_https() {
  local i
  for ((i = 0; i < 100; i++)); do
    curl -skf -o /dev/null "https://127.0.0.1:$PPORT/" && return 0
    if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then break; fi
    sleep 0.1
  done
  cat "$SCRATCH/proxy.log" >&2
  die "no HTTPS 200 from 127.0.0.1:$PPORT"
}

# shellcheck disable=SC2094  # nginx -e and nginx's stderr share one log, on purpose
start_proxy() {
  port_busy "$PPORT" && die "port $PPORT already in use"
  case $1 in
    nginx)      render "$HERE/conf/nginx-tls.conf.in" "$SCRATCH/nginx.conf"
                taskset -c "$PROXY_CPUS" nginx -e "$SCRATCH/proxy.log" -c "$SCRATCH/nginx.conf" &>>"$SCRATCH/proxy.log" & ;;
    switchyard) port_busy "$APORT" && die "admin port $APORT already in use"
                render "$HERE/conf/switchyard-tls.yaml.in" "$SCRATCH/switchyard.yaml"
                taskset -c "$PROXY_CPUS" "$SWITCHYARD_BIN" run -c "$SCRATCH/switchyard.yaml" --log-format text \
                  &>"$SCRATCH/proxy.log" & ;;
  esac
  PROXY_PID=$!
  wait_https
}

start_backend() {
  local bin p i
  bin=$(backend_bin)
  for p in 0 1 2; do port_busy $((BPORT + p)) && die "port $((BPORT + p)) already in use"; done
  taskset -c "$LOAD_CPUS" "$bin" --port "$BPORT" --count 3 \
    --workers "$BACKEND_THREADS" --body "$BODY" 2>"$SCRATCH/backend.log" &
  BACKEND_PID=$!
  for p in 0 1 2; do
    for ((i = 0; i < 100; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$((BPORT + p))/" && break; sleep 0.1; done
  done
}

handshakes() {  # $1 = -new | -reuse -> "rate resumed_pct cpu_us_per_handshake"
  local mode=$1 p0 p1 t0 t1 i
  p0=$(cpu_ticks "$PROXY_PID"); t0=$(date +%s.%N)
  for ((i = 0; i < CLIENTS; i++)); do
    taskset -c "$LOAD_CPUS" openssl s_time -connect "127.0.0.1:$PPORT" "$mode" -time "$DURATION" -www / \
      > "$SCRATCH/stime.$i" 2>&1 &
  done
  wait  # (a subshell: only the s_time processes are its children)
  t1=$(date +%s.%N); p1=$(cpu_ticks "$PROXY_PID")
  cat "$SCRATCH"/stime.* | awk -v t0="$t0" -v t1="$t1" -v pc=$((p1 - p0)) -v hz="$TICK" '
    / connections in [0-9.]+s;/ { n += $1 }
    /^[*r]+/ { s = $0; gsub(/[^r*]/, "", s); all += length(s); r += gsub(/r/, "", s) }
    END {
      # s_time prints one character per connection: r = resumed, * = a full handshake
      pct = all ? 100 * r / all : 0
      printf "%.0f %.1f %s\n", n / (t1 - t0), pct, n ? sprintf("%.1f", pc / hz * 1e6 / n) : "na"
    }'
}

keepalive_h1() {   # -> "rps cpu_us_per_req errors"
  local p0 p1 out
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "https://127.0.0.1:$PPORT/" >/dev/null
  p0=$(cpu_ticks "$PROXY_PID")
  out=$(taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" "https://127.0.0.1:$PPORT/")
  p1=$(cpu_ticks "$PROXY_PID")
  awk -v pc=$((p1 - p0)) -v hz="$TICK" '
    / requests in / { n = $1 } /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 } /Non-2xx/ { err += $NF }
    END { printf "%.0f %s %d\n", rps, n ? sprintf("%.1f", pc / hz * 1e6 / n) : "na", err }' <<<"$out"
}

keepalive_h2() {   # -> "rps cpu_us_per_req errors"
  local p0 p1 out
  taskset -c "$LOAD_CPUS" h2load -c"$CONNS" -m"$STREAMS" -D"$WARMUP" "https://127.0.0.1:$PPORT/" >/dev/null 2>&1 || true
  p0=$(cpu_ticks "$PROXY_PID")
  out=$(taskset -c "$LOAD_CPUS" h2load -c"$CONNS" -m"$STREAMS" -D"$DURATION" "https://127.0.0.1:$PPORT/" 2>&1)
  p1=$(cpu_ticks "$PROXY_PID")
  grep -q "Application protocol: h2" <<<"$out" || log "warning: h2load did not negotiate h2"
  awk -v pc=$((p1 - p0)) -v hz="$TICK" '
    /^finished in / { rps = $4 } /^requests: / { n = $8; err += $10 + $12 + $14 }
    /^status codes: / { err += $7 + $9 }
    END { printf "%.0f %s %d\n", rps, n ? sprintf("%.1f", pc / hz * 1e6 / n) : "na", err }' <<<"$out"
}

bench() {          # one round of one target -> one line
  local t=$1 full resumed h1 h2
  start_proxy "$t"
  read -r -a full < <(handshakes -new)
  read -r -a resumed < <(handshakes -reuse)
  read -r -a h1 < <(keepalive_h1)
  read -r -a h2 < <(keepalive_h2)
  stop_pid "$PROXY_PID" 10; PROXY_PID=""
  echo "target=$t full_hs_s=${full[0]} full_resumed_pct=${full[1]} full_hs_cpu_us=${full[2]}" \
       "resumed_hs_s=${resumed[0]} resumed_pct=${resumed[1]} resumed_hs_cpu_us=${resumed[2]}" \
       "h1_rps=${h1[0]} h1_cpu_us=${h1[1]} h2_rps=${h2[0]} h2_cpu_us=${h2[1]} errors=$((h1[2] + h2[2]))"
}

COLS=(full_hs_s full_hs_cpu_us resumed_hs_s resumed_pct resumed_hs_cpu_us h1_rps h1_cpu_us h2_rps h2_cpu_us errors)
medians() {        # $1 = results file -> one "median target=..." line per target
  local t
  for t in "${TARGETS[@]}"; do
    awk -v t="target=$t" -v cols="${COLS[*]}" '
      $1 == t { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1], ++c[kv[1]]] = kv[2] } }
      END {
        n = split(cols, k, " "); printf "median %s", t
        for (j = 1; j <= n; j++) {
          m = c[k[j]]; delete a
          for (i = 1; i <= m; i++) a[i] = v[k[j], i] + 0
          asort(a); med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
          printf " %s=%s", k[j], med
        }
        print ""
      }' "$1"
  done
}

record() {         # $1 header, $2 all runs, $3 medians
  {
    echo
    echo "### $(date -u +%FT%TZ) — TLS: ${ARGS[*]:-nginx switchyard}"
    echo
    echo "- command: \`$(knob_line "${KNOBS[@]}") bench/tls.sh ${ARGS[*]}\`"
    echo "- machine: $(machine_line); load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- tools: $(tools_line), $(openssl version | cut -d' ' -f1-2)"
    echo
    echo "| target | full handshakes/s | proxy CPU µs/full hs | resumed handshakes/s | resumed % | proxy CPU µs/resumed hs | HTTPS h1 req/s | CPU µs/req | HTTPS h2 req/s | CPU µs/req | errors |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v["target"], v["full_hs_s"],
             v["full_hs_cpu_us"], v["resumed_hs_s"], v["resumed_pct"], v["resumed_hs_cpu_us"], v["h1_rps"],
             v["h1_cpu_us"], v["h2_rps"], v["h2_cpu_us"], v["errors"] }' "$3"
    echo
    echo "<details><summary>all runs</summary>"
    echo
    echo '```'
    cat "$1" "$2" "$3"
    echo '```'
    echo
    echo "</details>"
  } >> "$RESULTS"
  log "# appended to $RESULTS"
}

if [[ ${1:-} == --record ]]; then
  shift; ARGS=("$@")
  [[ -n $RESULTS ]] || RESULTS=$HERE/RESULTS.md
fi
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(nginx switchyard)
for t in "${TARGETS[@]}"; do
  case $t in
    nginx) command -v nginx >/dev/null || die "nginx not installed: run bench/setup.sh" ;;
    switchyard) [[ -x $SWITCHYARD_BIN ]] || die "no $SWITCHYARD_BIN: run 'cargo build --release'" ;;
    *) die "unknown target '$t' (nginx | switchyard)" ;;
  esac
done
for tool in wrk h2load openssl curl; do command -v "$tool" >/dev/null || die "$tool not installed: run bench/setup.sh"; done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $LOAD0; key=$KEY duration=${DURATION}s rounds=$ROUNDS conns=$CONNS streams=$STREAMS clients=$CLIENTS workers=$WORKERS proxy_cpus=$PROXY_CPUS load_cpus=$LOAD_CPUS body=${BODY}B" \
  | tee "$SCRATCH/header"
make_cert
start_backend
: > "$SCRATCH/results"
for _ in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do bench "$t" | tee -a "$SCRATCH/results"; done
done
medians "$SCRATCH/results" | tee "$SCRATCH/medians"
[[ -n $RESULTS ]] && record "$SCRATCH/header" "$SCRATCH/results" "$SCRATCH/medians"
exit 0
