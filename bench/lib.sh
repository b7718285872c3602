# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/upload_memory.sh (sourced, not run).
# Expects HERE (bench/) and ROOT (the repo) to be set by the caller.

log() { echo "$@" >&2; }

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
