#!/usr/bin/env bash
# Provision a Jetson Orin Nano (JetPack 6.x) as a clipinspect station. Idempotent: every step
# checks before it changes anything, so re-running after an update or a failure is safe.
#
#   sudo deploy/jetson/setup.sh --dry-run          # print what would be done, change nothing
#   sudo deploy/jetson/setup.sh --station line1-st7 --broker broker.plant.local --spinnaker ~/spinnaker-arm64
#   sudo deploy/jetson/setup.sh --stage /tmp/img   # every file-system step under /tmp/img, host untouched
#
# What it does: apt packages; the 'clipinspect' service user (video/plugdev/flirimaging), the
# 'clipinspect-deploy' group with the ops user in it and a sudoers rule that allows only the
# bundle switch and `systemctl restart clipinspect`; /opt/clipinspect/{src,venv,bundles};
# /etc/clipinspect/{config.yaml,clipinspect.env,tls/,trusted_keys/}; a venv with
# --system-site-packages (JetPack's tensorrt), onnxruntime-gpu, pycuda; Spinnaker + PySpin;
# USB3 camera settings; the systemd unit; optional nvpmodel/jetson_clocks.
set -euo pipefail

DRY_RUN=0
STAGE=""
SRC_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT="/opt/clipinspect"
SVC_USER="clipinspect"
DEPLOY_GROUP="clipinspect-deploy"
OPS_USER="ops"
STATION="$(hostname -s 2>/dev/null || echo station)"
BROKER="broker.plant.local"
MQTT_PLAIN=0
SPINNAKER_DIR=""
POWER_MODE=""
BENCH_CLOCKS=0
# onnxruntime-gpu wheels for JetPack 6 come from NVIDIA's Jetson AI Lab index, not PyPI.
ORT_INDEX="${ORT_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}"
USBFS_MB=1000

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  cat <<USAGE
options:
  --dry-run            print the steps, change nothing
  --stage DIR          like DESTDIR: write every file under DIR (users into DIR/etc/passwd and
                       DIR/etc/group, owners as their numeric ids); no apt, pip, systemctl, udevadm
  --root DIR           install prefix (default $ROOT)
  --user NAME          service user (default $SVC_USER)
  --ops-user NAME      the account rollouts log in as; joins $DEPLOY_GROUP (default $OPS_USER)
  --station NAME       station name: MQTT user and topic prefix clipinspect/NAME (default: host name)
  --broker HOST[:PORT] plant broker (default $BROKER, port 8883 with TLS, 1883 plain)
  --mqtt-plain         plaintext MQTT without TLS (only for a closed test network)
  --spinnaker DIR      unpacked Spinnaker arm64 SDK + spinnaker_python wheel
  --power-mode N       nvpmodel mode;  --benchmark-clocks  pin clocks (benchmarks only)
USAGE
}
die() { echo "setup: error: $*" >&2; exit 2; }
say() { echo "setup: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --stage) STAGE="${2:?}"; shift 2 ;;
    --root) ROOT="${2:?}"; shift 2 ;;
    --user) SVC_USER="${2:?}"; shift 2 ;;
    --ops-user) OPS_USER="${2:?}"; shift 2 ;;
    --station) STATION="${2:?}"; shift 2 ;;
    --broker) BROKER="${2:?}"; shift 2 ;;
    --mqtt-plain) MQTT_PLAIN=1; shift ;;
    --spinnaker) SPINNAKER_DIR="${2:?}"; shift 2 ;;
    --power-mode) POWER_MODE="${2:?}"; shift 2 ;;
    --benchmark-clocks) BENCH_CLOCKS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

name_ok() { [[ "$1" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; }
name_ok "$SVC_USER" || die "--user '$SVC_USER' is not a valid user name"
name_ok "$OPS_USER" || die "--ops-user '$OPS_USER' is not a valid user name"
[[ "$STATION" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--station '$STATION' may hold only letters, digits, '.', '_' and '-'"
[[ "$BROKER" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] || die "--broker '$BROKER' is not HOST or HOST:PORT"
case "$ROOT" in /*) ;; *) die "--root must be an absolute path" ;; esac
if [ -n "$STAGE" ]; then
  [ "$DRY_RUN" = 0 ] || die "--stage and --dry-run exclude each other"
  mkdir -p "$STAGE" && STAGE="$(cd "$STAGE" && pwd)"
  [ "$STAGE" != / ] || die "--stage / is the host; leave --stage out instead"
fi

P() { printf '%s%s' "$STAGE" "$1"; }  # a target path as seen from here

run() {  # run a command, or print it in dry-run mode
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

host_only() {  # a step that changes the running system (packages, services): never staged
  if [ -n "$STAGE" ]; then printf 'setup: staged, not run:'; printf ' %q' "$@"; printf '\n'; else run "$@"; fi
}

owner() {  # owner USER GROUP -> what chown needs: names on the host, numeric ids when staged
  if [ -z "$STAGE" ]; then echo "$1:$2"; return; fi
  local uid gid
  uid=$(awk -F: -v n="$1" '$1 == n {print $3}' "$(P /etc/passwd)")
  gid=$(awk -F: -v n="$2" '$1 == n {print $3}' "$(P /etc/group)")
  if [ -z "$uid" ] || [ -z "$gid" ]; then die "staged $1:$2 has no id in $(P /etc/passwd) / $(P /etc/group)"; fi
  echo "$uid:$gid"
}

write_file() {  # write_file PATH MODE USER GROUP <content on stdin>; only when something changed
  local path dest="$1" mode="$2" own tmp
  path="$(P "$dest")"
  tmp=$(mktemp)
  cat > "$tmp"
  if [ "$DRY_RUN" = 1 ]; then
    if ! { [ -f "$path" ] && cmp -s "$tmp" "$path"; }; then say "would write $dest ($3:$4 $mode)"; fi
    rm -f "$tmp"; return 0
  fi
  own=$(owner "$3" "$4")
  if ! { [ -f "$path" ] && cmp -s "$tmp" "$path"; }; then
    install -D -m "$mode" "$tmp" "$path"
  fi
  chown "$own" "$path" && chmod "$mode" "$path"
  rm -f "$tmp"
}

make_dir() {  # make_dir PATH MODE USER GROUP
  if [ "$DRY_RUN" = 1 ]; then say "would create $1/ ($3:$4 $2)"; return; fi
  local path
  path="$(P "$1")"
  mkdir -p "$path"
  chown "$(owner "$3" "$4")" "$path"
  chmod "$2" "$path"
}

check_platform() {
  if [ -r /etc/nv_tegra_release ]; then
    say "L4T: $(head -n1 /etc/nv_tegra_release)"
  elif [ -z "$STAGE" ]; then
    say "warning: /etc/nv_tegra_release not found: this does not look like a Jetson (continuing)"
  fi
  if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo): setting owners needs it (or use --dry-run)"
  fi
}

install_apt() {
  if [ -n "$STAGE" ]; then say "staged: apt packages not installed"; return; fi
  local pkgs=(python3-venv python3-dev python3-pip build-essential libopencv-dev
    mosquitto-clients rsync libusb-1.0-0 jq sudo)
  # JetPack's TensorRT Python bindings (nvidia-jetpack pulls them in; listed for a minimal L4T).
  pkgs+=(python3-libnvinfer python3-libnvinfer-dev)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "apt packages present"; return; fi
  run apt-get update
  run apt-get install -y --no-install-recommends "${missing[@]}"
}

# shellcheck source=deploy/jetson/setup-users.sh
. "$(dirname "$0")/setup-users.sh"
# shellcheck source=deploy/jetson/setup-files.sh
. "$(dirname "$0")/setup-files.sh"

install_venv() {
  run rsync -a --delete --chown=0:0 --exclude .git --exclude .venv --exclude __pycache__ \
    --exclude '*.egg-info' --exclude .pytest_cache "$SRC_DIR/" "$(P "$ROOT/src")/"
  if [ -n "$STAGE" ]; then say "staged: venv and pip installs are host steps, not staged"; return; fi
  if [ ! -x "$ROOT/venv/bin/python" ]; then
    # --system-site-packages: JetPack installs tensorrt into the system python, not PyPI.
    run python3 -m venv --system-site-packages "$ROOT/venv"
  fi
  run "$ROOT/venv/bin/pip" install --upgrade pip
  # onnxruntime-gpu (CUDA + TensorRT execution providers) built for JetPack 6.
  run "$ROOT/venv/bin/pip" install --extra-index-url "$ORT_INDEX" onnxruntime-gpu
  run "$ROOT/venv/bin/pip" install -e "$ROOT/src[edge]"
  # pycuda has no aarch64 wheel: build it against JetPack's CUDA.
  if ! "$ROOT/venv/bin/python" -c "import pycuda" >/dev/null 2>&1; then
    run env CUDA_ROOT=/usr/local/cuda PATH="/usr/local/cuda/bin:$PATH" "$ROOT/venv/bin/pip" install pycuda
  fi
  if [ "$DRY_RUN" = 0 ]; then
    "$ROOT/venv/bin/python" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" \
      || die "tensorrt is not importable from the venv: is nvidia-jetpack (python3-libnvinfer) installed?"
  fi
}

install_spinnaker() {
  if [ -z "$SPINNAKER_DIR" ]; then
    say "Spinnaker: skipped (pass --spinnaker DIR with the unpacked arm64 SDK and spinnaker_python wheel from Teledyne FLIR)"
    return
  fi
  [ -d "$SPINNAKER_DIR" ] || die "--spinnaker $SPINNAKER_DIR is not a folder"
  if [ -n "$STAGE" ]; then say "staged: Spinnaker SDK not installed"; return; fi
  if dpkg -s spinnaker >/dev/null 2>&1; then
    say "Spinnaker SDK present"
  else
    # FLIR's installer asks questions (udev rules, group, usbfs): answer them ourselves below.
    run bash -c "cd $(printf '%q' "$SPINNAKER_DIR") && yes | ./install_spinnaker_arm.sh"
  fi
  local wheel
  wheel=$(find "$SPINNAKER_DIR" -maxdepth 2 -name 'spinnaker_python-*-cp3*-linux_aarch64.whl' | head -n1)
  [ -n "$wheel" ] || die "no spinnaker_python aarch64 wheel under $SPINNAKER_DIR (it is a separate download)"
  run "$ROOT/venv/bin/pip" install "$wheel"
}

power_settings() {
  if [ -n "$STAGE" ]; then return; fi
  command -v nvpmodel >/dev/null 2>&1 || { say "nvpmodel not found: power settings skipped"; return; }
  if [ -n "$POWER_MODE" ]; then
    run nvpmodel -m "$POWER_MODE"
  fi
  say "power mode: $(nvpmodel -q 2>/dev/null | tr '\n' ' ')"
  if [ "$BENCH_CLOCKS" = 1 ]; then
    # Pins clocks to the maximum of the current mode: for benchmarks, not for the line.
    run jetson_clocks
  fi
}

check_platform
install_apt
create_users
make_layout
install_venv
install_spinnaker
usb_camera_settings
install_service
power_settings
if [ "$DRY_RUN" = 1 ]; then say "done (dry run: nothing was changed)"
elif [ -n "$STAGE" ]; then say "done (staged under $STAGE; the host was not changed)"
else say "done"; fi
