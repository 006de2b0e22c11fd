"""Packaging: the sdist and the wheel built *from the sdist* carry the vLLM plugin, the model assets and the LICENSE."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("build", reason="needs the `build` frontend (in the test extra)")
pytest.importorskip("hatchling", reason="needs hatchling (in the test extra) to build offline")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """Names inside the sdist and inside the wheel that `python -m build` builds from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    # Without --sdist/--wheel, `build` makes the sdist, unpacks it and builds the wheel from the unpacked tree.
    # --no-isolation: use this environment's hatchling instead of downloading one.
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tf:
        sdist_names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = zf.namelist()
    return sdist_names, wheel_names


def test_sdist_has_what_the_wheel_needs(dists: tuple[list[str], list[str]]) -> None:
    sdist, _ = dists
    for name in (
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "serving/autogen_memento_vllm/__init__.py",
        "serving/autogen_memento_vllm/chat_template.jinja",
        "autogen_ext_memento/assets/tiny_memento/model.safetensors",
        "autogen_ext_memento/assets/tiny_full/model.safetensors",
    ):
        assert name in sdist, name


def test_wheel_from_the_sdist_has_plugin_assets_and_license(dists: tuple[list[str], list[str]]) -> None:
    _, wheel = dists
    for name in (
        "autogen_memento_vllm/__init__.py",
        "autogen_memento_vllm/chat_template.jinja",
        "autogen_ext_memento/assets/tiny_memento/model.safetensors",
        "autogen_ext_memento/assets/tiny_memento/tokenizer.json",
        "autogen_ext_memento/assets/tiny_full/model.safetensors",
        "autogen_ext_memento/assets/tiny_full/training_log.json",
        "autogen_ext_memento/py.typed",
    ):
        assert name in wheel, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel), [n for n in wheel if "dist-info" in n]
    # The entry points the wheel declares resolve to modules it ships.
    entry_points = next(n for n in wheel if n.endswith(".dist-info/entry_points.txt"))
    assert entry_points and "autogen_memento_vllm" in "\n".join(wheel)
