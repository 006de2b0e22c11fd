"""What compaction may do and what it reports: the policy, one view's stats and the events it logs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from autogen_core import EVENT_LOGGER_NAME
from pydantic import BaseModel, Field

from .._events import _Event
from ._blocks import Block


class CompactionPolicy(BaseModel):
    """When blocks are compacted and how far.

    Args:
        keep_last_n_blocks: closed blocks kept whole after the newest (the open block is always kept).
        trigger: ``"block"`` compacts after each completed block; ``"tokens"`` only over ``token_limit``.
        token_limit: the view's token budget (required for ``trigger="tokens"``); enables the hard fallback.
        low_watermark: with ``trigger="tokens"``, compact down to this fraction of ``token_limit``.
        pin_first_blocks: leading blocks never compacted by the soft policy (the task statement), counted after
            the leading system messages (which are never compacted at all).
        max_llm_mementos_per_call: at most this many mementos per view from a writer that calls a model; the rest
            are masked, so a long history loaded over the limit costs a bounded number of calls.
    """

    keep_last_n_blocks: int = Field(default=2, ge=0)
    trigger: Literal["block", "tokens"] = "block"
    token_limit: int | None = Field(default=None, ge=1)
    low_watermark: float = Field(default=0.7, gt=0.0, le=1.0)
    pin_first_blocks: int = Field(default=1, ge=0)
    max_llm_mementos_per_call: int = Field(default=16, ge=0)

    def model_post_init(self, __context: object) -> None:
        if self.trigger == "tokens" and self.token_limit is None:
            raise ValueError('trigger="tokens" needs a token_limit')


@dataclass
class ViewStats:
    """What one view cost: tokens of the uncompacted history (``full``) and as shown (``view``), and how it was built.

    ``view`` includes the digest and the memory message; ``full`` is the history alone, as an unbounded context
    would send it.
    """

    full_tokens: int
    view_tokens: int
    blocks: int
    compacted_blocks: int
    digest_lines: int
    omitted_mementos: int
    truncated_blocks: int
    hard: bool
    newly_compacted: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return dict(vars(self))


class MementoCompactionEvent(_Event):
    """A view compacted blocks (or took the hard path): tokens before/after and how, for per-compaction metrics."""


class MementoSystemOverBudgetEvent(_Event):
    """The leading system messages alone exceed ``token_limit``: they are kept whole, so views exceed the limit."""


def leading_system_blocks(blocks: Sequence[Block]) -> int:
    """How many blocks at the start are system messages (the system prompt, never compacted or truncated)."""
    n = 0
    while n < len(blocks) and blocks[n].kind == "system":
        n += 1
    return n


def log_compaction(scope: str, stats: ViewStats) -> None:
    """Log a :class:`MementoCompactionEvent` on AutoGen's event logger when ``stats`` shows a compaction."""
    if stats.newly_compacted or stats.hard:
        logging.getLogger(EVENT_LOGGER_NAME).info(MementoCompactionEvent(scope=scope, **stats.as_dict()))
