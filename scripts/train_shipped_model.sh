#!/usr/bin/env bash
# Reproduce the model shipped inside the package (src/charnn/models/shakespeare/): the cpu-5m recipe
# (2 x GRU 512 on tiny Shakespeare) stopped at a fixed step count instead of its 5-minute budget, so any
# machine trains the same model; then stored with bf16 weights where the weight check allows it.
#   bash scripts/train_shipped_model.sh [RUN_DIR]        (default: runs/shipped-shakespeare)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/shipped-shakespeare}
steps=850
# The huge time budget never stops the run; it only lets the cosine schedule be sized to --max-steps. The
# weight decay and weight dropout are the preset's own values on CPUs without AMX, given so that a CPU with
# AMX, whose variant of the preset sets them otherwise, trains the same recipe.
recipe=(--preset cpu-5m --cell gru --weight-decay 0.01 --weight-dropout 0 --max-steps "$steps" --time-budget 1000h
  --seed 42)
.venv/bin/charnn train "${recipe[@]}" --out "$run" --overwrite --quiet
.venv/bin/python -m charnn.export.shipped "$run" src/charnn/models/shakespeare \
  --command "bash scripts/train_shipped_model.sh (charnn train ${recipe[*]})"
