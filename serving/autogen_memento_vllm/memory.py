"""A sane default KV-cache size on the CPU backend, where vLLM's default would refuse to start.

vLLM's CPU worker reserves ``--gpu-memory-utilization`` (default 0.92) of the node's *total* memory and refuses to
start when less than that is available, which is the case on most desktops and shared machines (a 24 GiB machine
with 19 GiB available fails). When no KV size was given (``--kv-cache-memory-bytes``, ``VLLM_CPU_KVCACHE_SPACE``) and
that check would fail, :func:`fit_cpu_kv_cache` sets the KV cache to :func:`default_kv_cache_bytes` instead and logs
one line saying so. A setup that would start anyway is left as it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
MIN_KV_BYTES = 256 * MIB


def default_kv_cache_bytes(available: int, model_bytes: int) -> int:
    """KV bytes for a machine with ``available`` free bytes serving a model of ``model_bytes``.

    Half the available memory, less the weights and a 20 % allowance for activations and the runtime, never
    below 256 MiB; rounded down to whole MiB.
    """
    budget = available // 2 - int(model_bytes * 1.2)
    return max(MIN_KV_BYTES, budget // MIB * MIB)


def model_weight_bytes(model_config: Any) -> int:
    """Bytes of the model's weights: their files when the model is a local directory, else an estimate."""
    path = Path(str(getattr(model_config, "model", "")))
    if path.is_dir():
        files = [p for pattern in ("*.safetensors", "*.bin", "*.pt") for p in path.glob(pattern)]
        if files:
            return sum(p.stat().st_size for p in files)
    cfg = getattr(model_config, "hf_text_config", None)
    h = int(getattr(cfg, "hidden_size", 0) or 0)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    inter = int(getattr(cfg, "intermediate_size", 0) or 4 * h)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    params = 2 * vocab * h + layers * (4 * h * h + 3 * h * inter)
    itemsize = int(getattr(getattr(model_config, "dtype", None), "itemsize", 2) or 2)
    return params * itemsize


def needs_default(cache_config: Any, total: int, available: int) -> bool:
    """Whether vLLM's CPU start-up check would refuse: no explicit KV size and the reservation exceeds free memory."""
    if cache_config.kv_cache_memory_bytes is not None:
        return False
    return math.ceil(total * float(cache_config.gpu_memory_utilization)) > available


def fit_cpu_kv_cache(vllm_config: Any, total: int, available: int) -> int | None:
    """Set a default KV size on ``vllm_config`` when vLLM's CPU default cannot start; the bytes set, or ``None``."""
    cache_config = vllm_config.cache_config
    if not needs_default(cache_config, total, available):
        return None
    size = default_kv_cache_bytes(available, model_weight_bytes(vllm_config.model_config))
    cache_config.kv_cache_memory_bytes = size
    return size
