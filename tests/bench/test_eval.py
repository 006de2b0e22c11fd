"""The evaluation: the paper's modes on the same episodes, the documented JSON, parallel == serial, clear CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autogen_ext_memento.bench import Models
from autogen_ext_memento.cli import main
from autogen_ext_memento.evaluation import evaluate, evaluate_parallel, scale_pages, wilson_interval

KEYS = {"accuracy", "accuracy_ci95", "peak_kv_tokens", "auc_kv", "full_context_kv_tokens", "prefill_tokens", "episodes"}


def _twins(path: Path) -> Models:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pair = (AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
    return {"base": pair, "memento": pair}


def test_scale_and_interval() -> None:
    assert scale_pages(1) == (1, 5) and scale_pages(2) == (10, 10) and scale_pages(4) == (20, 20)
    with pytest.raises(ValueError):
        scale_pages(0)
    lo, hi = wilson_interval(95, 100)
    assert 0.88 < lo < 0.95 < hi < 0.99
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_report_shape_and_parallel_equals_serial(tiny_model_dir: Path) -> None:
    modes = ["full", "memento_kv", "observation_masking"]
    kw = {"episodes": 3, "seed": 5, "pages": (2, 3), "modes": modes, "max_new_tokens": 12}
    serial = evaluate(_twins(tiny_model_dir), **kw)  # type: ignore[arg-type]
    assert list(serial["modes"]) == modes and serial["pages"] == [2, 3]
    for name in modes:
        row = serial["modes"][name]
        assert KEYS <= set(row) and row["episodes"] == 3
        assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
        assert row["peak_kv_tokens"] > 0
    assert serial["modes"]["memento_kv"]["model"] == "memento" and serial["modes"]["full"]["model"] == "base"
    paths = {"base": str(tiny_model_dir), "memento": str(tiny_model_dir)}
    parallel = evaluate_parallel(paths, jobs=2, chunk=2, **kw)  # type: ignore[arg-type]
    for name in modes:
        a, b = dict(serial["modes"][name]), dict(parallel["modes"][name])
        a.pop("seconds"), b.pop("seconds")
        assert a == b, name
    assert serial["traces"] == parallel["traces"]


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--episodes", "-5"],
        ["eval", "--episodes", "0"],
        ["eval", "--pages", "abc"],
        ["eval", "--pages", "5-2"],
        ["eval", "--scale", "0"],
        ["eval", "--modes", "nope"],
        ["eval", "--model", "/no/such/model"],
        ["eval", "--scale", "2", "--pages", "3"],
        ["bench", "--episodes", "-1"],
        ["bench", "--pages", "a,b"],
        ["bench", "--methods", "nope"],
        ["train", "--preset", "tiny-twins", "--out", "x", "--stage1-steps", "0"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autogen-memento: error:") and len(err.splitlines()) == 1, err


def test_eval_json_on_random_twins(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["eval", "--json", "--episodes", "2", "--pages", "2", "--modes", "full,memento_kv", "--jobs", "1",
            "--base-model", str(tiny_model_dir), "--model", str(tiny_model_dir), "--max-new-tokens", "8",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"base", "memento"} and report["pages"] == [2, 2]
    assert set(report["modes"]) == {"full", "memento_kv"} and "traces" not in report
    assert (tmp_path / "sawtooth.png").stat().st_size > 1000
