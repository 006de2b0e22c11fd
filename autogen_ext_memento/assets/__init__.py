"""Assets shipped with the package: the tiny models (the offline defaults of the demo, examples and benchmarks).

``tiny_memento`` is the shipped fixed-goal memento model. ``tiny_full`` is the base twin of the twin recipe
(``autogen-memento train --preset tiny-twins``: same tokenizer, stage 1, data stream and steps, causal attention
only); it is looked up here but not shipped yet.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_full_model_path", "tiny_model_path"]

_HERE = Path(__file__).resolve().parent
_TWINS = "train the twins with `autogen-memento train --preset tiny-twins --out DIR` (scripts/train_tiny.sh)"
_SHIPPED = (
    "retrain it with `autogen-memento train --preset tiny --data fact-tracker --stages 1,2 --threads 1 --out DIR`"
)


def _shipped(name: str, how: str) -> Path:
    path = _HERE / name
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"the tiny model {name!r} is not installed at {path}; {how}")
    return path


def tiny_model_path() -> Path:
    """Directory of the shipped tiny memento model (a Qwen3 checkpoint and its tokenizer, loadable offline).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_memento", _SHIPPED)


def tiny_full_model_path() -> Path:
    """Directory of the shipped base twin ``tiny_full`` (causal attention only; the baselines' model).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_full", _TWINS)
