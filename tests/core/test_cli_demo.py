"""The demo command: the sawtooth is real (peak KV below full context, at least three evictions)."""

from __future__ import annotations

import json

import pytest

from autogen_ext_memento.cli import main


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json", "--blocks", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("peak_kv_tokens", "full_context_kv_tokens", "evictions", "turns"):
        assert key in out
    assert out["evictions"] >= 3
    assert out["peak_kv_tokens"] < out["full_context_kv_tokens"]
    assert out["correct"] is True


def test_demo_text_and_plot(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "saw.png"
    assert main(["demo", "--blocks", "3", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "peak KV:" in text and "sawtooth" in text
    assert png.stat().st_size > 1000
