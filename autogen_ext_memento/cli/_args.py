"""Reusable argparse types: each turns one command-line string into a checked value or a one-line usage error.

Use them as ``type=`` of ``add_argument``; a bad value makes argparse print ``autogen-memento: error: argument
--blocks: expected a positive integer, got '0'`` and exit with status 2 (see :mod:`autogen_ext_memento.cli._main`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TypeVar

__all__ = [
    "existing_file",
    "existing_path",
    "fraction",
    "model_path",
    "non_negative_float",
    "non_negative_int",
    "page_range",
    "positive_float",
    "positive_int",
]

T = TypeVar("T", int, float)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _bounded(value: T, text: str, what: str, ok: bool) -> T:
    """``value`` if ``ok``, else the usage error that names ``what`` was expected."""
    if not ok:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text, "a positive integer")
    return _bounded(value, text, "a positive integer", value >= 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text, "a non-negative integer")
    return _bounded(value, text, "a non-negative integer", value >= 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text, "a positive number")
    return _bounded(value, text, "a positive number", value > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _float(text, "a non-negative number")
    return _bounded(value, text, "a non-negative number", value >= 0)


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _float(text, "a number in (0, 1]")
    return _bounded(value, text, "a number in (0, 1]", 0 < value <= 1)


def page_range(text: str) -> tuple[int, int]:
    """``N`` or ``LO-HI`` (``1 <= LO <= HI``) as ``(lo, hi)``."""
    what = "N or LO-HI with 1 <= LO <= HI"
    lo_text, sep, hi_text = text.strip().partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if sep else lo
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if lo < 1 or lo > hi:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return lo, hi


def existing_path(text: str) -> str:
    """A file or directory that exists."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {text!r}")
    return text


def existing_file(text: str) -> str:
    """A regular file that exists."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text!r}")
    return text


def model_path(text: str) -> str:
    """A model to load: ``tiny`` (the shipped model), a model directory (``config.json`` + tokenizer) or ``org/name``.

    Returns what ``from_pretrained`` loads (a shipped name becomes its directory).
    """
    from ..backends import resolve_model_path

    try:
        return resolve_model_path(text)
    except (FileNotFoundError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
