"""Assets shipped with the package: the tiny trained memento model (the offline default of the demo and examples)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_model_path"]

_TINY = Path(__file__).resolve().parent / "tiny_memento"


def tiny_model_path() -> Path:
    """Directory of the shipped tiny memento model (a Qwen3 checkpoint and its tokenizer, loadable offline).

    Raises:
        FileNotFoundError: if the weights are missing (e.g. a source checkout without them); retrain with
            ``scripts/train_tiny.sh``.
    """
    if not (_TINY / "model.safetensors").is_file() or not (_TINY / "config.json").is_file():
        raise FileNotFoundError(
            f"the tiny memento model is not installed at {_TINY}; retrain it with scripts/train_tiny.sh "
            "(python -m autogen_ext_memento.training._tiny_recipe --out autogen_ext_memento/assets/tiny_memento)"
        )
    return _TINY
