"""The GPU worker's KV copy path on CPU tensors laid out as vLLM lays out the GPU cache.

``MementoGPUWorker`` compacts pages through ``MementoRunnerMixin._memento_copy`` on the runner's ``kv_caches``:
the per-layer logical ``[blocks, heads, tokens, content]`` views that vLLM's ``create_kv_cache_views`` cuts out of
one flat buffer with the strides of the resolved ``KVCacheLayout`` (layer-outermost or block-outermost, heads
before or after tokens). These tests build those views with vLLM's own functions for every layout, run the copy
path (no ``isa`` attribute on the layers: the GPU branch, not the CPU tile permutation) and check, element by
element, that each destination slot got its source's K and V in every layer and head and that nothing else in the
buffer changed (another layer's page in a block-outermost layout, padding). A layout bug fails here instead of at
a user's first eviction on a GPU.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.vllm

BLOCK = 16
BLOCKS = 7
LAYERS = 3
HEADS = 2
HEAD = 8


def _views(layout: Any, dtype: Any) -> tuple[Any, list[Any]]:
    import torch
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVCacheTensor,
        compute_layout_strides,
        create_kv_cache_views,
    )

    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=HEADS, head_size=HEAD, dtype=dtype)
    layer_stride, block_stride, *_ = compute_layout_strides(spec, BLOCKS, LAYERS, layout)
    size = LAYERS * BLOCKS * spec.page_size_bytes
    raw = torch.zeros(size, dtype=torch.int8)
    tensor = KVCacheTensor(
        size=size,
        layers=[f"model.layers.{i}.attn" for i in range(LAYERS)],
        layer_stride=layer_stride,
        block_stride=block_stride,
    )
    return raw, create_kv_cache_views(raw, spec, BLOCKS, layout, tensor)


class _Runner:
    """The attributes of a V1 GPU model runner that the copy path reads."""

    def __init__(self, caches: list[Any]) -> None:
        self.kv_caches = caches
        self.cache_config = SimpleNamespace(block_size=BLOCK)
        # GPU attention layers carry no ``isa`` (the CPU backend's tiled pages do).
        self.compilation_config = SimpleNamespace(static_forward_context={"model.layers.0.attn": object()})


def _runner(caches: list[Any]) -> Any:
    from autogen_memento_vllm.worker import MementoRunnerMixin

    cls = type("Runner", (MementoRunnerMixin, _Runner), {})
    return cls(caches)


def _layouts() -> list[Any]:
    from vllm.v1.kv_cache_layout import KVCacheLayout

    return list(KVCacheLayout)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32"])
def test_gpu_copy_path_moves_whole_slots_in_every_layout(dtype_name: str) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    for layout in _layouts():
        raw, views = _views(layout, dtype)
        assert len(views) == LAYERS and all(v.dim() == 4 for v in views)
        assert tuple(views[0].shape[:3]) == (BLOCKS, HEADS, BLOCK), layout
        gen = torch.Generator().manual_seed(0)
        for v in views:  # distinct values everywhere (strided views: write through the view)
            v.copy_(torch.randn(v.shape, generator=gen).to(dtype))
        before = [v.clone() for v in views]
        raw_before = raw.clone()
        # What an eviction produces: the tail after a 21-token hole in block 1 moves down across pages, a
        # copy-on-write page (block 6), and chains (a source that is also a destination is read first).
        hole, length = (1 * BLOCK + 3, 1 * BLOCK + 24), 4 * BLOCK + 5
        d = hole[1] - hole[0]
        copies = [(s, s - d) for s in range(hole[1], length)]
        copies += [(1 * BLOCK + i, 6 * BLOCK + i) for i in range(3)]
        _runner(views)._memento_copy(copies)
        for layer, (v, old) in enumerate(zip(views, before, strict=True)):
            expected = old.clone()
            for s, t in copies:
                expected[t // BLOCK, :, t % BLOCK] = old[s // BLOCK, :, s % BLOCK]
            assert torch.equal(v, expected), f"{layout.name} {dtype_name} layer {layer}"
        changed = (raw != raw_before).nonzero().numel()
        assert changed > 0, layout  # the copies landed in the buffer the kernels read


def test_gpu_copy_path_refuses_a_layout_it_does_not_know() -> None:
    import torch

    with pytest.raises(RuntimeError, match="unsupported KV cache layout"):
        _runner([torch.zeros(2, BLOCKS, BLOCK, HEADS, HEAD)])._memento_copy([(0, 1)])


@pytest.mark.parametrize("dtype_name", ["float16", "float32"])
def test_swap_out_and_in_moves_whole_pages_in_every_layout(dtype_name: str) -> None:
    """Preemption by swap: pages copied to the host buffer come back, in order, into other pages of every layer
    and nothing else in the buffer changes (pages written meanwhile by another request are overwritten)."""
    import torch

    dtype = getattr(torch, dtype_name)
    for layout in _layouts():
        raw, views = _views(layout, dtype)
        gen = torch.Generator().manual_seed(1)
        for v in views:
            v.copy_(torch.randn(v.shape, generator=gen).to(dtype))
        before = [v.clone() for v in views]
        runner = _runner(views)
        saved = runner._memento_gather_pages([5, 2, 3])
        for v in views:  # the freed pages are reused by someone else before the request resumes
            v[[5, 2, 3]] = 0
        raw_mid = raw.clone()
        runner._memento_scatter_pages([1, 6, 0], saved)
        for layer, (v, old) in enumerate(zip(views, before, strict=True)):
            for src, dst in ((5, 1), (2, 6), (3, 0)):
                assert torch.equal(v[dst], old[src]), f"{layout.name} {dtype_name} layer {layer}"
            assert not v[[5, 2, 3]].any() and torch.equal(v[4], old[4])
        assert (raw != raw_mid).any(), layout
