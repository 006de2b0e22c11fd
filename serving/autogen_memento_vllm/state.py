"""Per-request memento bookkeeping: the tracker over logical tokens, pending evictions, offsets and statistics.

A :class:`MementoState` is attached (by request id) to every memento request. Its tracker is fed the request's
*logical* tokens (prompt and outputs, at logical positions); the evictions it reports are queued as
:class:`PendingEviction` until the scheduler can apply them. ``offset`` is the number of tokens evicted so far: the
request's compacted length plus ``offset`` is its logical length, and the worker adds ``offset`` to RoPE positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autogen_ext_memento.grammar import BlockTracker, EventKind, MementoConfig, SlotMap, Span, TrackerState


@dataclass
class PendingEviction:
    """An eviction reported by the tracker and not applied yet (all positions logical)."""

    spans: tuple[Span, ...]
    trigger: int
    restart_from: int | None


@dataclass
class MementoStats:
    """Per-request accounting (what the session API and the tests report)."""

    evictions: int = 0
    evicted_tokens: int = 0
    computed_tokens: int = 0
    peak_live_tokens: int = 0
    anomalies: int = 0
    forced_block_ends: int = 0
    adopted_tokens: int = 0
    adopted_logical_tokens: int = 0
    preemptions: int = 0
    swaps: int = 0
    swapped_tokens: int = 0
    rebuilt: bool = False
    length_capped: bool = False


@dataclass
class MementoState:
    """Memento bookkeeping of one request (see the module docstring)."""

    config: MementoConfig
    tracker: BlockTracker
    logical: list[int]
    prompt_logical: list[int]
    session: str | None = None
    offset: int = 0
    # The evicted logical spans and where each kept logical position sits in the compacted KV (the grammar's map).
    slots: SlotMap = field(default_factory=SlotMap)
    pending: list[PendingEviction] = field(default_factory=list)
    digest: bytes = b""
    force: dict[int, int] = field(default_factory=dict)
    stats: MementoStats = field(default_factory=MementoStats)
    snapshot: BlockTracker | None = None  # tracker before the newest (uncomputed) output token
    snapshot_pending: int = 0
    # (logical computed tokens, live KV tokens, blocks held) after each step, for tests and benchmarks.
    trace: list[tuple[int, int, int]] = field(default_factory=list)
    # Learned sawtooth shape (from the tracker, for admission): the longest block-plus-memento cycle, and over the
    # generated part up to the last completed memento, the logical tokens and how many of them were evicted.
    max_cycle: int = 0
    out_done: int = 0
    out_evicted: int = 0
    ratio_ema: float | None = None

    @property
    def evicted(self) -> list[Span]:
        """The evicted logical spans, in position order."""
        return self.slots.evicted_spans

    def compacted(self, logical_pos: int) -> int:
        """Compacted index of a logical position that is not inside an evicted span."""
        return self.slots.slot(logical_pos)

    def record_eviction(self, span: Span) -> None:
        """Record a logical span whose KV was just cut out of the compacted cache."""
        self.slots.evict(span)

    def restore_evictions(self, spans: list[Span]) -> None:
        """Take over the evicted spans of a session whose compacted KV this request adopts."""
        self.slots = SlotMap()
        for span in spans:
            self.slots.evict(span)

    def feed(self, tokens: list[int]) -> None:
        """Feed logical tokens to the tracker and queue the evictions they cause."""
        base = len(self.logical)
        self.logical.extend(tokens)
        for i, tok in enumerate(tokens):
            for ev in self.tracker.feed(tok, base + i):
                if ev.kind is EventKind.ANOMALY:
                    self.stats.anomalies += 1
                elif ev.kind is EventKind.MEMENTO_COMPLETED and ev.evict and ev.trigger is not None:
                    self._learn_cycle(ev.position, ev.block, ev.evict)
                    restart = None
                    if self.config.restart_mode and ev.evicted_blocks:
                        restart = min(self.tracker.blocks[b].summary_start or 0 for b in ev.evicted_blocks)
                    self.pending.append(PendingEviction(tuple(ev.evict), ev.trigger, restart))

    def _learn_cycle(self, position: int, block: int | None, spans: tuple[Span, ...]) -> None:
        if block is not None:
            self.max_cycle = max(self.max_cycle, position - self.tracker.blocks[block].start + 1)
        prompt_len = len(self.prompt_logical)
        if position >= prompt_len:
            done = position + 1 - prompt_len
            evicted = sum(max(0, e - max(s, prompt_len)) for s, e in spans)
            if evicted > 0 and done > self.out_done:
                # Kept share of the stretch since the previous memento, averaged over recent cycles.
                ratio = max(0.0, 1.0 - evicted / (done - self.out_done))
                self.ratio_ema = ratio if self.ratio_ema is None else 0.5 * self.ratio_ema + 0.5 * ratio
            self.out_done = done
            self.out_evicted += evicted

    def kept_ratio(self) -> float | None:
        """Share of generated tokens that stay in KV (recent cycles weigh most); ``None`` before a memento."""
        return self.ratio_ema

    def open_cycle_progress(self) -> int:
        """Logical tokens written since the open block (or the memento after it) started; 0 between blocks."""
        tr = self.tracker
        if tr.state is TrackerState.OUTSIDE or not tr.blocks:
            return 0
        return max(0, tr.last_position - tr.blocks[-1].start + 1)

    def pending_tokens(self) -> int:
        """Tokens that pending evictions will remove (all of them already fed)."""
        return sum(e - s for p in self.pending for s, e in p.spans)

    def fresh_copy(self, ids_tracker: BlockTracker) -> MementoState:
        """A state with the same rule, script and statistics and an empty tracker (``ids_tracker``), for a replay."""
        return MementoState(
            self.config,
            ids_tracker,
            [],
            self.prompt_logical,
            session=self.session,
            force=self.force,
            stats=self.stats,
        )
