"""The benchmark harness: same episodes for every method, real numbers, the documented JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autogen_ext_memento.bench import DEFAULT_METHODS, PAPER_MODES, Models, methods, run_benchmark
from autogen_ext_memento.cli import main

REQUIRED = ("full", "buffered", "token_limited", "observation_masking", "restart", "memento_kv", "memento_full")


def _random_twins(path: Path) -> Models:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pair = (AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
    return {"base": pair, "memento": pair}


def test_every_required_method_exists() -> None:
    assert set(REQUIRED) <= set(DEFAULT_METHODS) == set(methods())
    assert set(PAPER_MODES) <= set(DEFAULT_METHODS)


def test_each_method_runs_on_the_twin_trained_for_its_mode() -> None:
    table = methods()
    assert {m for m, x in table.items() if x.model == "memento"} == {"memento_kv", "restart", "memento_full"}
    assert table["memento_kv"].memento.keep_last_n_blocks == 0 and not table["memento_kv"].memento.restart_mode
    assert table["restart"].memento.restart_mode
    for name in ("full", "memento_full", "buffered", "token_limited", "observation_masking"):
        assert table[name].memento.keep_last_n_blocks == -1, name  # nothing evicted


def test_a_mode_needs_its_twin(tiny_model_dir: Path) -> None:
    base_only = {"base": _random_twins(tiny_model_dir)["base"]}
    with pytest.raises(ValueError, match="memento twin"):
        run_benchmark(models=base_only, method_names=["memento_kv"], pages=(2,), episodes=1, concurrent_agents=0)  # type: ignore[arg-type]


def test_report_shape_on_a_random_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = run_benchmark(
        models=_random_twins(tiny_model_dir),
        method_names=["full", "buffered", "memento_kv"],
        pages=(2,),
        episodes=1,
        max_new_tokens=8,
        out_dir=tmp_path,
    )
    for name in ("full", "buffered", "memento_kv"):
        entry = report["methods"][name]
        for key in ("accuracy", "peak_kv_tokens", "auc_kv", "prompt_tokens"):
            assert key in entry
        assert entry["episodes"] == 1 and entry["peak_kv_tokens"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["methods"].keys() == report["methods"].keys()
    assert (tmp_path / "table.md").read_text().count("| memento_kv |") == 3  # all lengths, 2 pages, concurrent
    assert report["concurrent"]["methods"]["memento_kv"]["agents"] == 4
    assert (tmp_path / "pool.png").stat().st_size > 1000
    assert (tmp_path / "sawtooth.png").stat().st_size > 1000


def test_unknown_method_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        run_benchmark(models=_random_twins(tiny_model_dir), method_names=["nope"], pages=(2,), episodes=1)


def test_bench_never_overwrites_a_report_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text("{}")
    assert main(["bench", "--out", str(tmp_path), "--episodes", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.slow
def test_quick_benchmark_on_the_shipped_model(tmp_path: Path) -> None:
    """The shipped memento model (fixed goal keys; the base twin is not shipped yet) on its own task, every method."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autogen_ext_memento.assets import tiny_model_path
    from autogen_ext_memento.tasks import FactTrackerConfig

    pair = (AutoModelForCausalLM.from_pretrained(tiny_model_path()), AutoTokenizer.from_pretrained(tiny_model_path()))
    report = run_benchmark(
        models={"base": pair, "memento": pair},
        pages=(4, 8),
        episodes=4,
        concurrent_agents=2,
        out_dir=tmp_path,
        task=FactTrackerConfig(),
    )
    m = report["methods"]
    assert set(REQUIRED) <= set(m)
    assert m["memento_kv"]["peak_kv_tokens"] < m["full"]["peak_kv_tokens"]
    assert m["memento_kv"]["prompt_tokens"] < m["buffered"]["prompt_tokens"]  # the session is extended, not rebuilt
    assert m["memento_kv"]["accuracy"] >= 0.5
