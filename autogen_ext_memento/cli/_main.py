"""Entry point of ``autogen-memento``: each subcommand lives in ``cli/_<name>.py`` and exposes ``register``.

A subcommand module defines ``register(subparsers: argparse._SubParsersAction) -> None``; it adds its parser and
sets ``func`` (``Callable[[argparse.Namespace], int]``) as the parser default. Modules are imported lazily so one
command's optional dependencies never break another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("demo", "train", "eval", "annotate", "bench", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogen-memento", description="Sawtooth (memento) context for AutoGen.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"autogen_ext_memento.cli._{name}")
        except ModuleNotFoundError as e:
            if e.name == f"autogen_ext_memento.cli._{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
