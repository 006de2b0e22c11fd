"""The memento grammar: the single source of truth for tokens, block tracking and the attention-mask rule.

What a block is, when it ends, which tokens a memento evicts and who may attend to what: training masks, both
inference backends, the vLLM plugin and the data pipeline all replay the same :class:`BlockTracker`, so the
training mask and the inference eviction cannot drift apart. The modules, from the bottom up: the rule's tokens
and settings; the tracker; the evictions of a sequence and the :class:`SlotMap` from kept positions to cache
slots; the visibility mask; the trace shape as text.
"""

from ._mask import build_visibility, visibility_to_additive
from ._rule import (
    BLOCK_END,
    BLOCK_START,
    SPECIAL_TOKENS,
    SUMMARY_END,
    SUMMARY_START,
    MementoConfig,
    MementoTokenIds,
)
from ._slots import Eviction, SlotMap, evictions, kept_positions
from ._trace import ParsedBlock, contains_special, escape_special, format_block, parse_trace
from ._tracker import BlockRecord, BlockTracker, EventKind, Span, TrackerEvent, TrackerState

__all__ = [
    "BLOCK_END",
    "BLOCK_START",
    "SPECIAL_TOKENS",
    "SUMMARY_END",
    "SUMMARY_START",
    "BlockRecord",
    "BlockTracker",
    "EventKind",
    "Eviction",
    "MementoConfig",
    "MementoTokenIds",
    "ParsedBlock",
    "SlotMap",
    "Span",
    "TrackerEvent",
    "TrackerState",
    "build_visibility",
    "contains_special",
    "escape_special",
    "evictions",
    "format_block",
    "kept_positions",
    "parse_trace",
    "visibility_to_additive",
]
