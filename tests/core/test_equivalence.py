"""The oracle: logits with a compacted cache and logical positions equal logits with the full cache and the
stage-2 training mask (the grammar's mask builder), over several evictions, prompt blocks and decode steps."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from autogen_ext_memento._tiny import build_tiny_qwen3
from autogen_ext_memento.backends import TransformersBackend
from autogen_ext_memento.grammar import MementoConfig, MementoTokenIds, build_visibility, visibility_to_additive

TOL = 1e-4  # fp32; measured max |Δlogit| ≈ 4e-7


def make_sequence(ids: MementoTokenIds, seed: int = 0) -> tuple[list[int], int]:
    rnd = random.Random(seed)

    def w(n: int) -> list[int]:
        return [rnd.randrange(20, 300) for _ in range(n)]

    # a prompt that already holds a finished block (an earlier agent turn), then four more blocks
    seq = w(6) + [ids.block_start] + w(8) + [ids.block_end, ids.summary_start] + w(3) + [ids.summary_end] + w(4)
    prompt_len = len(seq)
    for _ in range(4):
        seq += [ids.block_start] + w(rnd.randrange(3, 9)) + [ids.block_end] + w(1)
        seq += [ids.summary_start] + w(2) + [ids.summary_end] + w(2)
    return seq, prompt_len


def reference_logits(model: Any, seq: list[int], mask: torch.Tensor) -> torch.Tensor:
    add = visibility_to_additive(mask)[None, None]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([seq]), position_ids=torch.arange(len(seq))[None], attention_mask=add)
    return out.logits[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "cfg",
    [MementoConfig(), MementoConfig(keep_last_n_blocks=1), MementoConfig(mask_delimiters=True)],
    ids=["keep0", "keep1", "mask_delims"],
)
def test_compacted_cache_equals_training_mask(tiny_tokenizer: Any, attn: str, cfg: MementoConfig) -> None:
    model = build_tiny_qwen3(len(tiny_tokenizer), attn_implementation=attn)
    backend = TransformersBackend(model, tiny_tokenizer, memento=cfg)
    seq, prompt_len = make_sequence(backend.memento_ids)
    full = reference_logits(model, seq, build_visibility(seq, backend.memento_ids, cfg))
    # prefill the prompt (its block is compacted after prefill), decode token by token, then chunks
    cuts = [prompt_len, *range(prompt_len + 1, prompt_len + 12), prompt_len + 25, len(seq)]
    worst = 0.0
    for k in cuts:
        logits = backend.next_token_logits("s", seq[:k])
        worst = max(worst, (logits - full[k - 1]).abs().max().item())
    stats = backend.stats("s")
    assert stats is not None and stats.rebuilds == 0
    assert stats.evictions >= (4 if cfg.keep_last_n_blocks == 0 else 3)
    assert stats.live_kv_tokens < len(seq)
    assert worst < TOL, worst


def test_oracle_detects_a_wrong_rule(tiny_tokenizer: Any) -> None:
    """Negative control: the same comparison against the causal (stage-1) mask must fail after evictions."""
    model = build_tiny_qwen3(len(tiny_tokenizer))
    backend = TransformersBackend(model, tiny_tokenizer)
    seq, _ = make_sequence(backend.memento_ids)
    causal = reference_logits(model, seq, build_visibility(seq, backend.memento_ids, MementoConfig(), stage=1))
    logits = backend.next_token_logits("s", seq)
    assert (logits - causal[-1]).abs().max().item() > 1e-2


def test_restart_mode_recomputes_memento_kv_without_its_block(tiny_tokenizer: Any) -> None:
    model = build_tiny_qwen3(len(tiny_tokenizer))
    kv = TransformersBackend(model, tiny_tokenizer)
    restart = TransformersBackend(model, tiny_tokenizer, memento=MementoConfig(restart_mode=True))
    ids = kv.memento_ids
    seq, _ = make_sequence(ids)
    a = kv.next_token_logits("s", seq)
    b = restart.next_token_logits("s", seq)
    assert (a - b).abs().max().item() > 1e-3  # the dual stream is gone
    # reference: the stage-2 mask where every memento also stops seeing its own block
    mask = build_visibility(seq, ids, MementoConfig())
    starts = [i for i, t in enumerate(seq) if t == ids.block_start]
    ends = [i for i, t in enumerate(seq) if t == ids.block_end]
    s_starts = [i for i, t in enumerate(seq) if t == ids.summary_start]
    s_ends = [i for i, t in enumerate(seq) if t == ids.summary_end]
    for bs, be, ss, se in zip(starts, ends, s_starts, s_ends, strict=True):
        mask[ss : se + 1, bs + 1 : be] = False
    ref = reference_logits(model, seq, mask)
    assert (b - ref[-1]).abs().max().item() < TOL
    assert restart.stats("s").live_kv_tokens == kv.stats("s").live_kv_tokens  # type: ignore[union-attr]
