"""Prompt parsing robustness, retries with backoff, bounded concurrency and usage accounting."""

from __future__ import annotations

import asyncio

import pytest

from autogen_ext_memento.pipeline import (
    PROMPTS,
    LLMCallError,
    LLMRunner,
    ParseError,
    Pricing,
    UsageStats,
    fill,
    load_prompt,
    parse_boundary_scores,
    parse_summaries,
    parse_verdict,
)

from ._clients import ScriptedClient


def test_boundary_scores_tolerate_decoration_and_clamp() -> None:
    text = "Here you go:\n**B3**: 2\n- B4 = 3\nB5) 7\nB6 - 0.5\nB9: 1 (extra boundary, ignored)"
    assert parse_boundary_scores(text, [3, 4, 5, 6]) == {3: 2.0, 4: 3.0, 5: 3.0, 6: 0.5}
    assert parse_boundary_scores("1\n2\n0", [1, 2, 3]) == {1: 1.0, 2: 2.0, 3: 0.0}
    with pytest.raises(ParseError, match=r"\[2\]"):
        parse_boundary_scores("B1: 1\nB3: 2", [1, 2, 3])


def test_summaries_multiline_markdown_and_missing() -> None:
    text = "**Summary 1:** x = 3; checked.\nsecond line of one\n\n### Summary 2: y = 4\nSummary 4: not wanted"
    got = parse_summaries(text, [1, 2, 3])
    assert got == {1: "x = 3; checked.\nsecond line of one", 2: "y = 4"}
    assert parse_summaries("just the memento text", [5]) == {5: "just the memento text"}
    with pytest.raises(ParseError):
        parse_summaries("nothing useful here", [1, 2])


def test_verdict_variants() -> None:
    v = parse_verdict('SCORE: 7/10\nFEEDBACK: Missing formula: "x = 2".')
    assert (v.score, v.feedback) == (7.0, 'Missing formula: "x = 2".')
    assert parse_verdict("**Score:** 8.5 / 10\n**Feedback:** fine").score == 8.5
    assert parse_verdict("I would give it 6/10 overall.").score == 6.0
    assert parse_verdict("SCORE: 12/10").score == 10.0
    with pytest.raises(ParseError):
        parse_verdict("looks good to me")


def test_prompts_are_package_data_and_fill_checks_placeholders() -> None:
    for name in PROMPTS:
        assert load_prompt(name).strip()
    assert "STATE-COMPRESSOR" in load_prompt("compress") and "RESULT FIRST" in load_prompt("compress")
    assert "SCORE: <X>/10" in load_prompt("judge")
    assert fill("a {{x}} b", x="$\\frac{1}{2}$ {y}") == "a $\\frac{1}{2}$ {y} b"
    with pytest.raises(KeyError):
        fill("{{x}} {{y}}", x=1)


@pytest.mark.asyncio
async def test_retries_transport_errors_with_growing_backoff() -> None:
    failures = iter([RuntimeError("503"), TimeoutError("slow"), None])

    def compress(system: str, user: str) -> str | BaseException:
        err = next(failures)
        return err if err is not None else "Summary 1: ok"

    client = ScriptedClient({"compress": compress})
    runner = LLMRunner(client, max_retries=3, backoff_base=0.001)
    got = await runner.ask("STATE-COMPRESSOR", "blocks", lambda t: parse_summaries(t, [1]), purpose="compress")
    assert got == {1: "ok"}
    assert (runner.usage.errors, runner.usage.retries, runner.usage.calls) == (2, 2, 1)
    d = [LLMRunner(client, backoff_base=1.0, backoff_max=30.0, seed=s)._delay(a) for s in range(5) for a in (1, 3, 6)]
    assert all(0.75 <= x <= 1.25 for x in d[0::3])
    assert all(3.0 <= x <= 5.0 for x in d[1::3])
    assert all(22.5 <= x <= 37.5 for x in d[2::3])  # capped at backoff_max (±25% jitter)


@pytest.mark.asyncio
async def test_parse_failure_retries_with_a_note_then_gives_up() -> None:
    client = ScriptedClient({"judge": lambda s, u: "no score here"})
    runner = LLMRunner(client, max_retries=2, backoff_base=0)
    with pytest.raises(LLMCallError, match="3 attempts"):
        await runner.ask("JUDGE", "memento", parse_verdict, purpose="judge")
    assert runner.usage.parse_failures == 3 and runner.usage.calls == 3
    assert "could not be used" not in client.calls[0][2]
    assert "could not be used (no 'SCORE: X/10' line)" in client.calls[1][2]


@pytest.mark.asyncio
async def test_concurrency_is_bounded_and_usage_accumulates() -> None:
    client = ScriptedClient({"judge": lambda s, u: "SCORE: 9/10\nFEEDBACK: ok"}, delay=0.01)
    usage = UsageStats()
    runner = LLMRunner(client, concurrency=3, usage=usage)
    await asyncio.gather(*(runner.ask("JUDGE", f"m {i}", parse_verdict, purpose="judge") for i in range(12)))
    assert client.max_in_flight == 3 and runner.max_in_flight == 3
    assert usage.calls == 12 and usage.by_purpose["judge"]["calls"] == 12
    assert usage.prompt_tokens == 12 * 2 and usage.completion_tokens == 12 * 4
    cost = usage.cost(Pricing(prompt_per_million=1e6, completion_per_million=2e6))
    assert cost == pytest.approx(24 * 1 + 48 * 2)
