"""The annotation stages of one sample: boundary scores (windowed, one or two passes), mementos and the judge loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ._config import PipelineConfig
from ._llm import UsageStats
from ._llm_roles import cut_text
from ._prompts import Verdict
from ._roles import BoundaryScorer, JudgedMemento, MementoCompressor, MementoJudge
from ._split import TokenCounter


def score_windows(n_units: int, size: int) -> list[tuple[int, int]]:
    """Windows ``[a, b)`` of at most ``size`` units overlapping by one unit, so each boundary is in exactly one."""
    if n_units < 2:
        return []
    out: list[tuple[int, int]] = []
    a = 0
    while a < n_units - 1:
        b = min(a + size, n_units)
        out.append((a, b))
        a = b - 1
    return out


def token_batches(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive indices grouped greedily so each group's sizes sum to at most ``limit`` (an oversized item alone)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i, size in enumerate(sizes):
        if cur and total + size > limit:
            groups.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += size
    if cur:
        groups.append(cur)
    return groups


class AnnotationStages:
    """Boundary scoring and memento writing with the judge loop, played by the given roles.

    Args:
        config: windows, passes, batch sizes, the judge's threshold and rounds.
        count_tokens: the token counter of batches and records.
        scorer, compressor, judge: the roles (:class:`LLMRoles`, :class:`HeuristicRoles` or any implementation).
    """

    def __init__(
        self,
        config: PipelineConfig,
        count_tokens: TokenCounter,
        scorer: BoundaryScorer,
        compressor: MementoCompressor,
        judge: MementoJudge,
    ) -> None:
        self.config = config
        self.count_tokens = count_tokens
        self.scorer, self.compressor, self.judge = scorer, compressor, judge

    def _problem(self, problem: str) -> str:
        return cut_text(problem, self.config.problem_prompt_chars) if self.config.problem_prompt_chars else ""

    async def _score_pass(self, units: Sequence[str], problem: str, size: int, usage: UsageStats) -> list[float]:

        async def one(a: int, b: int) -> dict[int, float]:
            window = {i + 1: units[i] for i in range(a, b)}  # numbered from 1
            return await self.scorer.score(problem, window, list(range(a + 1, b)), usage)

        parts = await asyncio.gather(*(one(a, b) for a, b in score_windows(len(units), size)))
        merged: dict[int, float] = {}
        for p in parts:
            merged.update(p)
        return [merged[i] for i in range(1, len(units))]

    async def score_boundaries(
        self, units: Sequence[str], problem: str, usage: UsageStats | None = None
    ) -> list[float]:
        """One score in 0–3 per boundary between consecutive units (two passes averaged if configured)."""
        u = usage if usage is not None else UsageStats()
        if len(units) < 2:
            return []
        p = self._problem(problem)
        passes = [self._score_pass(units, p, self.config.window, u)]
        if self.config.two_pass and self.config.second_window:
            passes.append(self._score_pass(units, p, self.config.second_window, u))
        results = await asyncio.gather(*passes)
        return [sum(vals) / len(vals) for vals in zip(*results, strict=True)]

    async def compress_blocks(
        self, problem: str, blocks: Sequence[str], usage: UsageStats | None = None
    ) -> tuple[list[str], list[list[dict[str, Any]]]]:
        """Mementos for ``blocks`` with the judge loop; returns the kept mementos and every round's record."""
        u = usage if usage is not None else UsageStats()
        if not blocks:
            return [], []
        p = self._problem(problem)
        drafts = await self._draft_mementos(p, blocks, u)
        rounds = await self._judge_loop(p, blocks, drafts, u)
        kept = []
        for record in rounds:
            best = max(range(len(record)), key=lambda k: (record[k]["score"], k))
            kept.append(str(record[best]["memento"]))
        return kept, rounds

    async def _compress(self, p: str, blocks: Sequence[str], idx: Sequence[int], u: UsageStats) -> dict[int, str]:
        """One compressor call for the blocks ``idx`` (0-based); returns the mementos it parsed, by index."""
        got = await self.compressor.compress(p, {i + 1: blocks[i] for i in idx}, u)
        return {i - 1: s for i, s in got.items()}

    async def _draft_mementos(self, p: str, blocks: Sequence[str], u: UsageStats) -> dict[int, str]:
        """First drafts: blocks batched up to ``compress_batch_tokens``, then one call per block a batch missed."""
        groups = token_batches([self.count_tokens(b) for b in blocks], self.config.compress_batch_tokens)
        mementos: dict[int, str] = {}
        for got in await asyncio.gather(*(self._compress(p, blocks, g, u) for g in groups)):
            mementos.update(got)
        missing = [i for i in range(len(blocks)) if i not in mementos]
        for got in await asyncio.gather(*(self._compress(p, blocks, [i], u) for i in missing)):
            mementos.update(got)
        return mementos

    async def _judge_loop(
        self, p: str, blocks: Sequence[str], drafts: Mapping[int, str], u: UsageStats
    ) -> list[list[dict[str, Any]]]:
        """Judge every memento; rewrite the ones scored under ``tau`` with the feedback, for ``rounds`` rounds."""
        cfg = self.config

        async def judge(i: int, memento: str) -> Verdict:
            return await self.judge.judge(p, blocks[i], memento, u)

        async def rewrite(i: int, last: Mapping[str, Any]) -> str:
            judged = JudgedMemento(last["memento"], Verdict(last["score"], last["feedback"]))
            return await self.compressor.rewrite(p, i + 1, blocks[i], judged, u)

        rounds: list[list[dict[str, Any]]] = [[] for _ in blocks]
        pending = list(range(len(blocks)))
        current = dict(drafts)
        for r in range(1, cfg.rounds + 1):
            if r > 1:
                new = await asyncio.gather(*(rewrite(i, rounds[i][-1]) for i in pending))
                current.update(zip(pending, new, strict=True))
            verdicts = await asyncio.gather(*(judge(i, current[i]) for i in pending))
            for i, v in zip(pending, verdicts, strict=True):
                record = {"round": r, "score": v.score, "feedback": v.feedback, "memento": current[i]}
                rounds[i].append({**record, "tokens": self.count_tokens(current[i])})
            pending = [i for i, v in zip(pending, verdicts, strict=True) if v.score < cfg.tau]
            if not pending:
                break
        return rounds
