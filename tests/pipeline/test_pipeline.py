"""End-to-end reasoning annotation, the output schema, resume after an interruption, failures, summaries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from autogen_ext_memento.grammar import escape_special, parse_trace
from autogen_ext_memento.pipeline import (
    SAMPLE_REASONING,
    AnnotationPipeline,
    HeuristicChatCompletionClient,
    HeuristicRoles,
    LLMCallError,
    PipelineConfig,
    ReasoningSample,
    load_reasoning_inputs,
    read_done_ids,
    read_records,
    score_windows,
    summarize_records,
)
from autogen_ext_memento.pipeline._samples import sample_path

from ._clients import ScriptedClient

CFG = {"min_block_tokens": 150, "backoff_base": 0.0}


def samples() -> list[ReasoningSample]:
    return load_reasoning_inputs(sample_path(SAMPLE_REASONING))


def test_score_windows_cover_each_boundary_once() -> None:
    for n in (0, 1, 2, 16, 17, 40):
        for size in (16, 11, 2):
            covered = [b for a, e in score_windows(n, size) for b in range(a, e - 1)]
            assert covered == list(range(n - 1)), (n, size)
            assert all(e - a <= size for a, e in score_windows(n, size))


@pytest.mark.asyncio
async def test_reasoning_record_schema_and_trace() -> None:
    sample = samples()[0]
    client = ScriptedClient()
    pipe = AnnotationPipeline(client, PipelineConfig(two_pass=True, **CFG))  # type: ignore[arg-type]
    rec = await pipe.annotate_reasoning(sample)
    n = len(rec["sentences"])
    assert len(rec["boundary_scores"]) == n - 1 and all(0 <= s <= 3 for s in rec["boundary_scores"])
    # Two passes (windows 16 and 11) over n units.
    assert client.count("score") == len(score_windows(n, 16)) + len(score_windows(n, 11))
    blocks = rec["blocks"]
    assert blocks[0][0] == 0 and blocks[-1][1] == n - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(blocks, blocks[1:], strict=False))
    assert len(rec["block_summaries"]) == len(blocks) == len(rec["judge_rounds"]) == len(rec["judge_scores"])
    assert sum(rec["block_tokens"]) == sum(rec["sentence_tokens"])
    assert len(blocks) == 1 or all(t >= 150 for t in rec["block_tokens"])
    assert rec["compression"] == pytest.approx(sum(rec["summary_tokens"]) / sum(rec["block_tokens"]))
    # response = <think> blocks with mementos </think> answer; each block is an exact slice of the trace.
    assert rec["response"].startswith("<think>\n") and rec["response"].endswith("</think>\n\n" + sample.answer)
    parsed, _ = parse_trace(rec["response"])
    assert [p.memento for p in parsed] == [escape_special(s) for s in rec["block_summaries"]]
    assert "".join(p.work for p in parsed).replace("\n", "").replace(" ", "") == sample.reasoning.replace(
        "\n", ""
    ).replace(" ", "")
    assert rec["meta"]["usage"]["calls"] == len(client.calls)


@pytest.mark.asyncio
async def test_resume_after_interruption_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    data = samples()
    slow = ScriptedClient(delay=0.003)
    pipe = AnnotationPipeline(slow, PipelineConfig(concurrency=2, **CFG))  # type: ignore[arg-type]
    task = asyncio.create_task(pipe.run(data, out, progress=False, max_in_flight_samples=2))
    for _ in range(3000):  # poll the file: the run itself has no hook to signal progress
        if len(read_records(out)) >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = out.read_text("utf-8").splitlines()
    assert 3 <= len(first) < len(data)
    with out.open("a", encoding="utf-8") as fh:  # a crash in the middle of a write leaves a torn line
        fh.write('{"id": "math-')
    pipe2 = AnnotationPipeline(ScriptedClient(), PipelineConfig(**CFG))  # type: ignore[arg-type]
    summary = await pipe2.run(data, out, progress=False)
    lines = out.read_text("utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == sorted(s.id for s in data)  # nothing lost, nothing twice
    assert lines[: len(first)] == first  # earlier records untouched
    assert summary.skipped == len(first) and summary.processed == len(data) - len(first)
    assert summary.stats["samples"] == len(data)
    again = await AnnotationPipeline(ScriptedClient(), PipelineConfig(**CFG)).run(data, out, progress=False)  # type: ignore[arg-type]
    assert again.processed == 0 and again.skipped == len(data)


@pytest.mark.asyncio
async def test_a_failing_sample_is_reported_not_written_and_retried_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    data = samples()[:3]
    bad = data[1].problem

    def judge(system: str, user: str) -> str | BaseException:
        return RuntimeError("server error") if bad in user else "SCORE: 9/10\nFEEDBACK: ok"

    pipe = AnnotationPipeline(ScriptedClient({"judge": judge}), PipelineConfig(max_retries=1, **CFG))  # type: ignore[arg-type]
    summary = await pipe.run(data, out, progress=False)
    assert list(summary.failed) == [data[1].id] and "2 attempts failed" in summary.failed[data[1].id]
    assert read_done_ids(out) == {data[0].id, data[2].id}
    summary2 = await AnnotationPipeline(ScriptedClient(), PipelineConfig(**CFG)).run(data, out, progress=False)  # type: ignore[arg-type]
    assert summary2.processed == 1 and not summary2.failed and read_done_ids(out) == {s.id for s in data}
    assert issubclass(LLMCallError, RuntimeError)


def test_read_done_ids_cuts_a_torn_tail_but_refuses_mid_file_corruption(tmp_path: Path) -> None:
    p = tmp_path / "o.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c', "utf-8")
    assert read_done_ids(p) == {"a", "b"}
    assert p.read_text("utf-8") == '{"id": "a"}\n{"id": "b"}\n'
    p.write_text('{"id": "a"}\n{"id": "b"}', "utf-8")  # complete record, newline missing
    assert read_done_ids(p) == {"a", "b"} and p.read_text("utf-8").endswith("}\n")
    p.write_text('{"id": "a"}\nGARBAGE\n{"id": "b"}\n', "utf-8")
    with pytest.raises(ValueError, match="corrupt"):
        read_done_ids(p)


def test_summary_statistics() -> None:
    recs = [
        {
            "kind": "reasoning",
            "blocks": [[0, 1], [2, 3]],
            "block_tokens": [100, 300],
            "summary_tokens": [10, 60],
            "judge_rounds": [[{"round": 1, "score": 9}], [{"round": 1, "score": 5}, {"round": 2, "score": 8}]],
            "judge_scores": [9, 8],
        },
        {
            "kind": "agent",
            "blocks": [[0, 1]],
            "block_tokens": [50],
            "summary_tokens": [10],
            "judge_rounds": [[{"round": 1, "score": 3}, {"round": 2, "score": 7}]],
            "judge_scores": [7],
        },
    ]
    s = summarize_records(recs, tau=8, rounds=2)
    assert s["samples"] == 2 and s["blocks"] == 3 and s["kinds"] == {"reasoning": 1, "agent": 1}
    assert s["blocks_per_sample"]["mean"] == 1.5
    assert s["compression_ratio"] == pytest.approx(80 / 450, abs=1e-4)
    assert s["block_compression"]["median"] == pytest.approx(0.2)
    assert s["pass_rate_by_round"] == [pytest.approx(1 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4)]
    assert s["mean_judge_score"] == pytest.approx(8.0)


def test_reasoning_sample_accepts_a_think_response() -> None:
    s = ReasoningSample.from_record({"question": "Q?", "response": "<think>\nwork here\n</think>\n\nAnswer: 4"}, "r0")
    assert (s.id, s.problem, s.reasoning, s.answer) == ("r0", "Q?", "work here", "Answer: 4")


@pytest.mark.asyncio
async def test_heuristic_client_is_a_serialisable_component() -> None:
    from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage

    c = HeuristicChatCompletionClient(budget=0.2)
    cfg = c.dump_component()
    assert cfg.provider == "autogen_ext_memento.pipeline.HeuristicChatCompletionClient"
    c2 = ChatCompletionClient.load_component(cfg)
    assert isinstance(c2, HeuristicChatCompletionClient)
    r = await c2.create(
        [
            SystemMessage(content="BOUNDARY-SCORER"),
            UserMessage(content="[1] a = b:\n[2] c.\nScore these boundaries: B1", source="u"),
        ]
    )
    assert r.content == "B1: 0" and r.usage.completion_tokens > 0
    assert c2.total_usage().prompt_tokens == r.usage.prompt_tokens


@pytest.mark.asyncio
async def test_heuristic_roles_annotate_without_prompts_as_the_heuristic_client_does() -> None:
    roles = HeuristicRoles()
    by_rules = AnnotationPipeline(None, PipelineConfig(**CFG), scorer=roles, compressor=roles, judge=roles)
    by_prompts = AnnotationPipeline(HeuristicChatCompletionClient(), PipelineConfig(**CFG))
    for sample in samples()[:3]:
        a, b = await by_rules.annotate_reasoning(sample), await by_prompts.annotate_reasoning(sample)
        keys = ("blocks", "block_summaries", "judge_rounds", "response")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert by_rules.usage.calls == 0
    with pytest.raises(ValueError, match="without a client"):
        AnnotationPipeline(None, PipelineConfig(**CFG), scorer=roles)


@pytest.mark.asyncio
async def test_per_sample_usage_adds_up_to_the_run_total_under_concurrency(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    client = ScriptedClient(delay=0.001)
    pipe = AnnotationPipeline(client, PipelineConfig(concurrency=4, **CFG))  # type: ignore[arg-type]
    summary = await pipe.run(samples()[:5], out, progress=False)
    recs = read_records(out)
    for key in ("calls", "prompt_tokens", "completion_tokens"):
        assert sum(r["meta"]["usage"][key] for r in recs) == summary.usage[key]
    assert summary.usage["calls"] == len(client.calls)
    assert client.max_in_flight <= 4
