#!/usr/bin/env bash
# Side-by-side HTTP/1.1 reverse-proxy benchmark: switchyard vs nginx vs HAProxy (see README.md).
#   run.sh [--record] TARGET              TARGET = direct | nginx | haproxy | switchyard | switchyard-ratelimit | custom:HOST:PORT
#   run.sh [--record] compare T1 T2 ...   T1 T2 ... T1 T2 ... for $ROUNDS rounds, then medians + ratios
# switchyard-ratelimit is switchyard with a rate_limit that never triggers (conf/switchyard-ratelimit.yaml):
# `compare switchyard switchyard-ratelimit` gives the "rate limiting on vs off" ratio.
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
SWITCHYARD_BIN=$(switchyard_bin)
SCRATCH=$(mktemp -d /tmp/bench.XXXXXX)
TICK=$(getconf CLK_TCK)
BACKEND_PID="" PROXY_PID=""

die() { log "run.sh: $*"; exit 2; }

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
listen_pids() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }

steal() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }  # steal, total ticks

cpu_ticks() {   # utime+stime (clock ticks, all threads) of the given PIDs and their children (nginx workers)
  local t=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

render() {      # fill a conf/*.in template
  sed -e "s|@WORKERS@|$WORKERS|g; s|@SCRATCH@|$SCRATCH|g; s|@PPORT@|$PPORT|g; s|@APORT@|$APORT|g" \
      -e "s|@B1@|$BPORT|g; s|@B2@|$((BPORT + 1))|g; s|@B3@|$((BPORT + 2))|g" "$1" > "$2"
}

check_target() {  # fail before any run starts when a target cannot run here
  case $1 in
    direct|custom:*:*) ;;
    nginx|haproxy) command -v "$1" >/dev/null || die "$1 not installed: run bench/setup.sh" ;;
    switchyard|switchyard-ratelimit)
                   [[ -x $SWITCHYARD_BIN ]] || die "no $SWITCHYARD_BIN: run 'cargo build --release' (or bench/setup.sh)"
                   if port_busy "$APORT"; then die "admin port $APORT already in use (APORT=...)"; fi ;;
    *) die "unknown target '$1'" ;;
  esac
}

# shellcheck disable=SC2094  # nginx -e and nginx's stderr share one log, on purpose
start_proxy() { # nginx|haproxy|switchyard, foreground, pinned to PROXY_CPUS; sets PROXY_PID
  port_busy "$PPORT" && die "port $PPORT already in use"
  case $1 in
    nginx)      render "$HERE/conf/nginx.conf.in" "$SCRATCH/nginx.conf"
                taskset -c "$PROXY_CPUS" nginx -e "$SCRATCH/proxy.log" -c "$SCRATCH/nginx.conf" &>>"$SCRATCH/proxy.log" & ;;
    haproxy)    render "$HERE/conf/haproxy.cfg.in" "$SCRATCH/haproxy.cfg"
                taskset -c "$PROXY_CPUS" haproxy -db -f "$SCRATCH/haproxy.cfg" &>"$SCRATCH/proxy.log" & ;;
    switchyard|switchyard-ratelimit)
                render "$HERE/conf/switchyard.yaml.in" "$SCRATCH/switchyard.yaml"
                if [[ $1 == switchyard-ratelimit ]]; then
                  cat "$HERE/conf/switchyard-ratelimit.yaml" >> "$SCRATCH/switchyard.yaml"
                fi
                taskset -c "$PROXY_CPUS" "$SWITCHYARD_BIN" run -c "$SCRATCH/switchyard.yaml" --log-format text \
                  &>"$SCRATCH/proxy.log" & ;;
  esac
  PROXY_PID=$!
  wait_http "127.0.0.1:$PPORT" "$SCRATCH/proxy.log"
}
stop_proxy() { stop_pid "$PROXY_PID" 10; PROXY_PID=""; }

start_backend() {
  local bin p
  bin=$(backend_bin)
  for p in 0 1 2; do port_busy $((BPORT + p)) && die "port $((BPORT + p)) already in use"; done
  taskset -c "$LOAD_CPUS" "$bin" --port "$BPORT" --count 3 \
    --workers "$BACKEND_THREADS" --body "$BODY" 2>"$SCRATCH/backend.log" &
  BACKEND_PID=$!
  for p in 0 1 2; do wait_http "127.0.0.1:$((BPORT + p))" "$SCRATCH/backend.log"; done
}

# shellcheck disable=SC2086  # $pids: zero or more PIDs, split on purpose
bench() {       # one measured run of one target -> one result line on stdout
  local target=$1 addr pids=""
  case $target in
    direct)        addr=127.0.0.1:$BPORT ;;
    nginx|haproxy|switchyard|switchyard-ratelimit)
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
  awk -v t="$target" -v w="$WORKERS" -v hz="$TICK" -v d="$DURATION" -v np="${pids:+1}" \
      -v pc=$((p1 - p0)) -v bc=$((b1 - b0)) -v st="$s0 $s1" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                     if (v ~ /s$/) return v * 1000; return v * 60000 }
    function f(v) { return v == "na" ? v : sprintf("%.3f", v) }
    BEGIN               { p50 = p99 = "na"; n = 0 }
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
    END {
      split(st, s, " "); stl = (s[4] > s[2]) ? 100 * (s[3] - s[1]) / (s[4] - s[2]) : 0
      cpu = (np && n) ? sprintf("%.2f", pc / hz * 1e6 / n) : "na"
      util = np ? sprintf("%.2f", pc / hz / d) : "na"
      printf "target=%s workers=%s rps=%.0f mean_ms=%.3f p50_ms=%s p99_ms=%s", t, w, rps, mean, f(p50), f(p99)
      printf " proxy_cpu_us_per_req=%s proxy_cpu_util=%s backend_cpu_us_per_req=%.2f steal_pct=%.1f errors=%d\n",
             cpu, util, n ? bc / hz * 1e6 / n : 0, stl, err
    }' <<<"$out"
}

measure() {     # bench $1 into $SCRATCH/line; redo it (twice at most) while steal_pct > MAX_STEAL
  for _ in 1 2 3; do
    bench "$1" > "$SCRATCH/line"
    awk -v m="$MAX_STEAL" '{ split($0, a, "steal_pct="); exit (a[2] + 0 > m) }' "$SCRATCH/line" && return
    log "# redone, steal_pct > $MAX_STEAL: $(cat "$SCRATCH/line")"
  done
}

stats() {       # stdin: numbers -> "median spread%" (spread = (max-min)/median)
  sort -g | awk '{ a[NR] = $1 } END { if (a[1] == "na") { print "na na"; exit }
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%s %.1f\n", m, m ? 100 * (a[NR] - a[1]) / m : 0 }'
}

summarize() {   # $1 = results file, rest = targets; ratios are against nginx (else the first target)
  local f=$1; shift
  local ref=$1 t; for t in "$@"; do [[ $t == nginx ]] && ref=nginx; done
  get() { awk -v t="target=$1" -v k="$2" '$1 == t { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$f"; }
  local ref_rps ref_cpu; read -r ref_rps _ < <(get "$ref" rps | stats); read -r ref_cpu _ < <(get "$ref" proxy_cpu_us_per_req | stats)
  echo "# medians over $ROUNDS rounds; *_spread_pct = (max-min)/median; ratios vs $ref"
  for t in "$@"; do
    local rps rs p50 p99 ps cpu cs
    read -r rps rs < <(get "$t" rps | stats); read -r p50 _ < <(get "$t" p50_ms | stats)
    read -r p99 ps < <(get "$t" p99_ms | stats); read -r cpu cs < <(get "$t" proxy_cpu_us_per_req | stats)
    awk -v t="$t" -v r="$rps" -v rs="$rs" -v a="$p50" -v b="$p99" -v ps="$ps" -v c="$cpu" -v cs="$cs" \
        -v R="$ref_rps" -v C="$ref_cpu" -v ref="$ref" 'BEGIN {
      printf "median target=%s rps=%.0f rps_spread_pct=%s p50_ms=%s p99_ms=%s p99_spread_pct=%s", t, r, rs, a, b, ps
      printf " proxy_cpu_us_per_req=%s cpu_spread_pct=%s rps_vs_%s=%s cpu_vs_%s=%s\n", c, cs, ref,
             R ? sprintf("%.3f", r / R) : "na", ref, (c == "na" || C == "na") ? "na" : sprintf("%.3f", c / C) }'
  done
}

record() {      # append a dated section to $RESULTS: $1 = header line, $2 = result lines, $3 = median lines
  local cmd
  cmd="$(knob_line "${KNOBS[@]}") bench/run.sh ${ARGS[*]}"
  {
    echo
    echo "### $(date -u +%FT%TZ) — throughput: ${ARGS[*]}"
    echo
    echo "- command: \`$cmd\`"
    echo "- machine: $(machine_line); load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- tools: $(tools_line)"
    echo "- max steal_pct over the runs: $(grep -o 'steal_pct=[0-9.]*' "$2" | cut -d= -f2 | sort -g | tail -1)," \
         "errors: $(grep -o 'errors=[0-9]*' "$2" | awk -F= '{ e += $2 } END { print e + 0 }')"
    echo
    # compare: one row per target with the medians; a single run: that run's row
    if [[ -s $3 ]]; then
      awk '$1 == "median" { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2]
               if (kv[1] ~ /^rps_vs_/) { rv = kv[2]; ref = substr(kv[1], 8) }
               if (kv[1] ~ /^cpu_vs_/) cv = kv[2] }
             if (!hdr++) {
               print "| target | req/s | req/s spread % | p50 ms | p99 ms | proxy CPU µs/req | CPU spread % | req/s vs " ref " | CPU vs " ref " |"
               print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" }
             printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v["target"], v["rps"], v["rps_spread_pct"],
                    v["p50_ms"], v["p99_ms"], v["proxy_cpu_us_per_req"], v["cpu_spread_pct"], rv, cv }' "$3"
    else
      echo "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy CPU util | steal % | errors |"
      echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
      awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
             printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", v["target"], v["rps"], v["p50_ms"], v["p99_ms"],
                    v["proxy_cpu_us_per_req"], v["proxy_cpu_util"], v["steal_pct"], v["errors"] }' "$2"
    fi
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
[[ $# -ge 1 ]] || die "usage: run.sh [--record] direct|nginx|haproxy|switchyard|switchyard-ratelimit|custom:HOST:PORT | compare T1 T2 ..."
if [[ $1 == compare ]]; then
  [[ $# -ge 2 ]] || die "compare needs targets"
  TARGETS=("${@:2}")
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
: > "$SCRATCH/results"; : > "$SCRATCH/medians"
if [[ $1 == compare ]]; then
  for _ in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do measure "$t"; tee -a "$SCRATCH/results" < "$SCRATCH/line"; done
  done
  summarize "$SCRATCH/results" "${TARGETS[@]}" | tee "$SCRATCH/medians"
else
  measure "$1"; tee "$SCRATCH/results" < "$SCRATCH/line"
fi
[[ -n $RESULTS ]] && record "$SCRATCH/header" "$SCRATCH/results" "$SCRATCH/medians"
exit 0
