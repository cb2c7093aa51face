#!/usr/bin/env bash
# The target-side snippets are single-quoted on purpose: they expand on the target.
# shellcheck disable=SC2016
# Roll a bundle out to a station: copy, verify hashes there, build the engine on the target,
# switch atomically (versioned folder + symlink), restart, health-check, roll back on failure.
# Every target-side step is deploy/jetson/station.sh (the Ansible playbook runs the same).
#
#   deploy/jetson/rollout.sh --host ops@station-7 --bundle ./bundle --precision fp16 \
#       --status-broker mqtts://fleet@broker.plant.local/clipinspect --station station-7
#   deploy/jetson/rollout.sh --host local --root /tmp/station --bundle ./bundle --precision none \
#       --station-sh deploy/jetson/station.sh --restart-cmd true --health-cmd 'test -f {current}/manifest.json'
#
# The ssh user is the ops account in the station's clipinspect-deploy group (setup.sh): it
# writes ROOT/bundles itself and uses sudo only for `station.sh switch` and the restart.
# --host local runs every target-side step on this machine (tests, a station pulling its own).
set -euo pipefail

HOST=""
BUNDLE=""
ROOT="/opt/clipinspect"
PRECISION="fp16"
KEEP=3
SSH_OPTS=(-o BatchMode=yes -o ConnectTimeout=10)
PY=""
CLI=""
STATION_SH=""
RESTART_CMD=""
HEALTH_CMD=""
HEALTH_TIMEOUT=120
STABLE_S=20
STATUS_BROKER=""
STATION=""
TRUSTED_KEYS=""

usage() {
  sed -n '4,15p' "$0" | sed 's/^# \{0,1\}//'
  cat <<USAGE
options:
  --host H              ssh destination (ops@host) or 'local'
  --bundle DIR          bundle folder made by 'clipinspect export' (+ calibrate)
  --root DIR            install root on the target (default $ROOT)
  --precision P         engine to build on the target: fp16 | int8 | none (ONNX Runtime only)
  --keep N              bundle versions kept on the target (default $KEEP)
  --python PATH         target python (default ROOT/venv/bin/python)
  --cli PATH            target clipinspect (default ROOT/venv/bin/clipinspect)
  --station-sh PATH     target station.sh (default ROOT/src/deploy/jetson/station.sh)
  --health-timeout S    seconds to wait for READY (default $HEALTH_TIMEOUT)
  --stable S            seconds without a restart after READY (default $STABLE_S)
  --status-broker URI   also require the retained MQTT status online on the new bundle
                        (mqtt[s]://user@host/PREFIX; password in CLIPINSPECT_FLEET_PASSWORD on the target)
  --station NAME        the station's name under PREFIX (with --status-broker)
  --trusted-keys DIR    folder of trusted public keys on the target; the bundle must be signed by one
                        (default: /etc/clipinspect/trusted_keys once it holds a key, else unchecked)
  --restart-cmd CMD     stand-in for 'station.sh restart' (tests, stations without systemd)
  --health-cmd CMD      stand-in for 'station.sh health', retried until --health-timeout;
                        {current}, {cli} and {version} are substituted
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
    --station-sh) STATION_SH="${2:?}"; shift 2 ;;
    --restart-cmd) RESTART_CMD="${2:?}"; shift 2 ;;
    --health-cmd) HEALTH_CMD="${2:?}"; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT="${2:?}"; shift 2 ;;
    --stable) STABLE_S="${2:?}"; shift 2 ;;
    --status-broker) STATUS_BROKER="${2:?}"; shift 2 ;;
    --station) STATION="${2:?}"; shift 2 ;;
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
[ -z "$STATUS_BROKER" ] || [ -n "$STATION" ] || die "--status-broker needs --station NAME"
STATION_SH="${STATION_SH:-$ROOT/src/deploy/jetson/station.sh}"

# Run a command on the target. Arguments are quoted for the remote shell, never re-parsed.
on_target() {
  if [ "$HOST" = local ]; then
    "$@"
  else
    local quoted="" a
    for a in "$@"; do quoted+=" $(printf '%q' "$a")"; done
    # shellcheck disable=SC2029  # quoted above on purpose
    ssh "${SSH_OPTS[@]}" "$HOST" "$quoted"
  fi
}

station() {  # station.sh STEP ARGS... with this rollout's options
  local opts=(--root "$ROOT" --health-timeout "$HEALTH_TIMEOUT" --stable "$STABLE_S")
  [ -z "$PY" ] || opts+=(--python "$PY")
  [ -z "$CLI" ] || opts+=(--cli "$CLI")
  [ -z "$STATUS_BROKER" ] || opts+=(--status-broker "$STATUS_BROKER" --station "$STATION")
  [ -z "$TRUSTED_KEYS" ] || opts+=(--trusted-keys "$TRUSTED_KEYS")
  on_target "$STATION_SH" "${opts[@]}" "$@"
}

copy_to_target() {
  if [ "$HOST" = local ]; then
    rsync -a --delete --chmod=Dg+rwx,Fg+rw "$1/" "$2/"
  else
    rsync -a --delete --chmod=Dg+rwx,Fg+rw -e "ssh ${SSH_OPTS[*]}" "$1/" "$HOST:$2/"
  fi
}

with_placeholders() {
  local s="$1"
  s="${s//\{current\}/$ROOT/current}"; s="${s//\{cli\}/${CLI:-$ROOT/venv/bin/clipinspect}}"; s="${s//\{version\}/$2}"
  printf '%s' "$s"
}

restart() {
  if [ -n "$RESTART_CMD" ]; then on_target bash -c "$(with_placeholders "$RESTART_CMD" "$1")"; else station restart; fi
}

healthy() {
  [ -n "$HEALTH_CMD" ] || { station health "$1"; return; }
  local cmd deadline=$((SECONDS + HEALTH_TIMEOUT))
  cmd=$(with_placeholders "$HEALTH_CMD" "$1")
  until on_target bash -c "$cmd"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 3
  done
}

# A version name the operator can read: UTC time + short manifest hash (sorts by time).
version="$(date -u +%Y%m%dT%H%M%S.%NZ)-$(sha256sum "$BUNDLE/manifest.json" | cut -c1-12)"

# The first contact: an unknown host, refused key or missing group ends here in one line.
if ! incoming=$(station incoming "$version" 2>&1); then
  die "cannot create an incoming folder on $HOST: $(printf '%s' "$incoming" | tail -n1)"
fi
log "copying $BUNDLE to $HOST:$incoming"
copy_to_target "$BUNDLE" "$incoming"
log "verifying the bundle on the target"
station verify "$version" || exit 2
if [ "$PRECISION" != none ]; then
  log "building the $PRECISION engine on the target (engines are not portable)"
  station build "$version" "$PRECISION" || exit 2
fi
previous=$(station commit "$version")
log "switching $ROOT/current -> $version (previous: ${previous:-none})"
station use "$version" || exit 2

if restart "$version" && healthy "$version"; then
  log "healthy on $version"
  station prune "$KEEP" "$previous"
  echo "$version"
  exit 0
fi

log "health check failed on $version"
if [ -n "$previous" ]; then
  log "rolling back to $previous"
  station use "$(basename "$previous")" || log "switch back failed: check the station"
  restart "$(basename "$previous")" || log "restart after rollback failed too: check the station"
  exit 1
fi
log "no previous bundle to roll back to; $ROOT/current stays on the failed version"
exit 1
