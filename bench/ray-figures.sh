#!/usr/bin/env bash
# The Ray backend's figures (README "More than one GPU server"): a throw-away Ray cluster on
# this machine, one node with two imgbot_worker and two CPUs (NODES=3: a head without
# workers and two worker nodes of one each, as the tests have it, which on a small machine
# spends a core on Ray's own processes), each worker making pictures on one thread; then
# `imgbot bench --backend ray` with one worker, with two, and with two through a throw-away
# Synapse and the bot.
#
#   bench/ray-figures.sh MODEL_DIR [OUTPUT_DIR]
#
# Run it where Ray may bind to loopback only: as root, `unshare -n sh -c 'ip link set lo up;
# bench/ray-figures.sh …'` (Ray binds to every interface and probes an outside address).
# WORKLOAD= overrides the shape (default: --size 512x512 --steps 16 --count 24). Each run's
# output goes to OUTPUT_DIR (default ray-figures/) as soon as it is measured.
set -euo pipefail
MODEL=${1:?usage: bench/ray-figures.sh MODEL_DIR [OUTPUT_DIR]}
OUT=${2:-ray-figures}
WORKLOAD=${WORKLOAD:---size 512x512 --steps 16 --count 24}
BIN=$(dirname "$(command -v imgbot)")
mkdir -p "$OUT"
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -c 'import secrets; print(secrets.token_hex(32))' > "$WORK/ray-token"
chmod 600 "$WORK/ray-token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/ray-token" RAY_USAGE_STATS_ENABLED=0
pids=()
cleanup() {  # each node's process group (not `ray stop`: it ends every Ray on the host)
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 5
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
node() {  # ray start --block in a process group of its own, its log in $WORK
    setsid "$BIN/ray" start --block --node-ip-address=127.0.0.1 --disable-usage-stats "$@" \
        >"$WORK/node-${#pids[@]}.log" 2>&1 &
    pids+=($!)
}
nodes() {  # wait until the cluster shows $1 nodes (one at a time: two starting at once clash)
    for _ in $(seq 90); do
        [ "$("$BIN/ray" status --address="127.0.0.1:$PORT" 2>/dev/null | grep -c ' node_')" -ge "$1" ] && return
        sleep 1
    done
    echo "the Ray cluster did not show $1 nodes; logs in $WORK" >&2
    exit 1
}
if [ "${NODES:-1}" = 1 ]; then  # one node with both workers: Ray's own processes once
    node --head --port="$PORT" --num-cpus=2 --include-dashboard=false \
        --resources='{"imgbot_worker": 2}'
    nodes 1
else
    node --head --port="$PORT" --num-cpus=0 --include-dashboard=false
    nodes 1
    node --address="127.0.0.1:$PORT" --num-cpus=1 --resources='{"imgbot_worker": 1}'
    nodes 2
    node --address="127.0.0.1:$PORT" --num-cpus=1 --resources='{"imgbot_worker": 1}'
    nodes 3
fi
cat > "$WORK/config.yaml" <<YAML
matrix: {homeserver_url: "http://127.0.0.1:1", user_id: "@bench:localhost", password: "unused"}
state_dir: "$WORK/state"
generation:
  model: "$MODEL"
  backend: ray
  ray: {address: "127.0.0.1:$PORT", token_file: "$WORK/ray-token",
        resources: {imgbot_worker: 1, CPU: 1}}
YAML
chmod 600 "$WORK/config.yaml"
# shellcheck disable=SC2086  # WORKLOAD is several arguments
for run in "1" "2" "2 --through-matrix"; do
    set -- $run
    name="workers-$1${2:+-through-matrix}"
    echo "== $name" >&2
    "$BIN/imgbot" bench --model "$MODEL" --backend ray -c "$WORK/config.yaml" $WORKLOAD \
        --workers "$@" | tee "$OUT/$name.txt"
done
