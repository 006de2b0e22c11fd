"""``autogen-memento annotate`` on the bundled samples (offline), with a model-config file and with a replay file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autogen_ext_memento.cli import main
from autogen_ext_memento.pipeline import HeuristicChatCompletionClient, read_records


def test_cli_annotates_bundled_samples_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    args = ["annotate", "bundled:reasoning", "bundled:agentchat", "--out", str(out), "--two-pass", "--no-progress"]
    assert main([*args, "--json", "--summary-out", str(tmp_path / "s.json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((tmp_path / "s.json").read_text("utf-8"))
    assert summary["processed"] == 13 and summary["kinds"] == {"reasoning": 12, "agent": 1}
    assert summary["blocks"] >= 20
    rates = summary["pass_rate_by_round"]
    assert len(rates) == 2 and 0 < rates[0] < rates[1] <= 1  # the feedback round helps
    assert 0.05 < summary["compression_ratio"] < 0.5
    assert summary["usage"]["calls"] > 0 and summary["usage"]["by_purpose"]["judge"]["calls"] >= summary["blocks"]
    recs = read_records(out)
    assert {r["kind"] for r in recs} == {"reasoning", "agent"}
    assert all(r["response"] and r["problem"] for r in recs)
    # Second run: everything is already there.
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "(0 new, 13 already done, 0 failed)" in text and "judge pass rate by round" in text
    assert len(read_records(out)) == 13


def test_cli_with_model_config_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "client.json"
    cfg.write_text(HeuristicChatCompletionClient(budget=0.1).dump_component().model_dump_json(), "utf-8")
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "annotate",
            "bundled:reasoning",
            "--out",
            str(out),
            "--model-config",
            str(cfg),
            "--limit",
            "2",
            "--min-block-tokens",
            "100",
            "--rounds",
            "1",
            "--json",
            "--no-progress",
            "--price-in",
            "1.0",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 2 and len(summary["pass_rate_by_round"]) == 1
    assert summary["usage"]["cost"] == pytest.approx(summary["usage"]["prompt_tokens"] / 1e6)
    assert all(r["meta"]["min_block_tokens"] == 100 and r["meta"]["rounds"] == 1 for r in read_records(out))


def test_cli_with_a_replay_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(
            {
                "id": "r1",
                "problem": "Solve x + 2 = 5.",
                "reasoning": "We subtract two from both sides now.\nSo x = 3 and we are done here.",
                "answer": "3",
            }
        )
        + "\n",
        "utf-8",
    )
    replay = tmp_path / "replay.yaml"
    replay.write_text('- "B1: 1"\n- "Summary 1: x = 3 (subtract 2)."\n- "SCORE: 9/10\\nFEEDBACK: fine"\n', "utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["annotate", str(src), "--out", str(out), "--replay", str(replay), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["usage"]["calls"] == 3 and summary["pass_rate_by_round"] == [1.0, 1.0]
    (rec,) = read_records(out)
    assert rec["block_summaries"] == ["x = 3 (subtract 2)."] and rec["judge_scores"] == [9.0]
    assert rec["boundary_scores"] == [1.0]
