#!/usr/bin/env bash
# Folders, config, secrets, sudoers rule and units for setup.sh (sourced, not run).
#
#   path                                  owner:group               mode  why
#   ROOT, ROOT/src, ROOT/venv             root:root                 0755  code: nobody else writes it
#   ROOT/bundles                          root:clipinspect-deploy   2775  rollouts write here; the service reads
#   ROOT/current -> bundles/<version>     root (via sudo switch)          one atomic rename
#   /var/lib/clipinspect                  clipinspect:clipinspect   0750  spool, heatmaps
#   /etc/clipinspect                      root:clipinspect          0755  ops reads trusted_keys/ for verification
#   /etc/clipinspect/config.yaml          root:clipinspect          0640  the service reads, cannot rewrite
#   /etc/clipinspect/clipinspect.env      root:root                 0600  secrets; systemd reads it as root
#   /etc/clipinspect/tls/                 root:clipinspect          0750  ca.crt, client cert/key (key 0640)
#   /etc/clipinspect/trusted_keys/        root:root                 0755  bundle signing public keys
#   /etc/sudoers.d/clipinspect-deploy     root:root                 0440  switch + restart only
# shellcheck shell=bash

make_layout() {
  make_dir "$ROOT" 0755 root root
  make_dir "$ROOT/src" 0755 root root
  make_dir "$ROOT/bundles" 2775 root "$DEPLOY_GROUP"
  make_dir /var/lib/clipinspect 0750 "$SVC_USER" "$SVC_USER"
  make_dir /etc/clipinspect 0755 root "$SVC_USER"
  make_dir /etc/clipinspect/tls 0750 root "$SVC_USER"
  make_dir /etc/clipinspect/trusted_keys 0755 root root
  make_dir /etc/sudoers.d 0750 root root
}

keep_file() {  # keep_file PATH MODE USER GROUP <content>: written once, then left to the operator
  if [ -f "$(P "$1")" ]; then
    [ "$DRY_RUN" = 1 ] && { cat > /dev/null; return 0; }
    cat > /dev/null
    chown "$(owner "$3" "$4")" "$(P "$1")" && chmod "$2" "$(P "$1")"
    say "$1 kept (owner and mode enforced)"
  else
    write_file "$@"
  fi
}

station_config() {  # config.example.yaml with this station's bundle link and broker
  local host="${BROKER%%:*}" port="${BROKER##*:}" scheme=mqtts
  [ "$port" != "$BROKER" ] || port=""
  if [ "$MQTT_PLAIN" = 1 ]; then scheme=mqtt; port="${port:-1883}"; else port="${port:-8883}"; fi
  local uri="$scheme://$STATION@$host:$port/clipinspect/$STATION"
  sed -e "s#^  path: /opt/clipinspect/current .*#  path: $ROOT/current      \# the symlink rollout.sh switches atomically#" \
      -e "s#^  uri: \"mqtt://inspector@.*#  uri: \"$uri\"   \# setup.sh; password: CLIPINSPECT_MQTT_PASSWORD in clipinspect.env#" \
      "$SRC_DIR/deploy/jetson/config.example.yaml" > "$1"
  if [ "$MQTT_PLAIN" = 0 ]; then
    sed -i "s#^      ca_file: null .*#      ca_file: /etc/clipinspect/tls/ca.crt   \# the plant CA (setup.sh)#" "$1"
    grep -q "ca_file: /etc/clipinspect/tls/ca.crt" "$1" || die "config.example.yaml changed: no tls ca_file line to set"
  fi
  grep -q "uri: \"$uri\"" "$1" || die "config.example.yaml changed: no publish uri line to set"
  grep -q "path: $ROOT/current" "$1" || die "config.example.yaml changed: no bundle path line to set"
}

sudoers_rule() {
  cat <<SUDOERS
# clipinspect rollouts (written by deploy/jetson/setup.sh). Members of $DEPLOY_GROUP copy
# bundles into $ROOT/bundles themselves (group-writable); as root they may only point
# $ROOT/current at one of them (station.sh checks the name) and restart the service.
Cmnd_Alias CLIPINSPECT_SWITCH = $ROOT/src/deploy/jetson/station.sh --root $ROOT switch *
Cmnd_Alias CLIPINSPECT_RESTART = /usr/bin/systemctl --no-block restart clipinspect, /bin/systemctl --no-block restart clipinspect
%$DEPLOY_GROUP ALL=(root) NOPASSWD: CLIPINSPECT_SWITCH, CLIPINSPECT_RESTART
SUDOERS
}

usb_camera_settings() {
  # USB3 Vision cameras need a large usbfs buffer; 16 MB (the kernel default) drops frames.
  write_file /etc/udev/rules.d/40-flir-spinnaker.rules 0644 root root <<'RULES'
SUBSYSTEM=="usb", ATTRS{idVendor}=="1e10", GROUP="flirimaging", MODE="0664"
RULES
  write_file /etc/systemd/system/usbfs-memory.service 0644 root root <<UNIT
[Unit]
Description=USB3 camera buffer size (usbfs_memory_mb=$USBFS_MB)
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo $USBFS_MB > /sys/module/usbcore/parameters/usbfs_memory_mb'
[Install]
WantedBy=multi-user.target
UNIT
  host_only systemctl daemon-reload
  host_only systemctl enable --now usbfs-memory.service
  host_only udevadm control --reload-rules
}

install_service() {
  local tmp
  tmp=$(mktemp)
  sed "s#/opt/clipinspect#$ROOT#g" "$SRC_DIR/deploy/jetson/clipinspect.service" \
    | write_file /etc/systemd/system/clipinspect.service 0644 root root
  station_config "$tmp"
  keep_file /etc/clipinspect/config.yaml 0640 root "$SVC_USER" < "$tmp"
  rm -f "$tmp"
  keep_file /etc/clipinspect/clipinspect.env 0600 root root <<'ENV'
# Secrets and switches for clipinspect.service; systemd reads this file as root.
CLIPINSPECT_MQTT_PASSWORD=
CLIPINSPECT_BACKEND=trt
CLIPINSPECT_PRECISION=fp16
# Watchdog: seconds a stage with work may make no progress before the pings stop (default:
# WatchdogSec of the unit).
#CLIPINSPECT_STALL_S=30
ENV
  sudoers_rule | write_file /etc/sudoers.d/clipinspect-deploy 0440 root root
  if [ -z "$STAGE" ] && [ "$DRY_RUN" = 0 ] && command -v visudo >/dev/null 2>&1; then
    visudo -cf /etc/sudoers.d/clipinspect-deploy >/dev/null || die "sudoers rule failed visudo -c"
  fi
  host_only systemctl daemon-reload
  host_only systemctl enable clipinspect.service
  [ "$MQTT_PLAIN" = 1 ] || say "MQTT over TLS: put the plant CA at /etc/clipinspect/tls/ca.crt and the password in /etc/clipinspect/clipinspect.env"
  say "service installed; roll a bundle out with deploy/jetson/rollout.sh (it restarts the service)"
}
