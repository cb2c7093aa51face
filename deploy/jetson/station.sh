#!/usr/bin/env bash
# The target-side steps of a bundle rollout, one implementation for deploy/jetson/rollout.sh
# (over ssh) and deploy/ansible/rollout.yml. Each step is idempotent where it can be and ends
# with exit 0, or exit 1/2 and one line on stderr.
#
#   station.sh [options] incoming VERSION        print ROOT/bundles/.incoming-VERSION (created)
#   station.sh [options] verify VERSION          hashes (+ signature) of the incoming copy
#   station.sh [options] build VERSION PRECISION engine for this device (fp16|int8)
#   station.sh [options] commit VERSION          incoming -> ROOT/bundles/VERSION; prints the previous target
#   station.sh --root ROOT switch VERSION        ROOT/current -> bundles/VERSION (root: sudoers rule)
#   station.sh [options] use VERSION             switch, through `sudo -n` when not root (also rollback)
#   station.sh [options] restart                 systemctl --no-block restart (sudo when not root)
#   station.sh [options] health VERSION          READY, no restart for --stable s, MQTT status
#   station.sh [options] prune KEEP PREVIOUS     drop old versions, never current nor PREVIOUS
#
# VERSION is a plain name (letters, digits, '.', '_', '-'); every path is built from ROOT.
set -euo pipefail

ROOT="/opt/clipinspect"
PY=""
CLI=""
UNIT="clipinspect"
HEALTH_TIMEOUT=120
STABLE_S=20
STATUS_BROKER=""
STATION=""
TRUSTED_KEYS=""  # empty: the runtime's own rule (/etc/clipinspect/trusted_keys once it holds a *.pub)

die() { echo "station: error: $*" >&2; exit 2; }
log() { echo "station: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?}"; shift 2 ;;
    --python) PY="${2:?}"; shift 2 ;;
    --cli) CLI="${2:?}"; shift 2 ;;
    --unit) UNIT="${2:?}"; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT="${2:?}"; shift 2 ;;
    --stable) STABLE_S="${2:?}"; shift 2 ;;
    --status-broker) STATUS_BROKER="${2:?}"; shift 2 ;;
    --station) STATION="${2:?}"; shift 2 ;;
    --trusted-keys) TRUSTED_KEYS="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || die "no step given (see --help)"
STEP="$1"; shift
PY="${PY:-$ROOT/venv/bin/python}"
CLI="${CLI:-$ROOT/venv/bin/clipinspect}"
for n in "$HEALTH_TIMEOUT" "$STABLE_S"; do
  case "$n" in ''|*[!0-9]*) die "--health-timeout and --stable take whole seconds" ;; esac
done

version_arg() {  # the one VERSION argument, checked: no '/', no leading '.' or '-'
  [ $# -ge 1 ] || die "$STEP needs a VERSION"
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "'$1' is not a bundle version name"
  printf '%s' "$1"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

show() { systemctl show -p "$1" --value "$UNIT"; }

incoming_of() { printf '%s/bundles/.incoming-%s' "$ROOT" "$1"; }

step_verify() {
  local v dir
  v=$(version_arg "$@"); dir=$(incoming_of "$v")
  [ -f "$dir/manifest.json" ] || die "$dir is not a bundle (no manifest.json)"
  # Hashes of every file against the manifest, and the signature against the station's
  # trusted keys (--trusted-keys, else /etc/clipinspect/trusted_keys once it holds a key).
  if ! "$PY" -m edge_runtime.bundle "$dir" ${TRUSTED_KEYS:+--trusted-keys "$TRUSTED_KEYS"} >&2; then
    rm -rf -- "$dir"
    die "bundle $v failed verification on the station; nothing was switched"
  fi
}

step_build() {
  local v dir
  v=$(version_arg "$@"); dir=$(incoming_of "$v")
  case "${2:-}" in fp16|int8) ;; *) die "build needs a precision: fp16 or int8" ;; esac
  if ! "$CLI" build-engine --bundle "$dir" --precision "$2" ${TRUSTED_KEYS:+--trusted-keys "$TRUSTED_KEYS"} >&2; then
    rm -rf -- "$dir"
    die "engine build for $v failed on the station; nothing was switched"
  fi
}

step_commit() {
  local v dir
  v=$(version_arg "$@"); dir=$(incoming_of "$v")
  [ -d "$dir" ] || die "no incoming copy of $v"
  rm -rf -- "${ROOT:?}/bundles/$v"
  mv -- "$dir" "$ROOT/bundles/$v"
  readlink "$ROOT/current" || true
}

step_switch() {
  local v target
  v=$(version_arg "$@")
  [ $# -eq 1 ] || die "switch takes exactly one VERSION"
  target="$ROOT/bundles/$v"
  if [ ! -d "$target" ] || [ -L "$target" ] || [ ! -f "$target/manifest.json" ]; then
    die "$target is not a committed bundle"
  fi
  # ln + mv -T renames over the old link: readers see either the old or the new target.
  ln -sfn "$target" "$ROOT/current.new"
  mv -T "$ROOT/current.new" "$ROOT/current"
  log "current -> $target"
}

step_use() {
  local v self
  v=$(version_arg "$@")
  if [ "$(id -u)" = 0 ]; then step_switch "$v"; return; fi
  # Exactly the command line of the sudoers rule written by setup.sh.
  self=$(readlink -f "$0")
  sudo -n "$self" --root "$ROOT" switch "$v" || die "switch to $v refused (is the sudoers rule from setup.sh installed for $self?)"
}

step_restart() {
  # systemd's InvocationID changes with every start: health waits for a new one, so the old
  # process still running during a queued restart is never taken for the new one.
  show InvocationID > "$ROOT/bundles/.invocation-before-restart" 2>/dev/null || true
  as_root systemctl --no-block restart "$UNIT"
}

step_health() {
  local v sha before state n0 n1 deadline
  v=$(version_arg "$@")
  sha=$(sha256sum "$ROOT/bundles/$v/manifest.json" | cut -d' ' -f1)
  before=$(cat "$ROOT/bundles/.invocation-before-restart" 2>/dev/null || true)
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  while :; do  # Type=notify: 'active' only after the runtime sent READY=1
    state=$(show ActiveState)
    if [ "$state" = active ] && [ "$(show InvocationID)" != "$before" ]; then break; fi
    [ "$state" != failed ] || { log "$UNIT failed before READY"; return 1; }
    [ $SECONDS -lt $deadline ] || { log "$UNIT not READY within ${HEALTH_TIMEOUT}s (state $state)"; return 1; }
    sleep 1
  done
  n0=$(show NRestarts)
  sleep "$STABLE_S"
  state=$(show ActiveState); n1=$(show NRestarts)
  if [ "$state" != active ] || [ "$n1" != "$n0" ]; then
    log "$UNIT restarted or stopped within ${STABLE_S}s (state $state, restarts $n0 -> $n1)"
    return 1
  fi
  if [ -z "$STATUS_BROKER" ]; then
    log "READY and stable for ${STABLE_S}s (no --status-broker: MQTT status not checked)"
    return 0
  fi
  "$CLI" fleet --broker "$STATUS_BROKER" --station "${STATION:?--station is needed with --status-broker}" \
    --expect-sha256 "$sha" --timeout "$HEALTH_TIMEOUT" >&2 || return 1
  log "READY, stable for ${STABLE_S}s, status online with bundle $sha"
}

step_prune() {
  local keep="${1:?prune KEEP PREVIOUS}" previous="${2:-}" current old
  case "$keep" in ''|*[!0-9]*) die "prune KEEP must be a number" ;; esac
  current=$(readlink "$ROOT/current" || true)
  find "$ROOT/bundles" -mindepth 1 -maxdepth 1 -type d -not -name '.*' -printf '%f\n' | sort -r \
    | tail -n +"$((keep + 1))" | while read -r old; do
      [ "$ROOT/bundles/$old" = "$current" ] || [ "$ROOT/bundles/$old" = "$previous" ] || rm -rf -- "${ROOT:?}/bundles/$old"
    done
}

case "$STEP" in
  incoming) d=$(incoming_of "$(version_arg "$@")"); mkdir -p "$d"; echo "$d" ;;
  verify) step_verify "$@" ;;
  build) step_build "$@" ;;
  commit) step_commit "$@" ;;
  switch) step_switch "$@" ;;
  use) step_use "$@" ;;
  restart) step_restart ;;
  health) step_health "$@" ;;
  prune) step_prune "$@" ;;
  *) die "unknown step '$STEP' (see --help)" ;;
esac
