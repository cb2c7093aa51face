#!/bin/sh
# Add a broker account (a station, or the plant reader) to the mosquitto password file, or
# change its password, without putting the password on a command line (ps shows those).
#   add_station.sh [--file FILE] [--no-reload] NAME
# The password comes from $CLIPINSPECT_MQTT_PASSWORD, else from the first line of stdin.
# Then mosquitto is told to re-read its password and ACL files (SIGHUP), unless --no-reload.
set -eu

file=/etc/mosquitto/clipinspect.passwd
reload=1
while [ $# -gt 1 ]; do
    case "$1" in
        --file) file=$2; shift 2 ;;
        --no-reload) reload=0; shift ;;
        *) echo "add_station.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ $# -ne 1 ]; then
    echo "usage: add_station.sh [--file FILE] [--no-reload] NAME" >&2
    exit 2
fi
name=$1
case "$name" in
    ''|*[!A-Za-z0-9._-]*) echo "add_station.sh: name '$name' must be letters, digits, '.', '_' or '-' (it becomes a topic level)" >&2; exit 2 ;;
esac
if [ -n "${CLIPINSPECT_MQTT_PASSWORD:-}" ]; then
    password=$CLIPINSPECT_MQTT_PASSWORD
else
    IFS= read -r password || true
fi
if [ -z "$password" ]; then
    echo "add_station.sh: empty password (set CLIPINSPECT_MQTT_PASSWORD or pipe it on stdin)" >&2
    exit 2
fi
create=""
[ -f "$file" ] || create="-c"
# mosquitto_passwd asks twice; it reads both answers from the pipe.
# shellcheck disable=SC2086  # $create is empty or one flag
printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd $create "$file" "$name" >/dev/null
chmod 0640 "$file"
if [ "$reload" = 1 ]; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto; then
        systemctl reload mosquitto
    else
        echo "add_station.sh: send mosquitto a SIGHUP (or restart it) to apply the change" >&2
    fi
fi
echo "account $name written to $file"
