"""The pipeline's roles played by a chat model: prompts rendered from the structured request, answers parsed back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._llm import LLMRunner, UsageStats
from ._prompts import Verdict, fill, load_prompt, parse_boundary_scores, parse_summaries, parse_verdict
from ._roles import JudgedMemento


def cut_text(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= n else text[: n - 1] + "\u2026"


class LLMRoles:
    """Boundary scorer, memento compressor and judge in one: each call is one prompt to the runner's client.

    Args:
        runner: sends the prompts (concurrency, retries, usage).
        unit_prompt_chars: units are cut to this many characters in scoring prompts.
    """

    def __init__(self, runner: LLMRunner, unit_prompt_chars: int = 600) -> None:
        self.runner = runner
        self.unit_prompt_chars = unit_prompt_chars

    async def score(
        self, problem: str, units: Mapping[int, str], boundaries: Sequence[int], usage: UsageStats
    ) -> dict[int, float]:
        """Scores from one ``boundary_score`` prompt listing ``units``."""
        listing = "\n".join(f"[{i}] {cut_text(units[i], self.unit_prompt_chars)}" for i in sorted(units))
        user = fill(
            load_prompt("boundary_score_user"),
            problem=problem,
            units=listing,
            boundaries=", ".join(f"B{i}" for i in boundaries),
        )
        wanted = list(boundaries)
        parse = lambda t: parse_boundary_scores(t, wanted)  # noqa: E731
        return await self.runner.ask(load_prompt("boundary_score"), user, parse, purpose="score", also=usage)

    async def compress(self, problem: str, blocks: Mapping[int, str], usage: UsageStats) -> dict[int, str]:
        """Mementos from one ``compress`` prompt holding every block."""
        wanted = sorted(blocks)
        user = fill(
            load_prompt("compress_user"),
            problem=problem,
            blocks="\n\n".join(f"BEGIN BLOCK {i}\n{blocks[i]}\nEND BLOCK {i}" for i in wanted),
            indices=", ".join(map(str, wanted)),
        )
        parse = lambda t: parse_summaries(t, wanted)  # noqa: E731
        return await self.runner.ask(load_prompt("compress"), user, parse, purpose="compress", also=usage)

    async def rewrite(self, problem: str, index: int, block: str, judged: JudgedMemento, usage: UsageStats) -> str:
        """The memento from one ``rewrite_user`` prompt quoting the judge."""
        user = fill(
            load_prompt("rewrite_user"),
            problem=problem,
            index=index,
            block=block,
            memento=judged.memento,
            score=f"{judged.verdict.score:g}",
            feedback=judged.verdict.feedback or "(none)",
        )
        parse = lambda t: parse_summaries(t, [index])  # noqa: E731
        got = await self.runner.ask(load_prompt("compress"), user, parse, purpose="rewrite", also=usage)
        return got[index]

    async def judge(self, problem: str, block: str, memento: str, usage: UsageStats) -> Verdict:
        """The verdict from one ``judge`` prompt."""
        user = fill(load_prompt("judge_user"), problem=problem, block=block, memento=memento)
        return await self.runner.ask(load_prompt("judge"), user, parse_verdict, purpose="judge", also=usage)
