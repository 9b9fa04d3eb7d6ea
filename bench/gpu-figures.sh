#!/usr/bin/env bash
# Every GPU figure of the README's Performance section in one run, on a bare GPU server:
#
#   WHEELS=FOLDER bench/gpu-figures.sh [OUTPUT_DIR]    offline, from bench/wheelhouse.py's folder
#   bench/gpu-figures.sh [OUTPUT_DIR]                  online, from this checkout (pip)
#   IMGBOT=imgbot bench/gpu-figures.sh [OUTPUT_DIR]    with an imgbot already installed
#
# (default OUTPUT_DIR: gpu-figures). It installs imgbot[bench] into a venv made over the
# Python that has torch (PYTHON, default python3; --system-site-packages, so torch,
# transformers and the rest are the machine's own), checks the GPU (nvidia-smi) and, for the
# compiled figure, a C compiler and Python's headers (Triton builds its launchers with them
# at run time), then measures, random weights at full size, our engine against plain
# diffusers at the same batch and precision:
#
#   1  FLUX.2 [klein] 4B, 1024x1024, 4 steps, batch 1 and 4
#   3  Z-Image-Turbo, 1024x1024, 8 steps, batch 1
#   4  SDXL, 1024x1024, 4 steps, guidance 0, batch 1 and 8
#   5  40 commands through a throw-away Synapse and the bot, batches of up to 8, with the
#      fastest model of 1, 3 and 4 (pictures per second): the share of the engine's rate
#      that comes through chat, and the median reply overhead
#   2  1 again with the GPU speed-ups on: regional compile (warmed up as the bot warms up;
#      its seconds are a figure: the compile's cost) and fp8 where the card has it (compute
#      capability 8.9 or newer); ours/plain against 1's baseline
#
# in that order: the compile, the slowest and the one most likely to run out of time,
# last. Each figure is written as soon as it is measured: a line in OUTPUT_DIR/figures.txt
# (model, size, steps, batch, s/picture, pictures/s, peak GPU memory, ours/plain) and
# OUTPUT_DIR/N-*.json with every number; 0-setup.json says how the machine was found and
# how long the install took; log.txt has everything. A run cut short keeps what it had.
#
# Overrides, to run it small (on a CPU, in the tests) or differently:
#   FLUX2, ZIMAGE, SDXL      the workload's `imgbot bench` options (model, size, steps)
#   FLUX2_BATCHES=1,4 FLUX2_COUNT=4 ZIMAGE_COUNT=3 SDXL_BATCHES=1,8 SDXL_COUNT=8
#                            batch sizes, and pictures timed a side at each
#   CHAT_COUNT=40 CHAT_BATCH=8   the run through chat
#   DEVICE=auto  VENV=DIR  COMPILE_CACHE=DIR (torch.compile's cache, kept between runs)
#   BUDGET=SECONDS           the whole run's time, install included (none by default; 480
#                            for a slot of 8 minutes): a figure still running then is cut
#                            off, keeping the rows it had measured, and the rest skipped
set -euo pipefail
out=${1:-gpu-figures}
mkdir -p "$out"
out=$(cd "$out" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS
say() { echo "+ [$((SECONDS - started)) s] $*"; }

FLUX2=${FLUX2:---random-weights flux2-klein --size 1024x1024 --steps 4}
ZIMAGE=${ZIMAGE:---random-weights zimage --size 1024x1024 --steps 8}
SDXL=${SDXL:---random-weights sdxl --size 1024x1024 --steps 4 --guidance 0}
DEVICE=${DEVICE:-auto}
cache=${COMPILE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbot-gpu-figures/compile}
export TORCHINDUCTOR_CACHE_DIR=$cache TORCHINDUCTOR_FX_GRAPH_CACHE=1

exec > >(tee -a "$out/log.txt") 2>&1

# --- 0. install, and what the machine has -------------------------------------------------
install_started=$SECONDS
if [[ -n ${IMGBOT:-} ]]; then
    imgbot=$IMGBOT
    py=$(head -1 "$(command -v "$imgbot")" | sed 's/^#!//')
    say "using the installed $imgbot ($py)"
else
    base=${PYTHON:-python3}
    venv=${VENV:-${TMPDIR:-/tmp}/imgbot-gpu-figures-venv}
    say "making the venv $venv over $("$base" -c 'import sys; print(sys.executable)')"
    # No pip of its own (nor the setuptools that ensurepip adds before Python 3.12, which
    # would hide a newer one that torch asks for): the base Python's pip installs into it.
    "$base" -m venv --clear --without-pip --system-site-packages "$venv"
    py=$venv/bin/python
    pip=("$base" -m pip --python "$py" install --quiet)
    # --system-site-packages shows the system's packages; where PYTHON is itself a venv,
    # its own site-packages are added by path (torch, transformers, … are found, not copied).
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$base" -c 'import site; print("\n".join(site.getsitepackages()))' > "$site/_base_python.pth"
    # imgbot itself first, --ignore-installed: the venv's own even where the base Python has
    # one (its extras are then read from the folder's wheel), then what its extra needs.
    if [[ -n ${WHEELS:-} ]]; then
        wheels=$(cd "$WHEELS" && pwd)
        say "installing imgbot[bench] from $wheels, no network"
        "${pip[@]}" --no-index --find-links "$wheels" --no-deps --ignore-installed imgbot
        "${pip[@]}" --no-index --find-links "$wheels" 'imgbot[bench]'
    else
        say "installing imgbot[bench] from $repo (online)"
        "${pip[@]}" --no-deps --ignore-installed "$repo"
        "${pip[@]}" "$repo[bench]"
    fi
    imgbot=$venv/bin/imgbot
fi
install_seconds=$((SECONDS - install_started))
"$py" -I -c 'import bot, diffusers, torch, transformers
print(f"imgbot from {bot.__path__[0]}; torch {torch.__version__}, diffusers "
      f"{diffusers.__version__}, transformers {transformers.__version__}")'

gpu=none
if command -v nvidia-smi > /dev/null && nvidia-smi > /dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
    say "GPU: $gpu"
else
    say "no NVIDIA GPU (nvidia-smi missing or failing): the figures are this machine's ($DEVICE)"
fi
# Triton compiles a small C launcher for its kernels at run time: a compiler and Python.h.
compiler=$(command -v "${CC:-cc}" || command -v gcc || command -v clang || true)
headers=$("$py" -c 'import os, sysconfig
print(int(os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))))')
compile_skip=""
if [[ -z $compiler ]]; then
    compile_skip="no C compiler (cc, gcc or clang), which Triton needs for compiled runs"
elif [[ $headers != 1 ]]; then
    compile_skip="no Python.h for $py, which Triton needs for compiled runs (python3-dev)"
fi
[[ -n $compile_skip ]] && say "compiled figure skipped: $compile_skip"
fp8=$("$py" -c 'import importlib.util, torch
print(int(torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
          and importlib.util.find_spec("torchao") is not None))')
cat > "$out/0-setup.json" <<EOF
{"install_seconds": $install_seconds, "offline": $([[ -n ${WHEELS:-} ]] && echo true || echo false),
 "gpu": "$gpu", "c_compiler": "$compiler", "python_headers": $([[ $headers == 1 ]] && echo true || echo false),
 "compiled_figure": $([[ -z $compile_skip ]] && echo true || echo false), "fp8": $([[ $fp8 == 1 ]] && echo true || echo false),
 "compile_cache": "$cache"}
EOF

bench() {  # FILE WORKLOAD OPTIONS…: one figure, its lines appended as they are measured
    local file=$1 workload=$2 limit=()
    shift 2
    read -r -a options <<< "$workload"
    if [[ -n ${BUDGET:-} ]]; then
        local left=$((BUDGET - (SECONDS - started)))
        if ((left < 5)); then
            say "skipped $file: the budget of $BUDGET s is spent"
            echo "${file%%-*} skipped: the budget of $BUDGET s was spent" >> "$out/figures.txt"
            return
        fi
        limit=(timeout --kill-after=10 "$left")
    fi
    say "imgbot bench $workload $*"
    local status=0
    "${limit[@]}" "$imgbot" bench "${options[@]}" --device "$DEVICE" "$@" \
        --json "$out/$file" --figures "$out/figures.txt" || status=$?
    if ((status == 124 || status == 137)) && [[ -n ${BUDGET:-} ]]; then
        say "cut off at the budget of $BUDGET s: $file keeps the rows it had measured"
    elif ((status != 0)); then
        say "FAILED: $file (exit $status)"
    fi
}

# --- the figures, the slowest last ----------------------------------------------------------
bench 1-flux2-klein.json "$FLUX2" --batch "${FLUX2_BATCHES:-1,4}" --count "${FLUX2_COUNT:-4}"
bench 3-zimage.json "$ZIMAGE" --batch 1 --count "${ZIMAGE_COUNT:-3}"
bench 4-sdxl.json "$SDXL" --batch "${SDXL_BATCHES:-1,8}" --count "${SDXL_COUNT:-8}"

fastest=$("$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
best = (0.0, "")
for name in ("1-flux2-klein", "3-zimage", "4-sdxl"):
    path = Path(sys.argv[1]) / f"{name}.json"
    if path.exists():
        for row in json.loads(path.read_text())["rows"]:
            if row["side"] == "imgbot":
                best = max(best, (row["pictures_per_second"], name))
print(best[1])
EOF
)
case $fastest in
    1-flux2-klein) chat=$FLUX2 ;;
    3-zimage) chat=$ZIMAGE ;;
    4-sdxl) chat=$SDXL ;;
    *) chat="" ;;
esac
if [[ -n $chat ]]; then
    say "through chat with the fastest, ${fastest#*-}"
    bench 5-through-chat.json "$chat" --through-matrix --batch "${CHAT_BATCH:-8}" \
        --count "${CHAT_COUNT:-40}"
else
    say "through chat skipped: no figure of 1, 3 or 4 was measured"
    echo '{"skipped": "no figure of 1, 3 or 4 was measured"}' > "$out/5-through-chat.json"
fi

if [[ -z $compile_skip ]]; then
    fast=(--compile)
    [[ $fp8 == 1 ]] && fast+=(--quantize fp8)
    if [[ -f $out/1-flux2-klein.json ]]; then
        fast+=(--baseline-from "$out/1-flux2-klein.json")
    fi
    bench 2-flux2-klein-fast.json "$FLUX2" --batch "${FLUX2_BATCHES:-1,4}" \
        --count "${FLUX2_COUNT:-4}" --no-baseline "${fast[@]}"
else
    echo "2 skipped: $compile_skip" >> "$out/figures.txt"
    printf '{"skipped": "%s"}\n' "$compile_skip" > "$out/2-flux2-klein-fast.json"
fi
say "done in $((SECONDS - started)) s; the figures:"
cat "$out/figures.txt"
