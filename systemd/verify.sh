#!/bin/sh
# Checks a unit of systemd/ (imgbot.service unless one is named: imgbot-ray-head.service and
# imgbot-ray-worker.service pass the same bar) on any machine with systemd-analyze,
# installed or not:
#   systemd/verify.sh [UNIT]
# 1. `systemd-analyze verify` on a copy whose ExecStart runs /bin/true, since verify insists
#    that the binary exists and /opt/imgbot/venv usually does not where this runs;
# 2. `systemd-analyze security --offline=true`: prints the exposure table and fails when
#    the overall exposure is above MAX_EXPOSURE (tenths: 14 is 1.4, the score in README.md).
set -eu

unit=${1:-$(dirname "$0")/imgbot.service}
max=${MAX_EXPOSURE:-14}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sed "s#^ExecStart=[^ ]*#ExecStart=$(command -v true)#" "$unit" > "$tmp/imgbot.service"
systemd-analyze verify "$tmp/imgbot.service"
echo "verify: ok"
systemd-analyze security --offline=true --threshold="$max" --no-pager "$unit"
