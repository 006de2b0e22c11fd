"""The data plane of the memento plugin: worker classes whose model runner applies the scheduler's compactions.

``MementoCPUWorker`` (``--worker-cls autogen_memento_vllm.worker.MementoCPUWorker``) and ``MementoGPUWorker``
build the stock runner, then switch its class to a subclass mixing in :class:`MementoRunnerMixin` (runtime
subclassing: no vLLM file is copied or patched). The mixin supports the V1 model runner (``gpu_model_runner``,
and the CPU runner built on it); on GPU set ``VLLM_USE_V2_MODEL_RUNNER=0``.

Per step, from ``scheduler_output.memento`` (:class:`~autogen_memento_vllm._common.MementoStepData`):

1. ``copies``: slot-to-slot KV copies on every attention layer, run first (before new pages are zeroed and before
   the forward), as one gather then one scatter per layer so every source is read before any write. Then
   ``swap_out``: a preempted request's whole pages are copied to a host buffer (pinned on a GPU) before anything
   written this step can reach them; then ``swap_in``: a resuming request's buffer is copied into its new pages.
   Buffers of requests that finish while swapped out are dropped.
2. ``updates``: requests whose token lists / page tables changed; their cached state is rebuilt and they are
   removed from the persistent batch, so the stock code re-adds them from that state.
3. ``rope_offsets``: added to each scheduled token's position after the slot mapping was computed from the
   compacted position, so RoPE sees logical positions while KV indices stay compact.
4. ``forced``: the token to force at this step's sample (block-length cap, scripted tokens): the row's logits
   are masked to that token before the stock sampler runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from vllm.v1.worker.cpu_worker import CPUWorker
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
from vllm.v1.worker.gpu_worker import Worker

from ._common import MementoStepData, WorkerUpdate
from .memory import GIB, fit_cpu_kv_cache


class MementoRunnerMixin:
    """Mixed into the V1 model runner class at runtime (see the module docstring)."""

    _memento_offsets: dict[str, int]
    _memento_forced: dict[str, int]
    _memento_layout: tuple[Any]
    _memento_swapped: dict[str, list[Any]]

    def _memento_init(self) -> None:
        self._memento_offsets = {}
        self._memento_forced = {}
        self._memento_swapped = {}

    # --- state ---------------------------------------------------------------------------------------------------
    def _update_states(self, scheduler_output: Any) -> Any:
        step: MementoStepData | None = getattr(scheduler_output, "memento", None)
        self._memento_forced = dict(step.forced) if step else {}
        for req_id in scheduler_output.finished_req_ids:  # first: a finished id may be reused by a new request
            self._memento_offsets.pop(req_id, None)
            self._memento_swapped.pop(req_id, None)
        if step is not None:
            if step.copies:
                self._memento_copy(step.copies)
            for req_id, pages in step.swap_out.items():
                self._memento_swapped[req_id] = self._memento_gather_pages(pages)
            for req_id, pages in step.swap_in.items():
                self._memento_scatter_pages(pages, self._memento_swapped.pop(req_id))
            for req_id, upd in step.updates.items():
                self._memento_rebuild(req_id, upd)
            self._memento_offsets.update(step.rope_offsets)
        return super()._update_states(scheduler_output)  # type: ignore[misc]

    def _memento_copy(self, copies: list[tuple[int, int]]) -> None:
        runner: Any = self
        bs = runner.cache_config.block_size
        pairs = torch.tensor(copies, dtype=torch.int64)
        src, dst = pairs[:, 0], pairs[:, 1]
        for cache in self._memento_layer_caches():
            # Logical per-layer view [blocks, heads, tokens_in_block, content] (vLLM's KV layout RFC).
            if cache.dim() != 4 or cache.shape[2] != bs:
                raise RuntimeError(f"memento: unsupported KV cache layout {tuple(cache.shape)} (block size {bs})")
            s, d = src.to(cache.device), dst.to(cache.device)
            perm = self._memento_token_layout(cache)
            if perm is None:
                cache[d // bs, :, d % bs] = cache[s // bs, :, s % bs]
                continue
            # The CPU kernels tile K and V inside a page: move each token's elements where the kernel put them.
            flat = cache.view(cache.shape[0], cache.shape[1], -1)
            perm = perm.to(cache.device)
            vals = flat[(s // bs)[:, None], :, perm[s % bs]]
            flat[(d // bs)[:, None], :, perm[d % bs]] = vals

    def _memento_layer_caches(self) -> list[Any]:
        runner: Any = self
        seen: set[int] = set()
        out = []
        for cache in runner.kv_caches:
            if cache.data_ptr() not in seen:
                seen.add(cache.data_ptr())
                out.append(cache)
        return out

    def _memento_gather_pages(self, pages: list[int]) -> list[Any]:
        """Copies of whole ``pages`` of every layer, on the host (pinned when the cache is on a GPU)."""
        out = []
        for cache in self._memento_layer_caches():
            idx = torch.tensor(pages, dtype=torch.int64, device=cache.device)
            if cache.device.type == "cpu":
                out.append(cache[idx])
                continue
            buf = torch.empty((len(pages), *cache.shape[1:]), dtype=cache.dtype, pin_memory=True)
            buf.copy_(cache[idx], non_blocking=True)  # ordered before this step's forward on the same stream
            out.append(buf)
        return out

    def _memento_scatter_pages(self, pages: list[int], buffers: list[Any]) -> None:
        """Write host copies taken by :meth:`_memento_gather_pages` into ``pages`` (same order, same layers)."""
        for cache, buf in zip(self._memento_layer_caches(), buffers, strict=True):
            idx = torch.tensor(pages, dtype=torch.int64, device=cache.device)
            cache[idx] = buf.to(cache.device, non_blocking=True)

    def _memento_token_layout(self, cache: Any) -> Any:
        """For the CPU attention backend: ``perm[token, j]``, the element of a (page, head) row holding K (``j < D``)
        or V (``j >= D``) element ``j % D`` of that token, probed once through the kernel's own cache writer."""
        cached = getattr(self, "_memento_layout", None)
        if cached is not None:
            return cached[0]
        runner: Any = self
        isa = None
        for layer in runner.compilation_config.static_forward_context.values():
            isa = getattr(layer, "isa", None)
            if isa is not None:
                break
        if isa is None:
            self._memento_layout = (None,)
            return None
        from vllm import _custom_ops as ops

        _, heads, n_tok, content = cache.shape
        dim = content // 2
        found = []
        for probe in ("token", "dim"):
            scratch = torch.zeros((1, heads, n_tok, content), dtype=cache.dtype, device=cache.device)
            kc, vc = scratch.view(1, heads, 2 * n_tok, dim).chunk(2, dim=2)
            n = torch.arange(n_tok).view(n_tok, 1, 1)
            dd = torch.arange(dim).view(1, 1, dim)
            base = (1 + n).expand(n_tok, heads, dim) if probe == "token" else (1 + dd).expand(n_tok, heads, dim)
            key = base.to(cache.dtype).contiguous()
            slots = torch.arange(n_tok, dtype=torch.int64, device=cache.device)
            ops.cpu_attn_reshape_and_cache(key, -key, kc, vc, slots, isa)
            found.append(scratch[0, 0].reshape(-1).float().round().long().cpu())
        tok, dims = found
        perm = torch.full((n_tok, 2 * dim), -1, dtype=torch.int64)
        for pos, (t, j) in enumerate(zip(tok.tolist(), dims.tolist(), strict=True)):
            if t > 0:
                perm[t - 1, j - 1] = pos
            elif t < 0:
                perm[-t - 1, dim - j - 1] = pos
        if (perm < 0).any():
            raise RuntimeError("memento: could not map the CPU KV page layout")
        self._memento_layout = (perm,)
        return perm

    def _memento_rebuild(self, req_id: str, upd: WorkerUpdate) -> None:
        runner: Any = self
        state = runner.requests.get(req_id)
        if state is None:
            return
        state.prompt_token_ids = list(upd.token_ids[: upd.num_prompt_tokens])
        state.num_prompt_tokens = upd.num_prompt_tokens
        state.output_token_ids = list(upd.token_ids[upd.num_prompt_tokens :])
        state.num_computed_tokens = upd.num_computed_tokens
        state.block_ids = (list(upd.block_ids),)
        self._memento_offsets[req_id] = upd.rope_offset
        if req_id in runner.input_batch.req_id_to_index:
            runner.input_batch.remove_request(req_id)

    # --- positions and sampling ------------------------------------------------------------------------------------
    def _prepare_inputs(self, scheduler_output: Any, num_scheduled_tokens: np.ndarray) -> Any:
        out = super()._prepare_inputs(scheduler_output, num_scheduled_tokens)  # type: ignore[misc]
        if self._memento_offsets:
            runner: Any = self
            batch = runner.input_batch
            num_reqs = batch.num_reqs
            per_req = np.zeros(num_reqs, dtype=np.int64)
            for i, rid in enumerate(batch.req_ids[:num_reqs]):
                per_req[i] = self._memento_offsets.get(rid, 0)
            if per_req.any():
                per_tok = np.repeat(per_req, num_scheduled_tokens)
                n = per_tok.shape[0]
                runner.positions[:n] += torch.from_numpy(per_tok).to(runner.positions.device)
        return out

    def _sample(self, logits: Any, spec_decode_metadata: Any) -> Any:
        if self._memento_forced and logits is not None:
            runner: Any = self
            index = runner.input_batch.req_id_to_index
            for rid, tok in self._memento_forced.items():
                row = index.get(rid)
                if row is None or row >= logits.shape[0]:
                    continue
                val = logits[row, tok].clone()
                logits[row] = float("-inf")
                logits[row, tok] = torch.where(torch.isfinite(val), val, torch.zeros_like(val))
        return super()._sample(logits, spec_decode_metadata)  # type: ignore[misc]


_RUNNER_CLASSES: dict[type, type] = {}


def _memento_runner_class(base: type) -> type:
    if not issubclass(base, GPUModelRunner):
        raise RuntimeError(
            f"memento plugin supports the V1 model runner only, got {base.__module__}.{base.__name__}; "
            "set VLLM_USE_V2_MODEL_RUNNER=0"
        )
    cls = _RUNNER_CLASSES.get(base)
    if cls is None:
        cls = type(f"Memento{base.__name__}", (MementoRunnerMixin, base), {})
        _RUNNER_CLASSES[base] = cls
    return cls


def install_runner(worker: Any) -> None:
    """Switch ``worker.model_runner`` to its memento subclass (idempotent)."""
    runner = worker.model_runner
    if isinstance(runner, MementoRunnerMixin):
        return
    runner.__class__ = _memento_runner_class(type(runner))
    runner._memento_init()


class MementoCPUWorker(CPUWorker):
    """CPU worker whose model runner applies memento compactions.

    When no KV size was given and vLLM's default reservation (``--gpu-memory-utilization`` of the node's total
    memory) exceeds the free memory, the KV cache gets :func:`~autogen_memento_vllm.memory.default_kv_cache_bytes`
    instead of a refusal to start.
    """

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        _fit_kv_cache(vllm_config)
        super().__init__(vllm_config, *args, **kwargs)

    def init_device(self) -> None:
        super().init_device()
        install_runner(self)


def _fit_kv_cache(vllm_config: Any) -> None:
    """Apply :func:`~autogen_memento_vllm.memory.fit_cpu_kv_cache` with the memory of the node vLLM binds to."""
    from vllm.logger import init_logger
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info, get_visible_memory_node

    nodes = get_visible_memory_node()
    node = get_allowed_cpu_list()[0].numa_node
    info = get_memory_node_info(node if node in nodes else nodes[0])
    size = fit_cpu_kv_cache(vllm_config, int(info.total_memory), int(info.available_memory))
    if size is not None:
        init_logger(__name__).warning(
            "memento: %.2f GiB free of %.2f GiB is less than --gpu-memory-utilization %.2f reserves; using a %.2f GiB "
            "KV cache (set --kv-cache-memory-bytes or VLLM_CPU_KVCACHE_SPACE to choose)",
            info.available_memory / GIB,
            info.total_memory / GIB,
            vllm_config.cache_config.gpu_memory_utilization,
            size / GIB,
        )


class MementoGPUWorker(Worker):
    """GPU worker (V1 model runner) whose model runner applies memento compactions."""

    def init_device(self) -> None:
        super().init_device()
        install_runner(self)
