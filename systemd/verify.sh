#!/bin/sh
# Checks a unit of systemd/ (imgbot.service unless one is named: the Ray units and the
# bridge's pass the same bar) on any machine with systemd-analyze, installed or not:
#   systemd/verify.sh [UNIT]
# 1. `systemd-analyze verify` on a copy whose ExecStart runs /bin/true, since verify insists
#    that the binary exists and /opt/imgbot/venv usually does not where this runs; a socket
#    is verified with its service beside it (NAME@.service for Accept=yes, or NAME.service);
# 2. for a service, `systemd-analyze security --offline=true`: prints the exposure table and
#    fails when the overall exposure is above MAX_EXPOSURE (tenths: 14 is 1.4, the score in
#    README.md).
set -eu

unit=${1:-$(dirname "$0")/imgbot.service}
name=$(basename "$unit")
max=${MAX_EXPOSURE:-14}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

copy() {
    sed "s#^ExecStart=[^ ]*#ExecStart=$(command -v true)#" "$1" > "$tmp/$(basename "$1")"
}
copy "$unit"
if [ "${name%.socket}" != "$name" ]; then
    for service in "$(dirname "$unit")/${name%.socket}@.service" \
                   "$(dirname "$unit")/${name%.socket}.service"; do
        if [ -f "$service" ]; then copy "$service"; fi
    done
fi
systemd-analyze verify "$tmp/$name"
echo "verify: ok"
if [ "${name%.service}" != "$name" ]; then
    systemd-analyze security --offline=true --threshold="$max" --no-pager "$unit"
fi
