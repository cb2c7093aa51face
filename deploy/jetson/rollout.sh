#!/usr/bin/env bash
# The target-side snippets are single-quoted on purpose: they expand on the target, with the
# values passed as positional parameters.
# shellcheck disable=SC2016
# Roll a bundle out to a station: copy, verify hashes there, build the engine on the target,
# switch atomically (versioned folder + symlink), restart, health-check, roll back on failure.
#
#   deploy/jetson/rollout.sh --host clipinspect@station-7 --bundle ./bundle --precision fp16
#   deploy/jetson/rollout.sh --host local --root /tmp/station --bundle ./bundle --precision none \
#       --restart-cmd true --health-cmd 'test -f {current}/manifest.json'
#
# --host local runs every target-side step on this machine (used by the tests and for a
# station that pulls its own bundles).
set -euo pipefail

HOST=""
BUNDLE=""
ROOT="/opt/clipinspect"
PRECISION="fp16"
KEEP=3
SSH_OPTS=(-o BatchMode=yes -o ConnectTimeout=10)
PY="/opt/clipinspect/venv/bin/python"
CLI="/opt/clipinspect/venv/bin/clipinspect"
RESTART_CMD="sudo systemctl restart clipinspect"
HEALTH_CMD="systemctl is-active --quiet clipinspect && {cli} doctor --bundle {current}"
HEALTH_TIMEOUT=60
HEALTH_INTERVAL=3
TRUSTED_KEYS=""  # empty: the target's /etc/clipinspect/trusted_keys when it holds *.pub keys

usage() {
  sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//'
  cat <<USAGE
options:
  --host H            ssh destination (user@host) or 'local'
  --bundle DIR        bundle folder made by 'clipinspect export' (+ calibrate)
  --root DIR          install root on the target (default $ROOT)
  --precision P       engine to build on the target: fp16 | int8 | none (ONNX Runtime only)
  --keep N            bundle versions kept on the target (default $KEEP)
  --python PATH       target python with clipinspect installed (default $PY)
  --cli PATH          target clipinspect executable (default $CLI)
  --restart-cmd CMD   how to restart the service (default: $RESTART_CMD)
  --health-cmd CMD    health check; {current} and {cli} are substituted (default: $HEALTH_CMD)
  --health-timeout S  seconds to wait for a healthy service (default $HEALTH_TIMEOUT)
  --trusted-keys DIR  folder of trusted public keys on the target; the bundle must be signed by one
                      (default: /etc/clipinspect/trusted_keys when it holds keys there, else unchecked)
USAGE
}

die() { echo "rollout: error: $*" >&2; exit 2; }
log() { echo "rollout: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST="${2:?}"; shift 2 ;;
    --bundle) BUNDLE="${2:?}"; shift 2 ;;
    --root) ROOT="${2:?}"; shift 2 ;;
    --precision) PRECISION="${2:?}"; shift 2 ;;
    --keep) KEEP="${2:?}"; shift 2 ;;
    --python) PY="${2:?}"; shift 2 ;;
    --cli) CLI="${2:?}"; shift 2 ;;
    --restart-cmd) RESTART_CMD="${2:?}"; shift 2 ;;
    --health-cmd) HEALTH_CMD="${2:?}"; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT="${2:?}"; shift 2 ;;
    --trusted-keys) TRUSTED_KEYS="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -n "$HOST" ] || die "--host is required"
[ -n "$BUNDLE" ] || die "--bundle is required"
[ -f "$BUNDLE/manifest.json" ] || die "$BUNDLE is not a bundle (no manifest.json)"
case "$PRECISION" in fp16|int8|none) ;; *) die "--precision must be fp16, int8 or none" ;; esac
case "$KEEP" in ''|*[!0-9]*) die "--keep must be a number" ;; esac
[ "$KEEP" -ge 2 ] || die "--keep must be at least 2 so that a rollback target exists"

# Run a shell snippet on the target. Arguments are passed as positional parameters so that
# paths are never re-parsed by the remote shell.
on_target() {
  local script="$1"; shift
  if [ "$HOST" = local ]; then
    bash -c "$script" rollout "$@"
  else
    local quoted=""
    local a
    for a in "$@"; do quoted+=" $(printf '%q' "$a")"; done
    # shellcheck disable=SC2029  # the script is meant to expand on the target
    ssh "${SSH_OPTS[@]}" "$HOST" "bash -c $(printf '%q' "$script") rollout$quoted"
  fi
}

copy_to_target() {
  local src="$1" dest="$2"
  if [ "$HOST" = local ]; then
    rsync -a --delete "$src/" "$dest/"
  else
    rsync -a --delete -e "ssh ${SSH_OPTS[*]}" "$src/" "$HOST:$dest/"
  fi
}

subst() {  # {current} and {cli} placeholders in user-given commands
  local s="$1"
  s="${s//\{current\}/$ROOT/current}"
  s="${s//\{cli\}/$CLI}"
  printf '%s' "$s"
}

# A version name the operator can read: short manifest hash + UTC time.
manifest_hash=$(sha256sum "$BUNDLE/manifest.json" | cut -c1-12)
version="$(date -u +%Y%m%dT%H%M%S.%NZ)-$manifest_hash"  # fixed width: sorts by time
target_dir="$ROOT/bundles/$version"
incoming="$ROOT/bundles/.incoming-$version"

log "copying $BUNDLE to $HOST:$target_dir"
on_target 'mkdir -p "$1/bundles"' "$ROOT"
copy_to_target "$BUNDLE" "$incoming"

log "verifying hashes (and the signature, when the target trusts keys) on the target"
if ! on_target '
  keys="$3"
  if [ -z "$keys" ] && compgen -G "/etc/clipinspect/trusted_keys/*.pub" >/dev/null; then keys=/etc/clipinspect/trusted_keys; fi
  "$1" -m edge_runtime.bundle "$2" ${keys:+--trusted-keys "$keys"}' "$PY" "$incoming" "$TRUSTED_KEYS"; then
  on_target 'rm -rf "$1"' "$incoming"
  die "bundle failed verification on the target; nothing was switched"
fi

if [ "$PRECISION" != none ]; then
  log "building the $PRECISION engine on the target (engines are not portable)"
  if ! on_target '"$1" build-engine --bundle "$2" --precision "$3" ${4:+--trusted-keys "$4"}' "$CLI" "$incoming" "$PRECISION" "$TRUSTED_KEYS"; then
    on_target 'rm -rf "$1"' "$incoming"
    die "engine build failed on the target; nothing was switched"
  fi
fi

on_target 'mv "$1" "$2"' "$incoming" "$target_dir"
previous=$(on_target 'readlink "$1/current" || true' "$ROOT")

switch_to() {
  # ln + mv -T renames over the old link: readers see either the old or the new target.
  on_target 'ln -sfn "$2" "$1/current.new" && mv -T "$1/current.new" "$1/current"' "$ROOT" "$1"
}

log "switching $ROOT/current -> $target_dir (previous: ${previous:-none})"
switch_to "$target_dir"

healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT))
  local cmd
  cmd=$(subst "$HEALTH_CMD")
  while :; do
    if on_target "$cmd"; then return 0; fi
    [ $SECONDS -lt $deadline ] || return 1
    sleep "$HEALTH_INTERVAL"
  done
}

restart_cmd=$(subst "$RESTART_CMD")
if on_target "$restart_cmd" && healthy; then
  log "healthy on $version"
  # Prune old versions, never the current or the previous one.
  on_target '
    cd "$1/bundles" || exit 0
    ls -1d -- */ 2>/dev/null | sed "s:/\$::" | sort -r | tail -n +"$(($2 + 1))" | while read -r old; do
      [ "$1/bundles/$old" = "$3" ] || [ "$1/bundles/$old" = "$4" ] || rm -rf -- "$old"
    done' "$ROOT" "$KEEP" "$target_dir" "$previous"
  echo "$version"
  exit 0
fi

log "health check failed on $version"
if [ -n "$previous" ]; then
  log "rolling back to $previous"
  switch_to "$previous"
  on_target "$restart_cmd" || log "restart after rollback failed too: check the station"
  exit 1
fi
log "no previous bundle to roll back to; $ROOT/current stays on the failed version"
exit 1
