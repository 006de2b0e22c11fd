#!/usr/bin/env bash
# Retrain the shipped tiny memento model from scratch (tokenizer, both SFT stages on TRL, CPU, ~45 CPU-minutes).
# Deterministic for a given seed on one machine; the shipped weights come from seed 0.
#   usage: scripts/train_tiny.sh [OUT_DIR] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-autogen_ext_memento/assets/tiny_memento}"
SEED="${2:-0}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# The model card (README.md) in OUT is kept; weights, tokenizer and training_log.json are replaced.
# Stages 1 (500 steps) and 2 (300), then the stage-2 phases 2b (stopped at 800 of 1200), 2c, 2d (look-up
# curriculum) and 2e, exactly as the shipped weights were produced (see autogen_ext_memento/assets/tiny_memento).
python -m autogen_ext_memento.training._tiny_recipe --out "$OUT" --seed "$SEED" --threads "$OMP_NUM_THREADS" \
    --probe-every 50 --stage2-extra-steps 1200 --stop-at 800 --stage2c-steps 400 --stage2d-steps 700 --stage2e-steps 300
