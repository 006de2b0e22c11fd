"""The memento data collator: dynamic padding, explicit positions and a per-sample 4-D attention mask.

Stage 1 trains with plain causal attention; stage 2 with the memento rule from
:func:`~autogen_ext_memento.grammar.build_visibility` — the same tracker replay the backends use to evict, so the
training mask and inference eviction cannot drift apart. The mask is additive (0 / ``finfo.min``) because a boolean
4-D mask is silently mis-applied by eager attention; it already contains causality and padding, as a 4-D mask
bypasses transformers' own mask logic.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..grammar import MementoConfig, MementoTokenIds, build_visibility, evictions, visibility_to_additive

IGNORE_INDEX = -100
MASK_KEY = "memento_attention_mask"
"""Batch key of the 4-D additive mask (the trainer swaps it in as ``attention_mask`` for the forward pass)."""


class MementoCollator:
    """Pads tokenized samples and builds their stage-1 or stage-2 attention masks.

    Each feature is a mapping with ``input_ids`` and ``labels`` (``-100`` where no loss is taken). The batch holds
    ``input_ids``, ``labels`` (padding is ``-100``), ``position_ids`` (``0..L-1`` per sample: tokens are hidden, never
    removed, so positions stay contiguous in the original order; see ``max_position_gap``), a 2-D
    ``attention_mask`` (1 on real tokens; for token counting) and :data:`MASK_KEY`, a ``[B, 1, L, L]`` additive float mask.

    Padded positions see only themselves, so no softmax row is empty; real tokens never see padding.

    Args:
        memento_ids: ids of the four memento tokens.
        stage: 1 (causal) or 2 (memento rule).
        config: the memento rule for stage 2 (default: evict at each memento, delimiters kept visible).
        pad_token_id: id used to pad ``input_ids``.
        pad_to_multiple_of: round the padded length up (helps kernels; 1 = no rounding).
        dtype: dtype of the additive mask (the model's compute dtype).
        max_position_gap: if > 0, every block's logical positions end with a random gap of ``0..max_position_gap``
            (uniform, drawn per block): the tokens after a block (its memento onwards) sit as far from what came
            before as if the block had been that much longer. Positions stay increasing, so nothing but RoPE
            distances change; it teaches distances longer than the training episodes (length generalisation).
        causal_share: stage 2 only: the share of samples (drawn per sample) that keep plain causal attention, so a
            memento model also learns to read the full context (it then does not *need* eviction).
        seed: seed of the gap and causal-share draws (the same batches get the same draws).
    """

    def __init__(
        self,
        memento_ids: MementoTokenIds,
        *,
        stage: int = 2,
        config: MementoConfig | None = None,
        pad_token_id: int = 0,
        pad_to_multiple_of: int = 1,
        dtype: Any = None,
        max_position_gap: int = 0,
        causal_share: float = 0.0,
        seed: int = 0,
    ) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        if max_position_gap < 0:
            raise ValueError(f"max_position_gap must be >= 0, got {max_position_gap}")
        if not 0.0 <= causal_share <= 1.0:
            raise ValueError(f"causal_share must be in [0, 1], got {causal_share}")
        self.memento_ids = memento_ids
        self.stage = stage
        self.config = config or MementoConfig(keep_last_n_blocks=0)
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = max(1, pad_to_multiple_of)
        self.dtype = dtype
        self.max_position_gap = max_position_gap
        self.causal_share = causal_share
        self._rng = random.Random(seed)
        self._share_rng = random.Random(seed + 1)  # its own stream: turning gaps on does not change these draws
        # Gaps go after every block the memento rule would evict, whatever this stage's mask is.
        self._gap_rule = self.config.model_copy(update={"keep_last_n_blocks": 0})

    def positions(self, input_ids: Sequence[int]) -> list[int]:
        """Logical positions of one unpadded sample: ``0..L-1``, plus the random gaps after blocks if enabled."""
        n = len(input_ids)
        if self.max_position_gap == 0:
            return list(range(n))
        shift = [0] * (n + 1)
        for ev in evictions(list(input_ids), self.memento_ids, self._gap_rule):
            shift[ev.span[1]] += self._rng.randint(0, self.max_position_gap)
        out, total = [], 0
        for i in range(n):
            total += shift[i]
            out.append(i + total)
        return out

    def visibility(self, input_ids: Sequence[int], stage: int | None = None) -> Any:
        """The boolean ``[L, L]`` visibility of one unpadded sample under ``stage`` (default: this collator's)."""
        return build_visibility(list(input_ids), self.memento_ids, self.config, stage=stage or self.stage)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        dtype = self.dtype if self.dtype is not None else torch.float32
        ids_list = [list(map(int, f["input_ids"])) for f in features]
        labels_list = [
            list(map(int, f["labels"])) if "labels" in f else list(ids)
            for f, ids in zip(features, ids_list, strict=True)
        ]
        n = max(len(x) for x in ids_list)
        m = self.pad_to_multiple_of
        n = ((n + m - 1) // m) * m
        b = len(ids_list)
        input_ids = torch.full((b, n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((b, n), dtype=torch.long)
        positions = torch.arange(n, dtype=torch.long).unsqueeze(0).expand(b, n).contiguous()
        visible = torch.zeros((b, 1, n, n), dtype=torch.bool)
        eye = torch.eye(n, dtype=torch.bool)
        for i, (ids, lab) in enumerate(zip(ids_list, labels_list, strict=True)):
            if len(lab) != len(ids):
                raise ValueError(f"sample {i}: {len(ids)} input_ids but {len(lab)} labels")
            k = len(ids)
            input_ids[i, :k] = torch.tensor(ids, dtype=torch.long)
            labels[i, :k] = torch.tensor(lab, dtype=torch.long)
            attn[i, :k] = 1
            visible[i, 0] = eye  # padded rows attend to themselves only
            causal = self.stage == 2 and self.causal_share > 0 and self._share_rng.random() < self.causal_share
            visible[i, 0, :k, :k] = self.visibility(ids, stage=1 if causal else None)
            if self.max_position_gap:
                pos = self.positions(ids)
                positions[i, :k] = torch.tensor(pos, dtype=torch.long)
                positions[i, k:] = torch.arange(pos[-1] + 1, pos[-1] + 1 + n - k, dtype=torch.long)
        additive = visibility_to_additive(visible, dtype)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": positions,
            "attention_mask": attn,
            MASK_KEY: additive,
        }
