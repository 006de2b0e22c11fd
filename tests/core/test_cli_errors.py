"""CLI user errors: exit status 2 and exactly one line on stderr; tracebacks only with --debug."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from autogen_ext_memento.cli import main
from autogen_ext_memento.cli._args import (
    existing_file,
    existing_path,
    fraction,
    non_negative_float,
    non_negative_int,
    page_range,
    positive_float,
    positive_int,
)

BAD_ARGUMENTS = [
    (["demo", "--blocks", "0"], "argument --blocks: expected a positive integer, got '0'"),
    (["demo", "--blocks", "-3"], "argument --blocks: expected a positive integer"),
    (["demo", "--blocks", "abc"], "argument --blocks: expected a positive integer, got 'abc'"),
    (["demo", "--threads", "0"], "argument --threads: expected a positive integer, got '0'"),
    (["demo", "--model", "/no/such/model"], "model path '/no/such/model' does not exist"),
    (["demo", "--policy", "magic"], "argument --policy: invalid choice"),
    (["annotate", "missing.jsonl", "--out", "o.jsonl"], "argument inputs: no such file: 'missing.jsonl'"),
    (["annotate", "bundled:reasoning"], "the following arguments are required: --out"),
    (["annotate", "bundled:reasoning", "--out", "o.jsonl", "--concurrency", "0"], "--concurrency: expected a positive"),
    (["annotate", "bundled:reasoning", "--out", "o.jsonl", "--window", "1"], "--window: expected an integer >= 2"),
    (["annotate", "bundled:reasoning", "--out", "o.jsonl", "--model-config", "nope.yaml"], "no such file: 'nope.yaml'"),
    (["annotate", "bundled:reasoning", "--out", "o.jsonl", "--tau", "11", "--limit", "1"], "tau: Input should be"),
    (["serve", "--dry-run", "--session-fraction", "2", "org/model"], "--session-fraction: expected a number in (0, 1]"),
    (["serve", "--dry-run", "--session-ttl", "nan", "org/model"], "--session-ttl: expected a positive number"),
    (["serve", "--dry-run", "--swap-space", "-1", "org/model"], "--swap-space: expected a non-negative number"),
    (
        ["serve", "--dry-run", "--keep-last-n-blocks", "-2", "org/model"],
        "--keep-last-n-blocks: expected a non-negative",
    ),
    (["serve", "--dry-run", "/no/such/model"], "model path '/no/such/model' does not exist"),
    (["nope"], "invalid choice: 'nope'"),
    ([], "the following arguments are required: command"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) or "<none>" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autogen-memento: error: ") and message in lines[0], err


def test_console_script_exits_2_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    argv = ["annotate", "bundled:reasoning", "--out", str(tmp_path / "o.jsonl"), "--tau", "11"]
    quiet = subprocess.run([sys.executable, "-m", "autogen_ext_memento", *argv], capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-m", "autogen_ext_memento", "--debug", *argv], capture_output=True, text=True
    )
    assert loud.returncode != 0 and "Traceback" in loud.stderr
    after = subprocess.run(
        [sys.executable, "-m", "autogen_ext_memento", argv[0], "--debug", *argv[1:]], capture_output=True, text=True
    )
    assert "Traceback" in after.stderr


def test_system_exit_with_a_message_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from autogen_ext_memento.cli import _demo

    def boom(args: argparse.Namespace) -> int:
        raise SystemExit("unknown modes ['x']\nknown: a, b")

    monkeypatch.setattr(_demo, "run", boom)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == "autogen-memento: error: unknown modes ['x'] known: a, b\n"


@pytest.mark.parametrize(
    "fn, good, bad",
    [
        (positive_int, {"1": 1, "42": 42}, ["0", "-1", "1.5", "x", ""]),
        (non_negative_int, {"0": 0, "7": 7}, ["-1", "x"]),
        (positive_float, {"0.5": 0.5, "3": 3.0}, ["0", "-1", "nan", "inf", "x"]),
        (non_negative_float, {"0": 0.0, "2.5": 2.5}, ["-0.1", "nan", "x"]),
        (fraction, {"1": 1.0, "0.25": 0.25}, ["0", "1.5", "nan"]),
        (page_range, {"3": (3, 3), "1-5": (1, 5), "2-2": (2, 2)}, ["0", "5-3", "0-2", "abc", "1-", "-3", "1-x"]),
    ],
)
def test_argument_types(fn: object, good: dict[str, object], bad: list[str]) -> None:
    assert callable(fn)
    for text, value in good.items():
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


def test_path_types(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert existing_file(str(f)) == str(f) and existing_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(argparse.ArgumentTypeError, match="not a file"):
        existing_file(str(tmp_path))
    for fn in (existing_file, existing_path):
        with pytest.raises(argparse.ArgumentTypeError, match="no such file"):
            fn(str(tmp_path / "missing"))
