"""Shared fixtures: tiny random models and tokenizers built locally (no hub access)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    from autogen_ext_memento._tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Qwen3 model and BPE tokenizer saved to a local directory."""
    from autogen_ext_memento._tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))
