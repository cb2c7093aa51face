#!/usr/bin/env bash
# Provision a Jetson Orin Nano (JetPack 6.x) as a clipinspect station. Idempotent: every step
# checks before it changes anything, so re-running after an update or a failure is safe.
#
#   sudo deploy/jetson/setup.sh --dry-run          # print what would be done, change nothing
#   sudo deploy/jetson/setup.sh --spinnaker ~/spinnaker-4.x-arm64  --benchmark-clocks
#
# What it does: apt packages; the 'clipinspect' user (video/plugdev/flirimaging groups);
# /opt/clipinspect/{src,venv,bundles}; a venv with --system-site-packages so that JetPack's
# tensorrt bindings are visible; onnxruntime-gpu for JetPack; pycuda built against CUDA;
# Spinnaker SDK + PySpin from a folder you downloaded from Teledyne FLIR; USB3 camera
# settings (usbfs_memory_mb=1000, udev rule); the systemd unit; optional nvpmodel/jetson_clocks.
set -euo pipefail

DRY_RUN=0
SRC_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT="/opt/clipinspect"
SVC_USER="clipinspect"
SPINNAKER_DIR=""
POWER_MODE=""
BENCH_CLOCKS=0
# onnxruntime-gpu wheels for JetPack 6 come from NVIDIA's Jetson AI Lab index, not PyPI.
ORT_INDEX="${ORT_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}"
USBFS_MB=1000

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; echo "options: --dry-run --root DIR --user NAME --spinnaker DIR --power-mode N --benchmark-clocks"; }
die() { echo "setup: error: $*" >&2; exit 2; }
say() { echo "setup: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --root) ROOT="${2:?}"; shift 2 ;;
    --user) SVC_USER="${2:?}"; shift 2 ;;
    --spinnaker) SPINNAKER_DIR="${2:?}"; shift 2 ;;
    --power-mode) POWER_MODE="${2:?}"; shift 2 ;;
    --benchmark-clocks) BENCH_CLOCKS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

run() {  # run a command, or print it in dry-run mode
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

write_file() {  # write_file PATH MODE <content on stdin>; only when the content changed
  local path="$1" mode="$2" tmp
  tmp=$(mktemp)
  cat > "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"; return 0
  fi
  if [ "$DRY_RUN" = 1 ]; then
    say "would write $path"; rm -f "$tmp"; return 0
  fi
  install -D -m "$mode" "$tmp" "$path"
  rm -f "$tmp"
}

check_platform() {
  if [ -r /etc/nv_tegra_release ]; then
    say "L4T: $(head -n1 /etc/nv_tegra_release)"
  else
    say "warning: /etc/nv_tegra_release not found: this does not look like a Jetson (continuing)"
  fi
  if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or use --dry-run"
  fi
}

install_apt() {
  local pkgs=(python3-venv python3-dev python3-pip build-essential libopencv-dev
    mosquitto-clients rsync libusb-1.0-0 jq)
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

create_user() {
  if id "$SVC_USER" >/dev/null 2>&1; then
    say "user $SVC_USER exists"
  else
    run useradd --system --home-dir "$ROOT" --shell /usr/sbin/nologin "$SVC_USER"
  fi
  getent group flirimaging >/dev/null 2>&1 || run groupadd --system flirimaging
  run usermod -a -G video,plugdev,flirimaging "$SVC_USER"
  run install -d -o "$SVC_USER" -g "$SVC_USER" -m 0755 "$ROOT" "$ROOT/bundles" /var/lib/clipinspect
  run install -d -m 0755 /etc/clipinspect
}

install_venv() {
  if [ ! -x "$ROOT/venv/bin/python" ]; then
    # --system-site-packages: JetPack installs tensorrt into the system python, not PyPI.
    run python3 -m venv --system-site-packages "$ROOT/venv"
  fi
  run rsync -a --delete --exclude .git --exclude .venv "$SRC_DIR/" "$ROOT/src/"
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

usb_camera_settings() {
  # USB3 Vision cameras need a large usbfs buffer; 16 MB (the kernel default) drops frames.
  write_file /etc/udev/rules.d/40-flir-spinnaker.rules 0644 <<'RULES'
SUBSYSTEM=="usb", ATTRS{idVendor}=="1e10", GROUP="flirimaging", MODE="0664"
RULES
  write_file /etc/systemd/system/usbfs-memory.service 0644 <<UNIT
[Unit]
Description=USB3 camera buffer size (usbfs_memory_mb=$USBFS_MB)
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo $USBFS_MB > /sys/module/usbcore/parameters/usbfs_memory_mb'
[Install]
WantedBy=multi-user.target
UNIT
  run systemctl daemon-reload
  run systemctl enable --now usbfs-memory.service
  run udevadm control --reload-rules
}

install_service() {
  write_file /etc/systemd/system/clipinspect.service 0644 < "$SRC_DIR/deploy/jetson/clipinspect.service"
  if [ ! -f /etc/clipinspect/config.yaml ]; then
    write_file /etc/clipinspect/config.yaml 0640 < "$SRC_DIR/deploy/jetson/config.example.yaml"
  fi
  if [ ! -f /etc/clipinspect/clipinspect.env ]; then
    write_file /etc/clipinspect/clipinspect.env 0600 <<'ENV'
# Secrets and switches for clipinspect.service (not in config.yaml so that it can be shared).
CLIPINSPECT_MQTT_PASSWORD=
CLIPINSPECT_BACKEND=trt
CLIPINSPECT_PRECISION=fp16
ENV
  fi
  run systemctl daemon-reload
  run systemctl enable clipinspect.service
  say "service installed; roll a bundle out with deploy/jetson/rollout.sh, then: systemctl start clipinspect"
}

power_settings() {
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
create_user
install_venv
install_spinnaker
usb_camera_settings
install_service
power_settings
if [ "$DRY_RUN" = 1 ]; then say "done (dry run: nothing was changed)"; else say "done"; fi
