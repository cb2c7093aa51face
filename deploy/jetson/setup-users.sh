#!/usr/bin/env bash
# Users and groups for setup.sh (sourced, not run). On the host: groupadd/useradd/usermod.
# Staged (--stage DIR): entries appended to DIR/etc/{passwd,group,shadow} with ids that are
# free there and on this host, so that the staged tree can be tried out with setpriv here.
#
#   clipinspect         system user, nologin, runs clipinspect.service (+ video, plugdev, flirimaging)
#   clipinspect-deploy  group of the accounts that roll bundles out (the ops user); owns
#                       ROOT/bundles and may, through sudoers, only switch ROOT/current and
#                       restart the service
# shellcheck shell=bash

free_id() {  # free_id LO HI -> the highest id in [LO, HI] unused by staged users/groups and the host
  local id
  for ((id = $2; id >= $1; id--)); do
    awk -F: -v i="$id" '$3 == i {found = 1} END {exit !found}' "$(P /etc/passwd)" "$(P /etc/group)" && continue
    getent passwd "$id" >/dev/null 2>&1 && continue
    getent group "$id" >/dev/null 2>&1 && continue
    echo "$id"; return 0
  done
  die "no free id in $1..$2 under $STAGE/etc"
}

staged_group() {  # staged_group NAME [MEMBER] [LO HI]
  local f gid
  f="$(P /etc/group)"
  if ! grep -q "^$1:" "$f"; then
    gid=$(free_id "${3:-900}" "${4:-999}")
    echo "$1:x:$gid:" >> "$f"
  fi
  [ -n "${2:-}" ] || return 0
  # Add MEMBER to the comma-separated list of NAME unless it is there already.
  awk -F: -v OFS=: -v g="$1" -v m="$2" '
    $1 == g { n = split($4, a, ","); for (i = 1; i <= n; i++) if (a[i] == m) { print; next }
              $4 = ($4 == "" ? m : $4 "," m) } { print }' "$f" > "$f.new"
  cat "$f.new" > "$f" && rm -f "$f.new"
}

staged_user() {  # staged_user NAME HOME SHELL LO HI: user + its own group with the same id
  local uid
  grep -q "^$1:" "$(P /etc/passwd)" && return 0
  uid=$(free_id "$4" "$5")
  echo "$1:x:$uid:" >> "$(P /etc/group)"
  echo "$1:x:$uid:$uid:$1:$2:$3" >> "$(P /etc/passwd)"
  echo "$1:!:::::::" >> "$(P /etc/shadow)"
}

staged_users() {
  install -d -m 0755 "$(P /etc)"
  [ -s "$(P /etc/passwd)" ] || echo "root:x:0:0:root:/root:/bin/bash" > "$(P /etc/passwd)"
  [ -s "$(P /etc/group)" ] || echo "root:x:0:" > "$(P /etc/group)"
  [ -e "$(P /etc/shadow)" ] || install -m 0600 /dev/null "$(P /etc/shadow)"
  chmod 0644 "$(P /etc/passwd)" "$(P /etc/group)"
  staged_user "$SVC_USER" "$ROOT" /usr/sbin/nologin 900 999
  staged_user "$OPS_USER" "/home/$OPS_USER" /bin/bash 1000 1999
  for g in video plugdev flirimaging; do staged_group "$g" "$SVC_USER"; done
  staged_group "$DEPLOY_GROUP" "$OPS_USER"
  say "staged users: $SVC_USER, $OPS_USER (in $DEPLOY_GROUP) in $(P /etc/passwd)"
}

create_users() {
  if [ -n "$STAGE" ]; then staged_users; return; fi
  getent group "$DEPLOY_GROUP" >/dev/null 2>&1 || run groupadd --system "$DEPLOY_GROUP"
  getent group flirimaging >/dev/null 2>&1 || run groupadd --system flirimaging
  if id "$SVC_USER" >/dev/null 2>&1; then
    say "user $SVC_USER exists"
  else
    run useradd --system --user-group --home-dir "$ROOT" --no-create-home --shell /usr/sbin/nologin "$SVC_USER"
  fi
  run usermod -a -G video,plugdev,flirimaging "$SVC_USER"
  if ! id "$OPS_USER" >/dev/null 2>&1; then
    [ "$DRY_RUN" = 1 ] || die "ops user '$OPS_USER' does not exist: create it (flash.md) or pass --ops-user NAME"
    say "warning: ops user '$OPS_USER' does not exist here"
  fi
  run usermod -a -G "$DEPLOY_GROUP" "$OPS_USER"
}
