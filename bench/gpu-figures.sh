#!/usr/bin/env bash
# Every figure of the Performance section on one GPU, in one command:
#
#   bench/gpu-figures.sh [OUTPUT_DIR]          (default: gpu-figures/)
#
# Random-weight SDXL at 1024x1024, 4 steps, guidance off: our engine against plain diffusers
# at batch 1, 4 and 8 (24 pictures a side), then compiled at batch 8, then 40 commands through a throw-away
# Synapse and the bot. Each run prints its table and writes every figure to OUTPUT_DIR/*.json;
# the whole log goes to OUTPUT_DIR/log.txt. It needs imgbot installed with the `test` extra
# (Synapse, for --through-matrix) and a CUDA build of torch; it takes about 15 minutes on an
# H100 (most of it loading and warming up, and the first compile).
set -euo pipefail
out=${1:-gpu-figures}
mkdir -p "$out"
imgbot=${IMGBOT:-imgbot}
# WORKLOAD replaces the model and shape (e.g. "--model DIR --size 64x64 --steps 2" for a
# quick try of the script itself on a CPU).
read -r -a common <<< "${WORKLOAD:---random-weights sdxl --size 1024x1024 --steps 4 --guidance 0}"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    # 24 pictures a side: a whole number of batches of 1, 4 and 8.
    for batch in 1 4 8; do
        echo "+ imgbot bench ${common[*]} --count 24 --batch $batch"
        "$imgbot" bench "${common[@]}" --count 24 --batch "$batch" --json "$out/batch$batch.json"
    done
    echo "+ imgbot bench ${common[*]} --count 24 --batch 8 --compile --no-baseline"
    "$imgbot" bench "${common[@]}" --count 24 --batch 8 --compile --no-baseline \
        --json "$out/batch8-compiled.json"
    echo "+ imgbot bench ${common[*]} --count 40 --batch 8 --through-matrix"
    "$imgbot" bench "${common[@]}" --count 40 --batch 8 --through-matrix \
        --json "$out/through-matrix.json"
} 2>&1 | tee "$out/log.txt"
