"""Entry point of ``autogen-memento``: each subcommand lives in ``cli/_<name>.py`` and exposes ``register``.

A subcommand module defines ``register(subparsers: argparse._SubParsersAction) -> None``; it adds its parser and
sets ``func`` (``Callable[[argparse.Namespace], int]``) as the parser default. Modules are imported lazily so one
command's optional dependencies never break another.

User errors (bad arguments, ``ValueError``, missing files, ``SystemExit("message")``) print one line,
``autogen-memento: error: ...``, on stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

PROG = "autogen-memento"
COMMANDS = ("demo", "train", "eval", "annotate", "bench", "serve")
USAGE_ERROR = 2
# Exceptions that mean the user asked for something impossible (not a bug): one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class UsageError(Exception):
    """A command-line argument was rejected by argparse."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``main`` prints them) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()  # "demo" for `autogen-memento demo`
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    """The ``autogen-memento`` parser with every subcommand whose module imports."""
    parser = _Parser(prog=PROG, description="Sawtooth (memento) context for AutoGen.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"autogen_ext_memento.cli._{name}")
        except ModuleNotFoundError as e:
            if e.name == f"autogen_ext_memento.cli._{name}":
                continue
            raise
        mod.register(sub)
    for cmd in sub.choices.values():
        # `autogen-memento demo --debug` works too; SUPPRESS keeps the global flag's value when absent here.
        if not any("--debug" in a.option_strings for a in cmd._actions):
            cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (pydantic errors as ``field: reason; ...``)."""
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in error.errors()]
        text = "; ".join(parts)
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autogen-memento`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        return _fail(str(e))
    except SystemExit as e:
        if debug or e.code is None or isinstance(e.code, int):
            raise
        return _fail(one_line(Exception(e.code)))
    except USER_ERRORS as e:
        if debug:
            raise
        return _fail(one_line(e))
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
