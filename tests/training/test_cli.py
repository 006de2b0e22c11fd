"""``autogen-memento train`` on OpenMementos-style JSONL and ``autogen-memento eval --json`` on the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autogen_ext_memento.cli import main
from autogen_ext_memento.grammar import BLOCK_END, BLOCK_START, SUMMARY_END, SUMMARY_START


def test_train_cli_runs_a_stage_on_jsonl(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {
            "problem": f"add {i} and 2",
            "response": f"{BLOCK_START}{i}+2={i + 2}{BLOCK_END}{SUMMARY_START}{i + 2}{SUMMARY_END}The sum is {i + 2}.",
        }
        for i in range(4)
    ]
    rows.append({"problem": "full row", "sentences": ["a.", "b.", "c."], "blocks": [[0, 1]], "block_summaries": ["ab"]})
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--stages",
            "1,2",
            "--preset",
            "tiny",
            "--data",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--max-steps",
            "1",
        ]
    )
    assert rc == 0
    assert (out / "stage1" / "model.safetensors").is_file() and (out / "stage2" / "model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "stage 1: 5 samples" in printed and "stage 2: 5 samples" in printed


def test_eval_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--json", "--episodes", "2", "--seed", "5", "--pages", "2", "--out", str(tmp_path), "--jobs", "1",
            "--threads", "1", "--modes", "full,memento_kv,restart,memento_full"]  # fmt: skip
    rc = main(argv)
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and report["seed"] == 5
    assert set(report["models"]) == {"base", "memento"}  # the shipped twins by default
    assert report["models"]["base"].endswith("tiny_full") and report["models"]["memento"].endswith("tiny_memento")
    assert set(report["modes"]) == {"full", "memento_kv", "restart", "memento_full"}
    for mode in report["modes"].values():
        assert 0.0 <= mode["accuracy"] <= 1.0 and mode["peak_kv_tokens"] > 0 and mode["auc_kv"] > 0
    m = report["modes"]
    assert m["memento_kv"]["peak_kv_tokens"] < m["full"]["peak_kv_tokens"]
    assert m["memento_kv"]["evictions"] >= 1 and m["full"]["evictions"] == 0 == m["memento_full"]["evictions"]
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "sawtooth.png").stat().st_size > 1000
