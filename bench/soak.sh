#!/usr/bin/env bash
# Soak test: switchyard under steady mixed traffic while everything around it changes.
#
#   bench/soak.sh                     # 600 s
#   DURATION=120 RATE=300 bench/soak.sh
#
# Starts, all on 127.0.0.1 and ephemeral ports, and all stopped again on exit (by PID):
# its own redis-server (append-only file in a scratch folder, so a restart keeps the
# registry), four bench backends (bench/backend in --sink mode: a POST's answer is its body
# length), a heartbeating `switchyard node register --ttl --heartbeat`, and the release
# switchyard binary (target/release/switchyard; SWITCHYARD=PATH for another) with a
# round_robin pool of three static nodes, retries on another node, health probes and the
# Redis registry. bench/soak_client.py sends RATE requests/s (a POST_SHARE of them POSTs with
# 1 B-64 KiB bodies) for DURATION seconds while the script, at fixed fractions of DURATION:
#   - kills and restarts a static backend six times (SIGKILL: a crash, not a drain);
#   - stops (SIGTERM) and restarts Redis twice, 3 s down each time;
#   - registers and deregisters a fourth backend with `switchyard node register/deregister`;
#   - rewrites the config (strategy and weights) and reloads it with SIGHUP three times.
# Every 10 s it samples switchyard's resident memory (VmRSS) and open file descriptors.
#
# At the end it prints the totals: requests, errors (non-2xx, wrong body length, no answer),
# split into those inside a disruption window (from 1 s before a backend or Redis is
# stopped until 3 s after it is back) and those outside, RSS start/end/max and fds
# start/end. Exit status 1 when any error fell outside the windows or a reload failed.
#
# Needs: redis-server, python3, curl, cargo (builds bench/backend when missing; build
# switchyard first with `cargo build --release`). Knobs: DURATION=600 RATE=500
# POST_SHARE=0.2 THREADS=8 KEEP=1 (keep the scratch folder with logs and samples).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=lib.sh
source "$HERE/lib.sh"
: "${DURATION:=600}" "${RATE:=500}" "${POST_SHARE:=0.2}" "${THREADS:=8}" "${KEEP:=0}"
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"

SW=$(switchyard_bin)
[[ -x $SW ]] || { log "no $SW: run cargo build --release first"; exit 2; }
command -v redis-server >/dev/null || { log "redis-server not found: apt-get install redis-server"; exit 2; }
BACKEND=$(backend_bin)

WORK=$(mktemp -d /tmp/soak.XXXXXX)
PIDS=()          # everything started here, stopped on exit
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    [[ -n $pid ]] && alive "$pid" && stop_pid "$pid" 5
  done
  if [[ $KEEP == 1 ]]; then log "scratch folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Distinct free ports: bind them all at once, then release.
read -r RPORT PPORT APORT B1 B2 B3 B4 B5 < <(python3 -c '
import socket
s = [socket.socket() for _ in range(8)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
REDIS_URL=redis://127.0.0.1:$RPORT/0
EVENTS=$WORK/events.txt   # "start end what": disruption windows, unix seconds
: >"$EVENTS"
now() { date +%s.%N; }

REDIS_PID=""
start_redis() {
  redis-server --bind 127.0.0.1 --port "$RPORT" --save "" --appendonly yes \
    --appendfsync always --dir "$WORK" --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  local i
  for ((i = 0; i < 50; i++)); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "redis-server did not start"; return 1
}

declare -A BPID
start_backend() {   # $1 = port
  "$BACKEND" --port "$1" --sink >>"$WORK/backend-$1.log" 2>&1 &
  BPID[$1]=$!
  PIDS+=("${BPID[$1]}")
  local i
  for ((i = 0; i < 50; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
    sleep 0.1
  done
  log "backend on $1 did not start"; return 1
}

write_config() {    # $1 = strategy, $2 = weight of the first node
  cat >"$WORK/switchyard.yaml.new" <<EOF
listeners:
  - name: http
    bind: 127.0.0.1:$PPORT
admin:
  bind: 127.0.0.1:$APORT
routes:
  - pool: web
pools:
  web:
    strategy: $1
    nodes:
      - {addr: "127.0.0.1:$B1", weight: $2}
      - {addr: "127.0.0.1:$B2"}
      - {addr: "127.0.0.1:$B3"}
    health_check: {path: /healthz, interval: 1s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1}
    retries: {attempts: 2, on: [connect_failure, timeout, 502, 503, 504], budget_percent: 50}
    timeouts: {connect: 500ms, request: 10s}
redis:
  url: $REDIS_URL
  resync_interval: 5s
access_log: {format: off}
shutdown_timeout: 5s
EOF
  mv "$WORK/switchyard.yaml.new" "$WORK/switchyard.yaml"   # atomic: a reload never reads half
}

sample() {          # "unix_seconds rss_kib fds"
  local rss fds
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SW_PID/status" 2>/dev/null || echo 0)
  fds=$(find "/proc/$SW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$(date +%s) $rss $fds" >>"$WORK/samples.txt"
}

node_cli() { "$SW" node "$@" --redis "$REDIS_URL" >>"$WORK/node-cli.log" 2>&1; }

log "soak: ${DURATION}s at $RATE req/s (POST share $POST_SHARE); scratch $WORK"
start_redis
for p in "$B1" "$B2" "$B3" "$B4" "$B5"; do start_backend "$p"; done
write_config round_robin 1
"$SW" run -c "$WORK/switchyard.yaml" --log-format text 2>"$WORK/switchyard.log" &
SW_PID=$!
PIDS+=("$SW_PID")
for ((i = 0; i < 100; i++)); do
  curl -fsS -o /dev/null "http://127.0.0.1:$APORT/readyz" 2>/dev/null && break
  sleep 0.1
done
# Ready means listening; nodes take traffic after their first passed probe (a moment later).
ok=
for ((i = 0; i < 100; i++)); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PPORT/" 2>/dev/null && { ok=1; break; }
  sleep 0.1
done
[[ -n $ok ]] || { log "switchyard does not answer 200 within 10 s: see $WORK/switchyard.log"; KEEP=1; exit 1; }
# A node that heartbeats for the whole run (re-registers every ttl/3).
"$SW" node register --redis "$REDIS_URL" --pool web --addr "127.0.0.1:$B5" --ttl 15s \
  --heartbeat >>"$WORK/heartbeat.log" 2>&1 &
PIDS+=("$!")

sample
T0=$(date +%s)
python3 "$HERE/soak_client.py" --port "$PPORT" --rate "$RATE" --threads "$THREADS" \
  --duration "$DURATION" --post-share "$POST_SHARE" --out "$WORK/client.json" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")

# The plan: percent of DURATION → action.
PLAN=(
  "8 kill_backend $B1" "12 register" "17 reload least_conn 3" "22 kill_backend $B2"
  "30 redis_restart" "36 kill_backend $B3" "45 deregister" "50 reload round_robin 1"
  "55 kill_backend $B1" "60 register" "65 redis_restart" "72 kill_backend $B2"
  "80 reload least_conn 2" "85 kill_backend $B3" "90 deregister"
)
RELOADS=0 BACKEND_RESTARTS=0 REDIS_RESTARTS=0 REGISTERS=0 DEREGISTERS=0
next=0
last_sample=$T0
while alive "$CLIENT_PID"; do
  t=$(date +%s)
  if ((t - last_sample >= 10)); then sample; last_sample=$t; fi
  if ((next < ${#PLAN[@]})); then
    read -r pct action arg1 arg2 <<<"${PLAN[$next]}"
    if ((t - T0 >= DURATION * pct / 100)); then
      next=$((next + 1))
      case $action in
        kill_backend)
          s=$(now)
          kill -9 "${BPID[$arg1]}"; wait "${BPID[$arg1]}" 2>/dev/null || true
          sleep 1
          start_backend "$arg1"
          echo "$s $(now) backend_restart_$arg1" >>"$EVENTS"
          BACKEND_RESTARTS=$((BACKEND_RESTARTS + 1)) ;;
        redis_restart)
          s=$(now)
          stop_pid "$REDIS_PID" 5
          sleep 3
          start_redis
          echo "$s $(now) redis_restart" >>"$EVENTS"
          REDIS_RESTARTS=$((REDIS_RESTARTS + 1)) ;;
        register)
          node_cli register --pool web --addr "127.0.0.1:$B4" --weight 2
          REGISTERS=$((REGISTERS + 1)) ;;
        deregister)
          node_cli deregister --pool web --addr "127.0.0.1:$B4"
          DEREGISTERS=$((DEREGISTERS + 1)) ;;
        reload)
          write_config "$arg1" "$arg2"
          kill -HUP "$SW_PID"
          RELOADS=$((RELOADS + 1)) ;;
      esac
      log "soak: t=$((t - T0))s $action ${arg1:-}"
    fi
  fi
  sleep 0.2
done
wait "$CLIENT_PID" || true
sample
METRICS=$(curl -fsS "http://127.0.0.1:$APORT/metrics" || true)
reload_ok=$(awk '/^switchyard_config_reloads_total\{result="success"\}/ { print $2 }' <<<"$METRICS")
reload_err=$(awk '/^switchyard_config_reloads_total\{result="(error|failure)"\}/ { s += $2 } END { print s + 0 }' <<<"$METRICS")
retries=$(awk '/^switchyard_retries_total/ { s += $2 } END { print s + 0 }' <<<"$METRICS")

python3 - "$WORK/client.json" "$EVENTS" "$WORK/samples.txt" <<EOF
import json, sys
stats = json.load(open(sys.argv[1]))
windows = []
for line in open(sys.argv[2]):
    s, e, what = line.split()
    windows.append((float(s) - 1.0, float(e) + 3.0, what))
inside = [x for x in stats["errors"] if any(a <= x[0] <= b for a, b, _ in windows)]
outside = [x for x in stats["errors"] if not any(a <= x[0] <= b for a, b, _ in windows)]
samples = [tuple(map(int, l.split())) for l in open(sys.argv[3]) if l.strip()]
rss = [s[1] for s in samples]
fds = [s[2] for s in samples]
print(f"duration_s={stats['seconds']:.0f} rate_target=$RATE requests={stats['total']} ok={stats['ok']} "
      f"errors={len(stats['errors'])} errors_in_windows={len(inside)} errors_outside_windows={len(outside)}")
print("status_counts=" + ",".join(f"{k}:{v}" for k, v in sorted(stats["status"].items())))
print(f"rss_kib_start={rss[0]} rss_kib_end={rss[-1]} rss_kib_max={max(rss)} "
      f"fds_start={fds[0]} fds_end={fds[-1]} fds_max={max(fds)} samples={len(samples)}")
print("events: backend_restarts=$BACKEND_RESTARTS redis_restarts=$REDIS_RESTARTS "
      "registers=$REGISTERS deregisters=$DEREGISTERS reloads_sent=$RELOADS "
      "reloads_ok=${reload_ok:-0} reloads_failed=${reload_err:-0} retries=${retries:-0}")
for x in (inside + outside)[:20]:
    print("error:", x[1], x[2], "(inside a window)" if x in inside else "(OUTSIDE any window)")
sys.exit(1 if outside else 0)
EOF
status=$?
if [[ ${reload_ok:-0} -lt $RELOADS ]]; then
  log "soak: only ${reload_ok:-0} of $RELOADS reloads succeeded"; status=1
fi
exit $status
