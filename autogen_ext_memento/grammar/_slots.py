"""Where kept positions live: the evictions of a sequence, and the map from a kept logical position to its cache slot.

A cache computed at logical positions ``0, 1, …`` and then cut by evictions holds every kept position in a
*slot*: the position minus the evicted positions before it. :class:`SlotMap` is that map, shared by the backends
and the vLLM plugin's scheduler, so "which slots does this span free" has one answer.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from ._rule import MementoConfig, MementoTokenIds
from ._tracker import BlockTracker, EventKind, Span


@dataclass(frozen=True)
class Eviction:
    """A span hidden from every query at a position greater than ``trigger``."""

    span: Span
    trigger: int


def evictions(
    token_ids: Sequence[int],
    ids: MementoTokenIds,
    config: MementoConfig,
    positions: Sequence[int] | None = None,
) -> list[Eviction]:
    """Replay the tracker over a whole sequence and return every eviction with its trigger position."""
    tracker = BlockTracker(ids, config)
    out: list[Eviction] = []
    for ev in tracker.feed_many(token_ids, positions):
        if ev.kind is EventKind.MEMENTO_COMPLETED and ev.trigger is not None:
            out.extend(Eviction(span, ev.trigger) for span in ev.evict)
    return out


@dataclass
class SlotMap:
    """The cache slot of each kept logical position of one sequence, as evictions cut the cache.

    ``length`` counts the logical positions computed so far (``0 … length-1``); the evicted spans are disjoint.
    The slot of a kept position is the position minus the evicted positions before it; an evicted position maps
    to the slot of the first kept position after it (where its span was cut out).
    """

    length: int = 0
    _spans: list[Span] = field(default_factory=list)
    _starts: list[int] = field(default_factory=list)
    # Evicted positions before each span of ``_spans`` (prefix sums), so a lookup is one bisection.
    _before: list[int] = field(default_factory=list)

    @property
    def evicted_spans(self) -> list[Span]:
        """The evicted spans, in position order."""
        return list(self._spans)

    @property
    def evicted_tokens(self) -> int:
        """How many computed positions were evicted."""
        return self._before[-1] + self._spans[-1][1] - self._spans[-1][0] if self._spans else 0

    @property
    def live(self) -> int:
        """Slots in use: the kept positions among the computed ones."""
        return self.length - self.evicted_tokens

    def _last_span_at(self, position: int) -> int:
        """Index of the last evicted span starting at or before ``position`` (-1 if none)."""
        return bisect_right(self._starts, position) - 1

    def slot(self, position: int) -> int:
        """The cache slot of ``position`` (for an evicted position, the slot where its span was cut out)."""
        i = self._last_span_at(position)
        if i < 0:
            return position
        s, e = self._spans[i]
        return position - self._before[i] - (min(e, position) - s)

    def is_kept(self, position: int) -> bool:
        """Whether ``position`` lies outside every evicted span."""
        i = self._last_span_at(position)
        return i < 0 or position >= self._spans[i][1]

    def kept(self, positions: Iterable[int] | None = None) -> list[int]:
        """The kept ones among ``positions`` (default: every computed position), in order: one per live slot."""
        return [p for p in (range(self.length) if positions is None else positions) if self.is_kept(p)]

    def evict(self, span: Span) -> tuple[int, int]:
        """Record ``span`` as evicted and return the half-open slot range ``[a, b)`` it frees (empty if nothing)."""
        a, b = self.slot(span[0]), self.slot(span[1])
        if b > a:
            insort(self._spans, span)
            self._starts = [s for s, _ in self._spans]
            self._before = list(accumulate((e - s for s, e in self._spans[:-1]), initial=0))
        return a, b


def kept_positions(
    token_ids: Sequence[int],
    ids: MementoTokenIds,
    config: MementoConfig,
    positions: Sequence[int] | None = None,
) -> list[int]:
    """Positions still live after the whole sequence has been processed (what a backend's cache holds)."""
    pos = list(range(len(token_ids))) if positions is None else list(positions)
    slots = SlotMap(len(pos))
    for ev in evictions(token_ids, ids, config, pos):
        slots.evict(ev.span)
    return slots.kept(pos)
