#!/usr/bin/env bash
# Retrain the shipped twin tiny models from scratch on CPU: tiny_full (the base, causal attention only) and
# tiny_memento (its memento fine-tune): one word-level tokenizer, one shared stage 1, then the same data stream and
# step count in stage 2 (causal vs the memento mask), the two twins in parallel on two cores.
# Deterministic for a given seed and thread count on one machine; the shipped weights come from the defaults.
#   usage: scripts/train_tiny.sh [OUT_DIR] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/tiny-twins}"
SEED="${2:-0}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
autogen-memento train --preset tiny-twins --out "$OUT" --seed "$SEED"
echo "twins in $OUT/tiny_full and $OUT/tiny_memento; to ship them copy each over autogen_ext_memento/assets/<name>"
echo "(keeping its README.md model card)"
