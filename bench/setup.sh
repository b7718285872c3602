#!/usr/bin/env bash
# One-time setup for bench/run.sh and bench/upload_memory.sh (see bench/README.md):
#   1. Debian packages: nginx, haproxy, wrk, h2load, curl, ss, pgrep, taskset (skipped when present);
#   2. the bench backend (bench/backend, release) in $TARGET_DIR;
#   3. switchyard itself (cargo build --release in the repo root; BUILD_SWITCHYARD=0 skips it).
# Idempotent. Leaves no daemon running: if installing nginx/haproxy started them (Debian's
# packages do, where services may start), those new processes are stopped by PID.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
: "${TARGET_DIR:=${CARGO_TARGET_DIR:-$ROOT/target}/bench-backend}"   # same default as run.sh
: "${BUILD_SWITCHYARD:=1}"
PACKAGES=(nginx haproxy wrk nghttp2-client curl iproute2 procps util-linux)

step() { echo "==> $*"; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  before=$(pgrep -x 'nginx|haproxy' || true)       # daemons already running are not ours to stop
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for f in /run/nginx.pid /run/haproxy.pid; do
    [[ -s $f ]] || continue
    pid=$(<"$f")
    grep -qx "$pid" <<<"$before" && continue
    $SUDO kill "$pid" 2>/dev/null && echo "stopped the daemon the package started ($f, pid $pid)"
  done
else
  step "packages already installed: ${PACKAGES[*]}"
fi

step "build bench backend -> $TARGET_DIR/release/bench-backend"
CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --manifest-path "$HERE/backend/Cargo.toml"

if [[ $BUILD_SWITCHYARD == 1 ]]; then
  step "build switchyard (release)"
  (cd "$ROOT" && cargo build --release --bin switchyard)
else
  step "switchyard build skipped (BUILD_SWITCHYARD=0)"
fi
step "done"
