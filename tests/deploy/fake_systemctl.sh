#!/usr/bin/env bash
# A stand-in for the two systemctl calls station.sh makes, for machines without systemd as
# PID 1 (CI containers). State lives in $FAKE_SYSTEMD_DIR; $FAKE_SYSTEMD_DIR/scenario picks
# how the next start goes:
#   ok          the old instance keeps running 1 s (a queued restart), then 'activating'
#               under a new InvocationID, then 'active' (READY=1) 1 s later
#   never_ready stays 'activating' (READY never sent)
#   crash       becomes 'active', then crashes and is restarted by Restart=on-failure (NRestarts+1)
set -euo pipefail
d="${FAKE_SYSTEMD_DIR:?}"
get() { cat "$d/$1" 2>/dev/null || echo "${2:-}"; }
case "$*" in
  "show -p "*" --value "*)
    get "$3" "$( [ "$3" = NRestarts ] && echo 0 || echo inactive )" ;;
  "--no-block restart "*)
    scenario=$(get scenario ok)
    (
      sleep 1
      echo activating > "$d/ActiveState"
      od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$d/InvocationID"
      [ "$scenario" = never_ready ] && exit 0
      sleep 1
      echo active > "$d/ActiveState"
      [ "$scenario" = crash ] || exit 0
      sleep 1
      echo $(( $(get NRestarts 0) + 1 )) > "$d/NRestarts"
    ) > /dev/null 2>&1 &
    ;;
  *) echo "fake systemctl: unsupported: $*" >&2; exit 1 ;;
esac
