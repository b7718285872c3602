# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts (sourced, not run).
# Expects HERE (bench/) and ROOT (the repo) to be set by the caller; the run/compare helpers
# further down also use the caller's knobs (WORKERS, PROXY_CPUS, ..., SCRATCH, TICK).

log() { echo "$@" >&2; }

die() { log "$(basename "$0"): $*"; exit 2; }

port_busy() { [[ -n $(ss -Hltn "sport = :$1") ]]; }

alive() {       # is PID $1 running? (a zombie child that was not waited for yet counts as gone)
  local s
  s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ ${s%% *} != Z ]]
}

stop_pid() {    # SIGTERM PID $1, SIGKILL after ${2:-10} s; reaps it when it is our child
  local pid=$1 i
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < ${2:-10} * 10; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "warning: pid $pid ignored SIGTERM for ${2:-10} s, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

switchyard_bin() {  # where `cargo build --release` puts the binary (SWITCHYARD=PATH overrides)
  echo "${SWITCHYARD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard}"
}

# A switchyard target may name its binary: `switchyard@/path/to/bin` (also
# `switchyard-ratelimit@PATH` in run.sh), so that two builds compare in one interleaved run.
# Without `@PATH` the target runs switchyard_bin.
target_kind() { echo "${1%%@*}"; }  # switchyard@/x/y -> switchyard
target_bin() {                      # switchyard@/x/y -> /x/y; switchyard -> switchyard_bin
  if [[ $1 == *@* ]]; then echo "${1#*@}"; else switchyard_bin; fi
}
check_switchyard() {  # fail before any run starts when switchyard target $1 cannot run
  local bin; bin=$(target_bin "$1")
  if [[ $1 == *@* ]]; then [[ -x $bin ]] || die "$1: no executable $bin"
  else [[ -x $bin ]] || die "no $bin: run 'cargo build --release' (or bench/setup.sh), or name one: SWITCHYARD=PATH or switchyard@PATH"
  fi
  if port_busy "$APORT"; then die "admin port $APORT already in use (APORT=...)"; fi
}
binaries_line() {   # "switchyard@P: sha256 0123abcd4567, ..." for the targets that name a binary
  local t out=""
  for t in "$@"; do
    [[ $t == *@* ]] || continue
    out+="${out:+, }\`$t\`: $($(target_bin "$t") --version 2>/dev/null | head -1), sha256 $(sha256sum "$(target_bin "$t")" | cut -c1-12)"
  done
  echo "$out"
}

backend_bin() {     # builds bench/backend if needed (own target dir, see backend/Cargo.toml)
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q --manifest-path "$HERE/backend/Cargo.toml" >&2
  echo "$TARGET_DIR/release/bench-backend"
}

machine_line() {    # for RESULTS.md: cores, CPU model, RAM, kernel
  local model
  model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  echo "$(nproc) CPUs (${model:-unknown model}), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM," \
       "kernel $(uname -r)"
}

switchyard_rev() {  # git revision of the code under test, +dirty when src/ etc. have local changes
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || rev="no-commit"
  [[ -n $(git -C "$ROOT" status --porcelain -- src strategies Cargo.toml Cargo.lock 2>/dev/null) ]] && rev+="+dirty"
  echo "$rev"
}

tools_line() {      # versions of whatever is installed among the tools the benchmarks use
  local v=()
  command -v nginx >/dev/null && v+=("$(nginx -v 2>&1 | sed 's|.*nginx/|nginx |')")
  command -v haproxy >/dev/null && v+=("$(haproxy -v 2>/dev/null | awk 'NR == 1 { print "HAProxy", $3 }')")
  command -v wrk >/dev/null && v+=("$(wrk -v 2>&1 | awk 'NR == 1 { print "wrk", $2 }')")
  command -v h2load >/dev/null && v+=("$(h2load --version 2>/dev/null | awk 'NR == 1 { print "h2load", $2 }')")
  command -v curl >/dev/null && v+=("$(curl --version | awk 'NR == 1 { print "curl", $2 }')")
  v+=("$(rustc --version 2>/dev/null | awk '{ print "rustc", $2 }')")
  v+=("switchyard $(switchyard_rev)")
  local out="" t
  for t in "${v[@]}"; do out+="${out:+, }$t"; done
  echo "$out"
}

knob_line() {       # "K=V K=V ..." for the named environment knobs, to repeat a command exactly
  local k out=()
  for k in "$@"; do out+=("$k=${!k}"); done
  echo "${out[*]}"
}

# --- run and compare: used by run.sh and grpc.sh -----------------------------------------------

listen_pids() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }

steal() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }  # steal, total ticks

cpu_ticks() {   # utime+stime (clock ticks, all threads) of the given PIDs and their children (nginx workers)
  local t=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

render_conf() { # TEMPLATE OUT: fill a conf/*.in template; a caller's CONF_SED array adds sed arguments
  sed -e "s|@WORKERS@|$WORKERS|g; s|@SCRATCH@|$SCRATCH|g; s|@PPORT@|$PPORT|g; s|@APORT@|$APORT|g" \
      -e "s|@B1@|$BPORT|g; s|@B2@|$((BPORT + 1))|g; s|@B3@|$((BPORT + 2))|g" \
      ${CONF_SED[@]+"${CONF_SED[@]}"} "$1" > "$2"
}

# shellcheck disable=SC2094  # nginx -e and nginx's stderr share one log, on purpose
spawn_proxy() { # TARGET TEMPLATE [EXTRA]: render TEMPLATE and start nginx|haproxy|switchyard[@PATH]
                # in the foreground pinned to PROXY_CPUS, log in $SCRATCH/proxy.log; sets PROXY_PID.
                # EXTRA (switchyard): a YAML file appended to the config. The caller waits for it.
  local conf
  port_busy "$PPORT" && die "port $PPORT already in use"
  case $1 in
    nginx)   conf=$SCRATCH/nginx.conf; render_conf "$2" "$conf"
             taskset -c "$PROXY_CPUS" nginx -e "$SCRATCH/proxy.log" -c "$conf" &>>"$SCRATCH/proxy.log" & ;;
    haproxy) conf=$SCRATCH/haproxy.cfg; render_conf "$2" "$conf"
             taskset -c "$PROXY_CPUS" haproxy -db -f "$conf" &>"$SCRATCH/proxy.log" & ;;
    switchyard*)
             conf=$SCRATCH/switchyard.yaml; render_conf "$2" "$conf"
             if [[ -n ${3:-} ]]; then cat "$3" >> "$conf"; fi
             taskset -c "$PROXY_CPUS" "$(target_bin "$1")" run -c "$conf" --log-format text &>"$SCRATCH/proxy.log" & ;;
    *)       die "spawn_proxy: unknown proxy $1" ;;
  esac
  PROXY_PID=$!
}
stop_proxy() { stop_pid "$PROXY_PID" 10; PROXY_PID=""; }

spawn_backend() { # FLAGS...: bench/backend on BPORT..BPORT+2 (BACKEND_THREADS threads) pinned to LOAD_CPUS; sets BACKEND_PID
  local bin p
  bin=$(backend_bin)
  for p in 0 1 2; do port_busy $((BPORT + p)) && die "port $((BPORT + p)) already in use"; done
  taskset -c "$LOAD_CPUS" "$bin" --port "$BPORT" --count 3 --workers "$BACKEND_THREADS" "$@" \
    2>"$SCRATCH/backend.log" &
  # shellcheck disable=SC2034  # the caller's variable (its cleanup stops it)
  BACKEND_PID=$!
}

result_line() { # TARGET REQUESTS PROXY_TICKS BACKEND_TICKS "STEAL0 TOTAL0 STEAL1 TOTAL1" RPS MEAN_MS P50_MS P99_MS ERRORS
                # -> one `target=... rps=... proxy_cpu_us_per_req=...` line. PROXY_TICKS "" = not measured;
                # MEAN/P50/P99 "na" = not known.
  awk -v t="$1" -v n="$2" -v pc="$3" -v bc="$4" -v st="$5" -v rps="$6" -v mean="$7" -v p50="$8" -v p99="$9" \
      -v err="${10}" -v w="$WORKERS" -v hz="$TICK" -v d="$DURATION" '
    function f(v) { return v == "na" ? v : sprintf("%.3f", v) }
    BEGIN {
      split(st, s, " "); stl = (s[4] > s[2]) ? 100 * (s[3] - s[1]) / (s[4] - s[2]) : 0
      cpu = (pc != "" && n) ? sprintf("%.2f", pc / hz * 1e6 / n) : "na"
      util = pc != "" ? sprintf("%.2f", pc / hz / d) : "na"
      printf "target=%s workers=%s rps=%.0f mean_ms=%s p50_ms=%s p99_ms=%s", t, w, rps, f(mean), f(p50), f(p99)
      printf " proxy_cpu_us_per_req=%s proxy_cpu_util=%s backend_cpu_us_per_req=%.2f steal_pct=%.1f errors=%d\n",
             cpu, util, n ? bc / hz * 1e6 / n : 0, stl, err
    }'
}

measure_run() { # FUNC TARGET: FUNC TARGET into $SCRATCH/line; redo it (twice at most) while steal_pct > MAX_STEAL
  for _ in 1 2 3; do
    "$1" "$2" > "$SCRATCH/line"
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

record_results() { # TITLE HEADER RESULTS MEDIANS: append a dated section to $RESULTS (uses KNOBS, ARGS, LOAD0)
  local title=$1 cmd bins
  shift
  cmd="$(knob_line "${KNOBS[@]}") bench/$(basename "$0") ${ARGS[*]}"
  bins=$(binaries_line "${ARGS[@]}")
  {
    echo
    echo "### $(date -u +%FT%TZ) — $title: ${ARGS[*]}"
    echo
    echo "- command: \`$cmd\`"
    echo "- machine: $(machine_line); load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- tools: $(tools_line)"
    if [[ -n $bins ]]; then echo "- switchyard binaries: $bins"; fi
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

run_targets() { # FUNC T1 T2 ...: one run per target, or ($COMPARE=1) $ROUNDS interleaved rounds + medians,
                # into $SCRATCH/results and $SCRATCH/medians (and stdout)
  local fn=$1 t; shift
  : > "$SCRATCH/results"; : > "$SCRATCH/medians"
  if [[ $COMPARE == 1 ]]; then
    for _ in $(seq "$ROUNDS"); do
      for t in "$@"; do measure_run "$fn" "$t"; tee -a "$SCRATCH/results" < "$SCRATCH/line"; done
    done
    summarize "$SCRATCH/results" "$@" | tee "$SCRATCH/medians"
  else
    measure_run "$fn" "$1"; tee "$SCRATCH/results" < "$SCRATCH/line"
  fi
}
