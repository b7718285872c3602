#!/usr/bin/env bash
# Memory of the balancer while 1 GiB streams through it, each way (see README.md).
#   upload_memory.sh [--record] [TARGET]      TARGET = switchyard (default) | nginx | haproxy
# upload:   head -c SIZE /dev/zero | curl -T - (chunked; nothing touches the disk) -> proxy -> a
#           backend in --sink mode reading at SINK_MIB MiB/s, slower than the client, so a proxy
#           without backpressure would have to hold the difference;
# download: a backend in --source mode sends SIZE bytes -> proxy -> curl reading at CLIENT_MIB MiB/s
#           into /dev/null (the slow side is the client this time).
# Each transfer gets a fresh proxy. RSS (VmRSS, proxy process and its children) is read after a
# 1 MiB warm-up exchange (before), every 100 ms during the transfer (peak), as the kernel's
# high-water mark VmHWM reset just before the transfer (hwm, catches spikes between samples), and
# 1 s after (after). Exits 1 when a transfer fails or grows RSS by more than MAX_GROWTH_MIB.
# --record appends a dated section to bench/RESULTS.md (RESULTS=FILE: to FILE).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=./lib.sh
. "$HERE/lib.sh"
: "${SIZE:=1073741824}"      # bytes per transfer (1 GiB)
: "${SINK_MIB:=256}"         # upload: backend read rate, MiB/s (0 = unthrottled)
: "${CLIENT_MIB:=256}"       # download: curl read rate, MiB/s (0 = unthrottled)
: "${MAX_GROWTH_MIB:=8}"     # the requirement: RSS peak - before, per transfer
: "${WORKERS:=1}" "${PROXY_CPUS:=1}" "${LOAD_CPUS:=0}"
: "${BPORT:=18181}"          # sink backend on BPORT, source backend on BPORT+1
: "${PPORT:=18180}" "${APORT:=18199}"   # proxy, switchyard admin
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"
: "${RESULTS:=}"
KNOBS=(SIZE SINK_MIB CLIENT_MIB MAX_GROWTH_MIB WORKERS PROXY_CPUS LOAD_CPUS)
SCRATCH=$(mktemp -d /tmp/bench-mem.XXXXXX)
BACKEND_PIDS=() PROXY_PID="" SAMPLER_PID=""

die() { log "upload_memory.sh: $*"; exit 2; }

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" 5
  for p in "${BACKEND_PIDS[@]}"; do stop_pid "$p" 5; done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ${1:-} == --record ]]; then shift; [[ -n $RESULTS ]] || RESULTS=$HERE/RESULTS.md; fi
TARGET=${1:-switchyard}
SWITCHYARD_BIN=$(switchyard_bin)
case $TARGET in
  switchyard)    [[ -x $SWITCHYARD_BIN ]] || die "no $SWITCHYARD_BIN: run 'cargo build --release' (or bench/setup.sh)" ;;
  nginx|haproxy) command -v "$TARGET" >/dev/null || die "$TARGET not installed: run bench/setup.sh" ;;
  *)             die "usage: upload_memory.sh [--record] [switchyard|nginx|haproxy]" ;;
esac
for p in "$PPORT" "$APORT" "$BPORT" $((BPORT + 1)); do port_busy "$p" && die "port $p already in use"; done

wait_http() {   # $1 = URL; waits up to 10 s for a 200, gives up early if the proxy died
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf -o /dev/null "$1" && return 0
    if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then break; fi
    sleep 0.1
  done
  cat "$SCRATCH"/*.log >&2 2>/dev/null || true
  die "no HTTP 200 from $1"
}

write_config() {  # $1 = target, $2 = backend port -> the config file's path
  local node=127.0.0.1:$2
  case $1 in
    switchyard) cat > "$SCRATCH/switchyard.yaml" <<EOF
listeners:
  - name: mem
    bind: 127.0.0.1:$PPORT
admin:
  bind: 127.0.0.1:$APORT
routes:
  - pool: mem
pools:
  mem:
    strategy: round_robin
    nodes:
      - addr: $node
    timeouts:
      connect: 2s
      request: 10m             # up to the response headers, which the sink sends after the last byte
access_log:
  format: "off"
shutdown_timeout: 5s
workers: $WORKERS
EOF
      echo "$SCRATCH/switchyard.yaml" ;;
    nginx) cat > "$SCRATCH/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $SCRATCH/nginx.pid;
error_log $SCRATCH/proxy.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $SCRATCH/body;
    proxy_temp_path $SCRATCH/proxy_temp;
    server {
        listen 127.0.0.1:$PPORT;
        client_max_body_size 0;
        proxy_request_buffering off;   # stream the upload instead of spooling it to disk first
        proxy_buffering off;           # and the download without spooling either
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        location / {
            proxy_pass http://$node;
            proxy_http_version 1.1;
        }
    }
}
EOF
      echo "$SCRATCH/nginx.conf" ;;
    haproxy) cat > "$SCRATCH/haproxy.cfg" <<EOF
global
    maxconn 100
    pidfile $SCRATCH/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
frontend fe
    bind 127.0.0.1:$PPORT
    default_backend be
backend be
    server s1 $node
EOF
      echo "$SCRATCH/haproxy.cfg" ;;
  esac
}

start_proxy() {   # $1 = backend port; sets PROXY_PID
  local conf
  conf=$(write_config "$TARGET" "$1")
  case $TARGET in
    switchyard) taskset -c "$PROXY_CPUS" "$SWITCHYARD_BIN" run -c "$conf" --log-format text &>"$SCRATCH/proxy.log" & ;;
    nginx)      taskset -c "$PROXY_CPUS" nginx -e "$SCRATCH/nginx-early.log" -c "$conf" &>"$SCRATCH/nginx-out.log" & ;;
    haproxy)    taskset -c "$PROXY_CPUS" haproxy -db -f "$conf" &>"$SCRATCH/proxy.log" & ;;
  esac
  PROXY_PID=$!
}

proxy_pids() { echo "$PROXY_PID"; pgrep -P "$PROXY_PID" || true; }   # nginx: master + worker

rss_kib() {       # $1 = VmRSS or VmHWM: summed over the proxy's processes, in KiB
  local p k v _ t=0
  for p in $(proxy_pids); do
    while read -r k v _; do [[ $k == "$1:" ]] && t=$((t + v)); done < "/proc/$p/status"
  done
  echo "$t"
}

reset_hwm() {     # "5" in clear_refs resets VmHWM to the current RSS (Linux >= 4.0; needs ptrace rights)
  local p
  for p in $(proxy_pids); do echo 5 > "/proc/$p/clear_refs" || return 1; done 2>/dev/null
}

sampler() {       # VmRSS every 100 ms, one line each, until killed
  while alive "$PROXY_PID"; do rss_kib VmRSS; sleep 0.1; done
}

human() { awk -v n="$1" 'BEGIN { if (n % 1073741824 == 0) printf "%d GiB", n / 1073741824; else printf "%.1f MiB", n / 1048576 }'; }

transfer() {      # $1 = upload | download; prints one result line, returns 1 on failure or excess growth
  local dir=$1 url="http://127.0.0.1:$PPORT/$1" rate=() out code size secs ok=yes why=""
  if [[ $dir == upload ]]; then start_proxy "$BPORT"; else start_proxy $((BPORT + 1)); fi
  wait_http "$url?bytes=0"
  # warm-up: one small exchange the same way, so connection pools and buffers exist before "before"
  if [[ $dir == upload ]]; then
    head -c 1048576 /dev/zero | curl -sS -f -H 'Expect:' -T - -o /dev/null "$url" || die "warm-up upload failed"
  else
    curl -sS -f -o /dev/null "$url?bytes=1048576" || die "warm-up download failed"
  fi
  sleep 0.5
  local before hwm="na" hwm_ok=1 peak after=0
  before=$(rss_kib VmRSS)
  reset_hwm || { hwm_ok=0; log "warning: cannot reset VmHWM (/proc/PID/clear_refs): hwm not measured"; }
  sampler > "$SCRATCH/samples" & SAMPLER_PID=$!

  if [[ $dir == upload ]]; then
    out=$(head -c "$SIZE" /dev/zero | taskset -c "$LOAD_CPUS" curl -sS -H 'Expect:' -T - \
            -o "$SCRATCH/upload-answer" -w '%{http_code} %{size_upload} %{time_total}' "$url") || true
    read -r code size secs <<<"$out"
    [[ $code == 200 && $(cat "$SCRATCH/upload-answer" 2>/dev/null) == "$SIZE" ]] \
      || { ok=no; why="upload failed: HTTP ${code:-none}, backend got $(head -c 100 "$SCRATCH/upload-answer" 2>/dev/null) of $SIZE bytes"; }
  else
    [[ $CLIENT_MIB != 0 ]] && rate=(--limit-rate "${CLIENT_MIB}M")
    out=$(taskset -c "$LOAD_CPUS" curl -sS "${rate[@]}" -o /dev/null \
            -w '%{http_code} %{size_download} %{time_total}' "$url") || true
    read -r code size secs <<<"$out"
    [[ $code == 200 && $size == "$SIZE" ]] \
      || { ok=no; why="download failed: HTTP ${code:-none}, $size of $SIZE bytes"; }
  fi

  kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
  peak=$(sort -n "$SCRATCH/samples" | tail -1)
  peak=${peak:-$before}
  if alive "$PROXY_PID"; then
    [[ $hwm_ok == 1 ]] && hwm=$(rss_kib VmHWM)
    sleep 1
    after=$(rss_kib VmRSS)
  else
    ok=no; why+="${why:+; }the proxy died (its log follows)"
  fi
  stop_pid "$PROXY_PID" 10; PROXY_PID=""
  awk -v t="$TARGET" -v d="$dir" -v n="$SIZE" -v s="${secs:-0}" -v b="${before:-0}" -v p="${peak:-0}" \
      -v h="$hwm" -v a="$after" -v lim="$MAX_GROWTH_MIB" -v ok="$ok" -v ns="$(wc -l < "$SCRATCH/samples")" '
    BEGIN {
      top = (h != "na" && h > p) ? h : p; g = (top - b) / 1024
      if (ok == "yes" && g > lim) ok = "no"
      printf "target=%s transfer=%s bytes=%s secs=%.2f mib_per_s=%.0f samples=%d", t, d, n, s, (s > 0 ? n / 1048576 / s : 0), ns
      printf " rss_before_mib=%.1f rss_peak_mib=%.1f rss_hwm_mib=%s rss_after_mib=%.1f growth_mib=%.1f limit_mib=%s ok=%s\n",
             b / 1024, p / 1024, h == "na" ? "na" : sprintf("%.1f", h / 1024), a / 1024, g, lim, ok
      exit ok != "yes" }' | tee -a "$SCRATCH/results" && return 0
  [[ -n $why ]] && { log "upload_memory.sh: $why"; cat "$SCRATCH"/*.log >&2 2>/dev/null || true; }
  return 1
}

record() {
  {
    echo
    echo "### $(date -u +%FT%TZ) — memory: $TARGET, $(human "$SIZE") upload and download"
    echo
    echo "- command: \`$(knob_line "${KNOBS[@]}") bench/upload_memory.sh $TARGET\`"
    echo "- machine: $(machine_line)"
    echo "- tools: $(tools_line)"
    echo
    echo "| transfer | MiB/s | RSS before MiB | peak (100 ms samples) MiB | high-water MiB | 1 s after MiB | growth MiB | ok (transfer complete, growth ≤ ${MAX_GROWTH_MIB} MiB) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", v["transfer"], v["mib_per_s"], v["rss_before_mib"],
                  v["rss_peak_mib"], v["rss_hwm_mib"], v["rss_after_mib"], v["growth_mib"], v["ok"] }' "$SCRATCH/results"
  } >> "$RESULTS"
  log "# appended to $RESULTS"
}

echo "# $(date -u +%FT%TZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); target=$TARGET size=${SIZE}B sink_mib_per_s=$SINK_MIB client_mib_per_s=$CLIENT_MIB (0 = unthrottled) workers=$WORKERS proxy_cpus=$PROXY_CPUS load_cpus=$LOAD_CPUS limit=${MAX_GROWTH_MIB}MiB"
BIN=$(backend_bin)
taskset -c "$LOAD_CPUS" "$BIN" --port "$BPORT" --sink --rate-mib "$SINK_MIB" 2>"$SCRATCH/sink.log" & BACKEND_PIDS+=($!)
taskset -c "$LOAD_CPUS" "$BIN" --port $((BPORT + 1)) --source "$SIZE" 2>"$SCRATCH/source.log" & BACKEND_PIDS+=($!)
wait_http "http://127.0.0.1:$BPORT/"
wait_http "http://127.0.0.1:$((BPORT + 1))/?bytes=0"

: > "$SCRATCH/results"
status=0
transfer upload || status=1
transfer download || status=1
[[ -n $RESULTS ]] && record
exit "$status"
