"""``autogen-memento eval``: the paper's base-vs-memento table on held-out episodes, on the twin models."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import model_path, page_range, positive_int

if TYPE_CHECKING:
    from ..bench import ModelKind

DEFAULT_SEED = 12345


def register(subparsers: Any) -> None:
    from ..bench import PAPER_MODES

    p = subparsers.add_parser(
        "eval",
        help="accuracy and live KV of the twins: full, memento_kv, restart, memento_full and AutoGen's contexts",
        description=(
            "Plays the same held-out fact-tracker episodes through AssistantAgent + MementoChatCompletionClient in "
            "every mode: full (the base twin tiny_full, full context), memento_kv (tiny_memento, physical KV "
            "eviction), restart (tiny_memento, memento KV recomputed from its text), memento_full (tiny_memento, "
            "no eviction), and AutoGen's buffered / token_limited contexts and our observation_masking context on "
            "the base twin. Prints a table and writes eval.json and sawtooth.png to --out (or prints JSON with "
            "--json); a progress bar goes to stderr."
        ),
    )
    p.add_argument("--base-model", type=model_path, default=None, help="base twin (default: shipped tiny_full)")
    p.add_argument("--model", type=model_path, default=None, help="memento twin (default: shipped tiny_memento)")
    p.add_argument("--episodes", type=positive_int, default=100, help="number of held-out episodes")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the held-out episodes")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--scale", type=positive_int, default=1,
        help="episode length as a multiple of the longest training episode (1: the training range 1-5 pages; "
        "K>1: exactly 5K pages)",
    )  # fmt: skip
    length.add_argument("--pages", type=page_range, default=None, help="pages per episode: N or LO-HI")
    p.add_argument("--modes", default=",".join(PAPER_MODES), help="comma-separated modes")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (with --jobs 1)")
    p.add_argument(
        "--jobs", type=positive_int, default=None,
        help="worker processes, one CPU thread each (default: the CPUs available, at most 4); results do not depend "
        "on it",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="directory for eval.json and sawtooth.png (default: none with "
                   "--json, else ./memento-eval-TIMESTAMP)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the JSON report (stdout) instead of the table")
    p.set_defaults(func=run)


def _modes(text: str) -> list[str]:
    from ..bench import methods

    modes = [m.strip() for m in text.split(",") if m.strip()]
    known = methods()
    bad = [m for m in modes if m not in known]
    if not modes or bad:
        raise ValueError(f"unknown modes {bad or [text]}; known: {', '.join(known)}")
    return modes


def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(path)


def _shipped(kind: ModelKind) -> str:
    from ..assets import tiny_full_model_path, tiny_model_path

    return str(tiny_full_model_path() if kind == "base" else tiny_model_path())


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from ..bench import methods
    from ..evaluation import evaluate, evaluate_parallel, format_table, plot_sawtooth, scale_pages

    hf_logging.disable_progress_bar()
    modes = _modes(args.modes)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    given: dict[ModelKind, str | None] = {"base": args.base_model, "memento": args.model}
    needed = {methods()[m].model for m in modes}
    paths: dict[ModelKind, str] = {k: v or _shipped(k) for k, v in given.items() if k in needed}
    pages = args.pages or scale_pages(args.scale)
    jobs = args.jobs or max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    bar = tqdm(total=args.episodes * len(modes), desc="eval episodes", unit="ep", file=sys.stderr)
    common: dict[str, Any] = {
        "episodes": args.episodes,
        "seed": args.seed,
        "pages": pages,
        "modes": modes,
        "max_new_tokens": args.max_new_tokens,
        "on_episode": lambda _run: bar.update(1),
    }
    if jobs > 1:
        report = evaluate_parallel(paths, jobs=jobs, **common)
    else:
        report = evaluate({k: _load(v) for k, v in paths.items()}, **common)
    bar.close()
    report = {"models": paths, "scale": None if args.pages else args.scale, "jobs": jobs, **report}
    out = Path(args.out) if args.out else None
    if out is None and not args.json:
        out = Path(f"memento-eval-{time.strftime('%Y%m%d-%H%M%S')}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, indent=1))
        plot_sawtooth(report, out / "sawtooth.png")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "traces"}, indent=1))
    else:
        assert out is not None
        print(format_table(report))
        print(f"wrote {out / 'eval.json'} and {out / 'sawtooth.png'}")
    return 0
