"""Assets shipped with the package: the twin tiny models (the offline defaults of the demo, examples and benchmarks).

``tiny_full`` is the base (causal attention only) and ``tiny_memento`` its memento fine-tune, both produced by
``autogen-memento train --preset tiny-twins`` (same tokenizer, stage 1, data stream and steps); each directory holds
a model card (``README.md``) and its ``training_log.json``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_full_model_path", "tiny_model_path"]

_HERE = Path(__file__).resolve().parent
_TWINS = (
    "retrain the twins with `autogen-memento train --preset tiny-twins --out DIR` (scripts/train_tiny.sh)"
    " and copy DIR/<name> here"
)


def _shipped(name: str, how: str) -> Path:
    path = _HERE / name
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"the tiny model {name!r} is not installed at {path}; {how}")
    return path


def tiny_model_path() -> Path:
    """Directory of the shipped memento twin ``tiny_memento`` (a Qwen3 checkpoint and its tokenizer, loadable offline).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_memento", _TWINS)


def tiny_full_model_path() -> Path:
    """Directory of the shipped base twin ``tiny_full`` (causal attention only; the baselines' model).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_full", _TWINS)
