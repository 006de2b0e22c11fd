"""The block tracker: the incremental token → block/memento state machine every consumer replays.

Training masks, both inference backends, the vLLM plugin and the data pipeline all drive this tracker; the mask
builder (:func:`~autogen_ext_memento.grammar.build_visibility`) *replays* it and hides exactly the spans it would
have evicted, from exactly the positions after which a backend evicts them.

Trace shape (one block)::

    <|block_start|> work ... <|block_end|> <|summary_start|> memento ... <|summary_end|>

State machine (``OUTSIDE`` → ``IN_BLOCK`` → ``AFTER_BLOCK`` → ``IN_MEMENTO`` → ``OUTSIDE``). Malformed input
never raises; it is resolved deterministically and reported as an :class:`EventKind.ANOMALY` event:

==============================  ==============================================================================
input                           resolution
==============================  ==============================================================================
``block_end`` with no block     ``stray_block_end``: the token is ordinary visible text.
``block_start`` inside a block  ``nested_block_start``: treated as content of the open block (no nesting).
``summary_start`` in a block    ``summary_without_block_end``: the block is closed implicitly just before the
                                ``summary_start`` and the memento belongs to it.
``summary_start`` with no block ``orphan_memento``: the memento is tracked but evicts nothing.
``block_start`` after a closed  ``block_without_memento``: the closed block never gets a memento and therefore
block with no memento           stays visible forever (evicting it would lose its content).
``block_start`` in a memento    ``unterminated_memento``: the memento is completed implicitly just before the
                                new block (eviction applies to that ``block_start`` already).
``summary_start`` in a memento  ``nested_summary_start``: treated as memento text.
``summary_end`` outside one     ``stray_summary_end``: ordinary visible text.
block longer than the cap       ``runaway_block`` (reported once per block). Backends enforce the cap while
                                sampling by forcing ``<|block_end|>`` (see :attr:`BlockTracker.must_close_block`);
                                text fed past the cap (e.g. in a prompt) is accepted as is.
==============================  ==============================================================================

Positions fed to the tracker must strictly increase; a violation is a programming error and raises
:class:`ValueError` (the only exception the tracker raises).

Timing rule (shared by masks and backends): an eviction event carries ``trigger``; the evicted keys are visible to
queries at positions ``<= trigger`` and invisible to every query at a position ``> trigger``. So the
``<|summary_end|>`` token itself still attends to its block (its KV is computed while the block is visible) and
every later token does not. A backend applies an eviction after the forward pass that contains ``trigger`` and
before the forward pass of any later token.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._rule import MementoConfig, MementoTokenIds


class TrackerState(enum.Enum):
    OUTSIDE = "outside"
    IN_BLOCK = "in_block"
    AFTER_BLOCK = "after_block"
    IN_MEMENTO = "in_memento"


class EventKind(enum.Enum):
    BLOCK_OPENED = "block_opened"
    BLOCK_CLOSED = "block_closed"
    MEMENTO_STARTED = "memento_started"
    MEMENTO_COMPLETED = "memento_completed"
    ANOMALY = "anomaly"


Span = tuple[int, int]
"""A half-open range ``[start, end)`` of logical positions."""


@dataclass(frozen=True)
class TrackerEvent:
    """Something the tracker observed at ``position``.

    For ``MEMENTO_COMPLETED`` events, ``evict`` lists the spans to evict now (possibly of earlier blocks when
    ``keep_last_n_blocks > 0``; empty when nothing is evicted), ``trigger`` is the last position allowed to see
    them and ``memento`` is the memento's own span (``<|summary_start|>`` .. ``<|summary_end|>`` inclusive).
    """

    kind: EventKind
    position: int
    block: int | None = None
    evict: tuple[Span, ...] = ()
    trigger: int | None = None
    memento: Span | None = None
    evicted_blocks: tuple[int, ...] = ()
    detail: str = ""


@dataclass
class BlockRecord:
    """One block as tracked: positions of its delimiters and memento, and whether it was evicted."""

    index: int
    start: int
    end: int | None = None
    end_is_token: bool = False
    summary_start: int | None = None
    summary_end: int | None = None
    content_tokens: int = 0
    evicted: bool = False
    evicted_span: Span | None = None
    runaway: bool = False

    def eviction_span(self, mask_delimiters: bool) -> Span | None:
        """The span this block frees once its memento completes (``None`` if it is empty or not closed)."""
        if self.end is None:
            return None
        if mask_delimiters:
            span = (self.start, self.end + 1 if self.end_is_token else self.end)
        else:
            span = (self.start + 1, self.end)
        return span if span[1] > span[0] else None


@dataclass
class BlockTracker:
    """Incremental token → block/memento state machine.

    Feed it the token ids of a sequence with their absolute (logical) positions, in order; it returns the events
    each token causes. It never raises on malformed streams (see the module docstring for the resolutions).

    Example:

    .. code-block:: python

        from autogen_ext_memento.grammar import BlockTracker, MementoConfig, MementoTokenIds, EventKind

        ids = MementoTokenIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
        tracker = BlockTracker(ids, MementoConfig())
        events = tracker.feed_many([9, 1, 7, 7, 2, 3, 8, 4, 9])
        done = [e for e in events if e.kind is EventKind.MEMENTO_COMPLETED]
        assert done[0].evict == ((2, 4),) and done[0].trigger == 7
    """

    ids: MementoTokenIds
    config: MementoConfig = field(default_factory=MementoConfig)
    state: TrackerState = TrackerState.OUTSIDE
    blocks: list[BlockRecord] = field(default_factory=list)
    anomalies: list[TrackerEvent] = field(default_factory=list)
    last_position: int = -1
    _memento_block: int | None = None
    _memento_start: int | None = None

    # --- queries ---------------------------------------------------------------------------------------------
    @property
    def open_block(self) -> BlockRecord | None:
        """The block currently being written, if any."""
        return self.blocks[-1] if self.state is TrackerState.IN_BLOCK else None

    @property
    def must_close_block(self) -> bool:
        """True when the next sampled token must be ``<|block_end|>`` (the block reached ``max_block_tokens``)."""
        cap = self.config.max_block_tokens
        blk = self.open_block
        return cap is not None and blk is not None and blk.content_tokens >= cap

    @property
    def evicted_spans(self) -> list[Span]:
        """Every span evicted so far, in order."""
        return [b.evicted_span for b in self.blocks if b.evicted_span is not None]

    @property
    def pending_memento(self) -> bool:
        """True while a closed block waits for (or is writing) its memento."""
        if self.state is TrackerState.IN_MEMENTO:
            return self._memento_block is not None
        return self.state is TrackerState.AFTER_BLOCK

    # --- feeding ---------------------------------------------------------------------------------------------
    def feed(self, token_id: int, position: int | None = None) -> list[TrackerEvent]:
        """Process one token at ``position`` (default: the position after the last one fed)."""
        pos = self.last_position + 1 if position is None else position
        if pos <= self.last_position:
            raise ValueError(f"positions must strictly increase: got {pos} after {self.last_position}")
        self.last_position = pos
        ids = self.ids
        events: list[TrackerEvent] = []
        st = self.state
        if st is TrackerState.OUTSIDE:
            if token_id == ids.block_start:
                self._open(pos, events)
            elif token_id == ids.summary_start:
                self._anomaly(events, pos, "orphan_memento", "memento with no block: nothing will be evicted")
                self._start_memento(None, pos, events)
            elif token_id == ids.block_end:
                self._anomaly(events, pos, "stray_block_end", "block end with no open block")
            elif token_id == ids.summary_end:
                self._anomaly(events, pos, "stray_summary_end", "memento end with no memento")
        elif st is TrackerState.IN_BLOCK:
            blk = self.blocks[-1]
            if token_id == ids.block_end:
                blk.end, blk.end_is_token = pos, True
                self.state = TrackerState.AFTER_BLOCK
                events.append(TrackerEvent(EventKind.BLOCK_CLOSED, pos, blk.index))
            elif token_id == ids.summary_start:
                self._anomaly(events, pos, "summary_without_block_end", "block closed implicitly by its memento")
                blk.end, blk.end_is_token = pos, False
                events.append(TrackerEvent(EventKind.BLOCK_CLOSED, pos, blk.index, detail="implicit"))
                self._start_memento(blk.index, pos, events)
            else:
                if token_id == ids.block_start:
                    self._anomaly(events, pos, "nested_block_start", "nested block start treated as content")
                elif token_id == ids.summary_end:
                    self._anomaly(events, pos, "stray_summary_end", "memento end inside a block")
                blk.content_tokens += 1
                cap = self.config.max_block_tokens
                if cap is not None and blk.content_tokens > cap and not blk.runaway:
                    blk.runaway = True
                    self._anomaly(events, pos, "runaway_block", f"block {blk.index} exceeds {cap} tokens")
        elif st is TrackerState.AFTER_BLOCK:
            if token_id == ids.summary_start:
                self._start_memento(self.blocks[-1].index, pos, events)
            elif token_id == ids.block_start:
                self._anomaly(
                    events, pos, "block_without_memento", f"block {self.blocks[-1].index} kept visible: no memento"
                )
                self._open(pos, events)
            elif token_id == ids.block_end:
                self._anomaly(events, pos, "stray_block_end", "second block end")
            elif token_id == ids.summary_end:
                self._anomaly(events, pos, "stray_summary_end", "memento end before memento start")
        else:  # IN_MEMENTO
            if token_id == ids.summary_end:
                self._complete_memento(pos, pos, events)
            elif token_id == ids.block_start:
                self._anomaly(events, pos, "unterminated_memento", "memento completed implicitly by a new block")
                self._complete_memento(pos - 1, pos - 1, events)
                self._open(pos, events)
            elif token_id == ids.summary_start:
                self._anomaly(events, pos, "nested_summary_start", "treated as memento text")
            elif token_id == ids.block_end:
                self._anomaly(events, pos, "stray_block_end", "block end inside a memento")
        return events

    def feed_many(self, token_ids: Iterable[int], positions: Iterable[int] | None = None) -> list[TrackerEvent]:
        """Feed several tokens; positions default to consecutive ones after the last fed."""
        out: list[TrackerEvent] = []
        if positions is None:
            for t in token_ids:
                out.extend(self.feed(t))
        else:
            for t, p in zip(token_ids, positions, strict=True):
                out.extend(self.feed(t, p))
        return out

    # --- transitions -----------------------------------------------------------------------------------------
    def _anomaly(self, events: list[TrackerEvent], pos: int, kind: str, detail: str) -> None:
        ev = TrackerEvent(EventKind.ANOMALY, pos, detail=f"{kind}: {detail}")
        self.anomalies.append(ev)
        events.append(ev)

    def _open(self, pos: int, events: list[TrackerEvent]) -> None:
        blk = BlockRecord(index=len(self.blocks), start=pos)
        self.blocks.append(blk)
        self.state = TrackerState.IN_BLOCK
        events.append(TrackerEvent(EventKind.BLOCK_OPENED, pos, blk.index))

    def _start_memento(self, block: int | None, pos: int, events: list[TrackerEvent]) -> None:
        self._memento_block, self._memento_start = block, pos
        if block is not None:
            self.blocks[block].summary_start = pos
        self.state = TrackerState.IN_MEMENTO
        events.append(TrackerEvent(EventKind.MEMENTO_STARTED, pos, block))

    def _complete_memento(self, end: int, trigger: int, events: list[TrackerEvent]) -> None:
        block, start = self._memento_block, self._memento_start
        self._memento_block = self._memento_start = None
        self.state = TrackerState.OUTSIDE
        assert start is not None
        memento: Span = (start, max(end, start) + 1)
        if block is None:
            events.append(TrackerEvent(EventKind.MEMENTO_COMPLETED, end, None, (), trigger, memento, detail="orphan"))
            return
        self.blocks[block].summary_end = end
        evict: list[Span] = []
        evicted: list[int] = []
        keep = self.config.keep_last_n_blocks
        if keep >= 0:
            done = [b for b in self.blocks if b.summary_end is not None and not b.evicted]
            for b in done[: len(done) - keep]:
                b.evicted = True
                b.evicted_span = b.eviction_span(self.config.mask_delimiters)
                if b.evicted_span is not None:
                    evict.append(b.evicted_span)
                    evicted.append(b.index)
        events.append(
            TrackerEvent(EventKind.MEMENTO_COMPLETED, end, block, tuple(evict), trigger, memento, tuple(evicted))
        )

    # --- state -----------------------------------------------------------------------------------------------
    def copy(self) -> BlockTracker:
        """An independent copy (for look-ahead or rollback)."""
        clone = BlockTracker(self.ids, self.config, self.state, [], list(self.anomalies), self.last_position)
        clone.blocks = [BlockRecord(**vars(b)) for b in self.blocks]
        clone._memento_block, clone._memento_start = self._memento_block, self._memento_start
        return clone
