"""The examples run offline, as documented, and their numbers show the sawtooth."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"memento_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    summary: dict[str, Any] = load(name).main(["--out", str(tmp_path), *extra])
    for agent, d in summary["agents"].items():
        assert Path(d["png"]).stat().st_size > 5000, agent
        assert d["calls"] > 0 and d["peak_tokens"] > 0
    assert (tmp_path / "summary.json").is_file()
    return summary


def test_assistant_tools_example(tmp_path: Path) -> None:
    s = run("assistant_tools", tmp_path, "--scripted", "--pages", "12")
    assert s["mode"] == "scripted" and s["exact"] is True
    with_m, without = s["tokens_per_call_with_memento"], s["tokens_per_call_without"]
    assert len(with_m) == len(without) == 13
    assert with_m[:2] == without[:2]  # nothing to compact before the second observation
    assert with_m[-1] < 0.45 * without[-1], (with_m, without)


def test_round_robin_example(tmp_path: Path) -> None:
    s = run("round_robin", tmp_path, "--rounds", "6")
    for d in s["agents"].values():
        assert d["peak_tokens"] < 0.75 * d["peak_full_context_tokens"], d
    assert (tmp_path / "blocks.sqlite").stat().st_size > 0


def test_selector_example(tmp_path: Path) -> None:
    s = run("selector", tmp_path, "--turns", "9")
    assert set(s["agents"]) == {"planner", "researcher", "analyst", "selector"}
    assert s["agents"]["researcher"]["peak_tokens"] < s["agents"]["researcher"]["peak_full_context_tokens"]


def test_magentic_one_example(tmp_path: Path) -> None:
    s = run("magentic_one", tmp_path)
    assert "49345379" in s["answer"]
    assert any("49345379" in o for o in s["terminal_outputs"])  # the terminal really ran the coder's code
    orch = s["agents"]["orchestrator"]
    assert orch["calls"] == 15 and orch["peak_tokens"] < 0.8 * orch["peak_full_context_tokens"]
    assert s["team_mementos"] > 0


def test_example_runs_as_a_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "assistant_tools.py"), "--scripted", "--pages", "4", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tracker" in proc.stdout and (tmp_path / "sawtooth_tracker.png").is_file()


def test_assistant_tools_example_at_its_defaults_on_the_shipped_model(tmp_path: Path) -> None:
    """A new user's first run: no arguments, the shipped tiny memento model, the right answer."""
    from autogen_ext_memento.assets import tiny_model_path

    tiny_model_path()  # shipped with the package: a missing model is a failure, not a skip
    s = run("assistant_tools", tmp_path)
    assert s["mode"] == "tiny-memento-model"
    assert s["exact"] is True, s["answer"]
    assert "kv" in s and s["kv"]["peak_kv_tokens"] < s["kv"]["full_context_kv_tokens"]


def test_assistant_tools_example_runs_on_a_memento_model_client(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code path used when the trained tiny model is installed, here on a random tiny model (its output is noise,
    # so only the plumbing is checked: client, KV stats and plots).
    import autogen_ext_memento.assets as assets

    monkeypatch.setattr(assets, "tiny_model_path", lambda: tiny_model_dir)
    s = run("assistant_tools", tmp_path, "--pages", "3")
    assert s["mode"] == "tiny-memento-model"
    assert s["kv"]["logical_tokens"] > 0 and s["agents"]["tracker"]["kv_trace_len"] == s["kv"]["logical_tokens"]
