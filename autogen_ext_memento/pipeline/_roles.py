"""The pipeline's three roles as interfaces over structured blocks: boundary scorer, memento compressor and judge.

Blocks and units are numbered from 1 in the order of the sample. :class:`~autogen_ext_memento.pipeline.LLMRoles`
plays every role with a chat model (prompts rendered from the structure, answers parsed back);
:class:`~autogen_ext_memento.pipeline.HeuristicRoles` plays them by rules on the same structure, with no prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._llm import UsageStats
from ._prompts import Verdict


@dataclass(frozen=True)
class JudgedMemento:
    """A memento with the judge's verdict on it (what a rewrite corrects)."""

    memento: str
    verdict: Verdict


class BoundaryScorer(Protocol):
    """Scores the boundaries between consecutive units: 0 (never cut here) to 3 (a natural cut)."""

    async def score(
        self, problem: str, units: Mapping[int, str], boundaries: Sequence[int], usage: UsageStats
    ) -> dict[int, float]:
        """A score for each boundary ``i`` of ``boundaries`` (between units ``i`` and ``i + 1`` of ``units``)."""
        ...


class MementoCompressor(Protocol):
    """Writes the memento of a block: what the reasoning keeps once the block is evicted."""

    async def compress(self, problem: str, blocks: Mapping[int, str], usage: UsageStats) -> dict[int, str]:
        """Mementos of ``blocks`` by block number (a block it could not write is left out)."""
        ...

    async def rewrite(self, problem: str, index: int, block: str, judged: JudgedMemento, usage: UsageStats) -> str:
        """The memento of block ``index`` rewritten with the judge's feedback."""
        ...


class MementoJudge(Protocol):
    """Scores a memento against its block out of 10, with feedback a rewrite can apply."""

    async def judge(self, problem: str, block: str, memento: str, usage: UsageStats) -> Verdict:
        """The verdict on ``memento`` as the replacement of ``block``."""
        ...
