"""Physical KV eviction on a transformers ``DynamicCache``: tokens computed at logical positions, spans cut out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..grammar import BlockTracker, EventKind, MementoConfig, SlotMap, Span
from ._base import SessionStats


@dataclass
class KVSession:
    """One session's cache, the tracker replaying its tokens and where each kept position lives in the cache."""

    sid: str
    tracker: BlockTracker
    stats: SessionStats
    cache: Any = None
    ids: list[int] = field(default_factory=list)  # every logical token computed so far (evicted ones included)
    slots: SlotMap = field(default_factory=SlotMap)
    pending: list[int] = field(default_factory=list)  # sampled but not yet computed
    logits: Any = None  # next-token logits after the last computed token


class KVRunner:
    """Runs a causal LM over sessions' caches: forward passes at logical positions, evictions at their triggers.

    Args:
        model: a transformers causal LM (eval mode, on ``device``).
        device: the torch device of the model's inputs.
        memento: the memento rule (``restart_mode`` recomputes mementos after an eviction).
        on_cache_change: called after every forward pass and eviction (the backend records pool occupancy).
    """

    def __init__(self, model: Any, device: Any, memento: MementoConfig, on_cache_change: Callable[[], None]) -> None:
        import inspect

        import torch

        self._torch = torch
        self._model = model
        self._device = device
        self._memento = memento
        self._on_change = on_cache_change
        # transformers renamed the forward's cache argument (``past_key_values`` -> ``cache``); use the current one.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def compute(self, sess: KVSession, tokens: list[int]) -> None:
        """Compute ``tokens`` at the next logical positions, evicting at every trigger in between."""
        base = len(sess.ids)
        start = 0  # first token of ``tokens`` not yet forwarded
        for i, tok in enumerate(tokens):
            for ev in sess.tracker.feed(tok, base + i):
                if ev.kind is EventKind.ANOMALY:
                    sess.stats.anomalies += 1
                elif ev.kind is EventKind.MEMENTO_COMPLETED and ev.evict:
                    assert ev.trigger is not None
                    upto = ev.trigger - base + 1  # forward everything the trigger token may still see
                    if upto > start:
                        self._forward(sess, tokens[start:upto], base + start)
                        start = upto
                    self._evict(sess, ev.evict, ev.evicted_blocks)
        if start < len(tokens):
            self._forward(sess, tokens[start:], base + start)

    def _forward(self, sess: KVSession, tokens: list[int], first_pos: int) -> None:
        torch = self._torch
        n = len(tokens)
        inp = torch.tensor([tokens], dtype=torch.long, device=self._device)
        pos = torch.arange(first_pos, first_pos + n, dtype=torch.long, device=self._device).unsqueeze(0)
        cache = {self._cache_kw: sess.cache}
        out = self._model(input_ids=inp, position_ids=pos, use_cache=True, logits_to_keep=1, **cache)
        sess.logits = out.logits[0, -1].float()
        live = sess.slots.live
        for k in range(n):
            sess.stats.record(live + k + 1, first_pos + k + 1)
        sess.ids.extend(tokens)
        sess.slots.length += n
        sess.stats.live_kv_tokens = sess.slots.live
        self._on_change()

    def _evict(self, sess: KVSession, spans: Sequence[Span], blocks: Sequence[int]) -> None:
        torch = self._torch
        for span in spans:
            a, b = sess.slots.evict(span)
            if b <= a:
                continue
            for layer in sess.cache.layers:
                layer.keys = torch.cat([layer.keys[..., :a, :], layer.keys[..., b:, :]], dim=-2)
                layer.values = torch.cat([layer.values[..., :a, :], layer.values[..., b:, :]], dim=-2)
            sess.stats.evictions += 1
            sess.stats.evicted_tokens += b - a
        sess.stats.live_kv_tokens = sess.slots.live
        self._on_change()
        if self._memento.restart_mode and blocks:
            self._restart(sess, min(sess.tracker.blocks[i].summary_start or 0 for i in blocks))

    def _restart(self, sess: KVSession, from_pos: int) -> None:
        """Recompute the KV of every live token at or after ``from_pos`` without the evicted blocks."""
        a = sess.slots.slot(from_pos)
        positions = sess.slots.kept(range(from_pos, sess.slots.length))
        if not positions:
            return
        for layer in sess.cache.layers:
            layer.keys = layer.keys[..., :a, :]
            layer.values = layer.values[..., :a, :]
        torch = self._torch
        toks = [sess.ids[p] for p in positions]
        inp = torch.tensor([toks], dtype=torch.long, device=self._device)
        pos = torch.tensor([positions], dtype=torch.long, device=self._device)
        # Positions may have gaps here (later evicted spans), so pass an explicit causal mask in slot space.
        q = len(positions)
        k = a + q
        mask = torch.zeros(1, 1, q, k, dtype=sess.logits.dtype, device=self._device)
        mask[..., a:] = torch.full((q, q), torch.finfo(mask.dtype).min, device=self._device).triu(1)
        cache = {self._cache_kw: sess.cache}
        out = self._model(
            input_ids=inp,
            position_ids=pos,
            use_cache=True,
            attention_mask=mask.to(self._model.dtype),
            logits_to_keep=1,
            **cache,
        )
        sess.logits = out.logits[0, -1].float()
        sess.stats.prefill_tokens += q
