"""The attention-mask rule: the tracker replayed over a whole sequence, as a visibility matrix for training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._rule import MementoConfig, MementoTokenIds
from ._slots import evictions


def build_visibility(
    token_ids: Sequence[int],
    ids: MementoTokenIds,
    config: MementoConfig,
    stage: int = 2,
) -> Any:
    """Boolean ``[L, L]`` visibility matrix (``True`` = query row may attend to key column).

    Stage 1 is plain causal attention. Stage 2 applies the memento rule by replaying :class:`BlockTracker`:
    key ``k`` in an evicted span is hidden from query ``q`` iff ``q > trigger`` of that eviction. The prompt,
    mementos and (with ``mask_delimiters=False``) delimiters are never in an evicted span, so they stay visible.
    Returns a ``torch.bool`` tensor.
    """
    import torch

    n = len(token_ids)
    mask = torch.ones(n, n, dtype=torch.bool).tril_()
    if stage == 1:
        return mask
    if stage != 2:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    for ev in evictions(token_ids, ids, config):
        s, e = ev.span
        mask[ev.trigger + 1 :, s:e] = False
    return mask


def visibility_to_additive(mask: Any, dtype: Any = None) -> Any:
    """Turn a boolean visibility mask into the additive float mask transformers expects (0 or ``finfo.min``).

    A boolean 4-D mask is silently mis-applied by eager attention, and ``-inf`` yields NaNs on fully masked rows,
    hence ``finfo.min``.
    """
    import torch

    dt = dtype if dtype is not None else torch.float32
    out = torch.zeros(mask.shape, dtype=dt)
    out.masked_fill_(~mask, torch.finfo(dt).min)
    return out
