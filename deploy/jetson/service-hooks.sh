#!/usr/bin/env bash
# Hooks for clipinspect.service.
#   prestart : back off after failed runs, then build the engine when the bundle lacks one
#   poststop : record whether the run that just ended failed (systemd sets SERVICE_RESULT)
set -euo pipefail

STATE_DIR="${CLIPINSPECT_STATE_DIR:-/run/clipinspect}"
ROOT="${CLIPINSPECT_ROOT:-/opt/clipinspect}"
BUNDLE="${CLIPINSPECT_BUNDLE:-$ROOT/current}"
BACKEND="${CLIPINSPECT_BACKEND:-trt}"
PRECISION="${CLIPINSPECT_PRECISION:-fp16}"
PY="${CLIPINSPECT_PYTHON:-$ROOT/venv/bin/python}"
CLI="${CLIPINSPECT_CLI:-$ROOT/venv/bin/clipinspect}"
MAX_DELAY="${CLIPINSPECT_MAX_BACKOFF_S:-120}"
failures_file="$STATE_DIR/failures"

backoff_seconds() {  # 0 after a clean run, then 2, 4, 8 ... capped at MAX_DELAY
  local n=$1 d=0
  if [ "$n" -gt 0 ]; then
    d=$((1 << (n < 8 ? n : 8)))
    [ "$d" -le "$MAX_DELAY" ] || d=$MAX_DELAY
  fi
  echo "$d"
}

engine_present() {
  "$PY" - "$BUNDLE" "$PRECISION" <<'PYCODE'
import sys
from edge_runtime.bundle import load_bundle
b = load_bundle(sys.argv[1], verify=False)
sys.exit(0 if any(e.precision == sys.argv[2] for e in b.manifest.engines) else 1)
PYCODE
}

case "${1:-}" in
  prestart)
    mkdir -p "$STATE_DIR"
    n=$(cat "$failures_file" 2>/dev/null || echo 0)
    delay=$(backoff_seconds "$n")
    if [ "$delay" -gt 0 ]; then
      echo "clipinspect: $n failed run(s) in a row, waiting ${delay}s before starting" >&2
      sleep "$delay"
    fi
    if [ "$BACKEND" = trt ] && ! engine_present; then
      echo "clipinspect: no $PRECISION engine in $BUNDLE, building it on this device" >&2
      "$CLI" build-engine --bundle "$BUNDLE" --precision "$PRECISION"
    fi
    ;;
  poststop)
    mkdir -p "$STATE_DIR"
    if [ "${SERVICE_RESULT:-success}" = success ]; then
      echo 0 > "$failures_file"
    else
      n=$(cat "$failures_file" 2>/dev/null || echo 0)
      echo $((n + 1)) > "$failures_file"
    fi
    ;;
  backoff)  # for tests and operators: print the delay for N failures
    backoff_seconds "${2:?usage: service-hooks.sh backoff N}"
    ;;
  *)
    echo "usage: service-hooks.sh prestart|poststop|backoff N" >&2
    exit 2
    ;;
esac
