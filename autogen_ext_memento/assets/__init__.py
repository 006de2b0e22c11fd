"""Assets shipped with the package: the twin tiny models (the offline defaults of the demo, examples and benchmarks).

``tiny_memento`` is the memento fine-tune and ``tiny_full`` its base twin (same tokenizer, stage 1, data stream
and steps; causal attention only), both trained by ``autogen-memento train --preset tiny-twins``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_full_model_path", "tiny_model_path"]

_HERE = Path(__file__).resolve().parent
_RETRAIN = "retrain the twins with scripts/train_tiny.sh (autogen-memento train --preset tiny-twins --out DIR)"


def _shipped(name: str) -> Path:
    path = _HERE / name
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"the tiny model {name!r} is not installed at {path}; {_RETRAIN}")
    return path


def tiny_model_path() -> Path:
    """Directory of the shipped tiny memento model (a Qwen3 checkpoint and its tokenizer, loadable offline).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_memento")


def tiny_full_model_path() -> Path:
    """Directory of the shipped base twin ``tiny_full`` (causal attention only; the baselines' model).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them).
    """
    return _shipped("tiny_full")
