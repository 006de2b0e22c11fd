"""The compressor + judge loop: termination, feedback use, pass rates per round, best-memento choice."""

from __future__ import annotations

import re

import pytest

from autogen_ext_memento.pipeline import AnnotationPipeline, PipelineConfig, summarize_records

from ._clients import ScriptedClient

BLOCKS = ["Block one: we find x = 2 by factoring.", "Block two: y = 7 from substitution.", "Block three: z = 1."]


def compress_all(system: str, user: str) -> str:
    idx = [int(i) for i in re.findall(r"BEGIN BLOCK (\d+)", user)]
    return "\n".join(f"Summary {i}: draft {i}" for i in idx)


def rewrite_using_feedback(system: str, user: str) -> str:
    i = re.search(r"BEGIN BLOCK (\d+)", user)
    assert i is not None
    fix = re.search(r"add (\S+)", user)
    return f"Summary {i.group(1)}: draft {i.group(1)} {fix.group(1) if fix else 'unchanged'}"


def judge_needs_fix(system: str, user: str) -> str:
    memento = user.split("BEGIN MEMENTO\n", 1)[1].split("\nEND MEMENTO", 1)[0]
    n = memento.split()[1]
    if f"FIX-{n}" in memento:
        return "SCORE: 9/10\nFEEDBACK: good"
    return f"SCORE: 5/10\nFEEDBACK: add FIX-{n} verbatim"


def pipeline(client: ScriptedClient, **cfg: object) -> AnnotationPipeline:
    return AnnotationPipeline(client, PipelineConfig(backoff_base=0, **cfg))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_feedback_is_used_and_second_round_passes() -> None:
    client = ScriptedClient({"compress": compress_all, "rewrite": rewrite_using_feedback, "judge": judge_needs_fix})
    kept, rounds = await pipeline(client).compress_blocks("p", BLOCKS)
    assert kept == ["draft 1 FIX-1", "draft 2 FIX-2", "draft 3 FIX-3"]
    assert [[r["score"] for r in rs] for rs in rounds] == [[5.0, 9.0]] * 3
    assert client.count("compress") == 1 and client.count("rewrite") == 3 and client.count("judge") == 6
    # The rewrite prompt carries the judge's feedback, the previous memento and its score.
    rewrite_prompts = [u for k, _, u in client.calls if k == "rewrite"]
    assert all("add FIX-" in u and "scored it 5/10" in u and "draft" in u for u in rewrite_prompts)
    rec = {
        "blocks": [[0, 0]] * 3,
        "block_tokens": [9, 7, 4],
        "summary_tokens": [3, 3, 3],
        "judge_rounds": rounds,
        "judge_scores": [9.0] * 3,
    }
    assert summarize_records([rec])["pass_rate_by_round"] == [0.0, 1.0]


@pytest.mark.asyncio
async def test_loop_stops_after_t_rounds_and_keeps_the_best_memento() -> None:
    scores = iter([4, 7, 6] * 3)

    def judge(system: str, user: str) -> str:
        return f"SCORE: {next(scores)}/10\nFEEDBACK: add MORE"

    counter = iter(range(100))

    def rewrite(system: str, user: str) -> str:
        i = re.search(r"BEGIN BLOCK (\d+)", user)
        assert i is not None
        return f"Summary {i.group(1)}: version {next(counter)}"

    client = ScriptedClient({"compress": compress_all, "rewrite": rewrite, "judge": judge})
    kept, rounds = await pipeline(client, rounds=3).compress_blocks("p", BLOCKS[:1])
    assert [r["round"] for r in rounds[0]] == [1, 2, 3]
    assert [r["score"] for r in rounds[0]] == [4.0, 7.0, 6.0]
    assert kept == [rounds[0][1]["memento"]]  # never passed τ = 8: the best-scoring version is kept
    assert client.count("judge") == 3 and client.count("rewrite") == 2


@pytest.mark.asyncio
async def test_all_pass_first_round_means_no_rewrites() -> None:
    client = ScriptedClient({"compress": compress_all, "judge": lambda s, u: "SCORE: 8/10\nFEEDBACK: ok"})
    kept, rounds = await pipeline(client).compress_blocks("p", BLOCKS)
    assert kept == ["draft 1", "draft 2", "draft 3"]
    assert all(len(rs) == 1 for rs in rounds)
    assert client.count("rewrite") == 0


@pytest.mark.asyncio
async def test_blocks_missing_from_the_batch_answer_are_asked_for_one_by_one() -> None:
    def lazy(system: str, user: str) -> str:
        idx = [int(i) for i in re.findall(r"BEGIN BLOCK (\d+)", user)]
        return f"Summary {idx[0]}: only the first"

    client = ScriptedClient({"compress": lazy, "judge": lambda s, u: "SCORE: 9/10\nFEEDBACK: ok"})
    kept, _ = await pipeline(client).compress_blocks("p", BLOCKS)
    assert kept == ["only the first"] * 3
    assert client.count("compress") == 3  # one batch call, then blocks 2 and 3 alone


@pytest.mark.asyncio
async def test_heuristic_judge_loop_raises_pass_rate_with_feedback() -> None:
    block = (
        "Start with the quadratic. So x^2 - 5x + 6 = (x - 2)(x - 3). Its roots are x = 2 and x = 3. "
        "Let me double-check by expanding: (x - 2)(x - 3) = x^2 - 5x + 6. Good, that matches, so we factor it. "
        "Now the cubic p(x) = x^3 - 6x^2 + 11x - 6 has p(1) = 1 - 6 + 11 - 6 = 0, so x = 1 is a root too."
    )
    client = ScriptedClient()
    kept, rounds = await pipeline(client).compress_blocks("Find the common roots.", [block])
    assert rounds[0][0]["score"] < 8 <= rounds[0][-1]["score"]
    missing = re.findall(r'Missing (?:formula|value|method|validation): "([^"]+)"', rounds[0][0]["feedback"])
    assert missing and all(m in kept[0] for m in missing)
