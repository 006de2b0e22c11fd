"""The demo command: the sawtooth is real (peak KV below full context, at least three evictions)."""

from __future__ import annotations

import json

import pytest

from autogen_ext_memento.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:  # type: ignore[type-arg]
    assert main(["demo", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_demo_json_default_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """A new user's first run, at its defaults: the shipped model answers right and the sawtooth is real."""
    out = run_json(capsys)
    for key in ("peak_kv_tokens", "full_context_kv_tokens", "evictions", "turns"):
        assert key in out
    assert out["evictions"] >= 3
    assert out["peak_kv_tokens"] < out["full_context_kv_tokens"]
    assert out["correct"] is True, out


def test_demo_scripted_policy_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--blocks", "4", "--policy", "scripted")
    assert out["evictions"] == 4 and out["turns"] == 4 and out["correct"] is True and out["rebuilds"] == 0


def test_demo_text_and_plot(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "saw.png"
    assert main(["demo", "--blocks", "3", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "peak KV:" in text and "sawtooth" in text
    assert png.stat().st_size > 1000
