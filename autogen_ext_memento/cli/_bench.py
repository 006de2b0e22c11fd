"""``autogen-memento bench``: every method side by side on the twins and the same episodes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ._args import model_path, non_negative_int, positive_int


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="compare memento with full context, AutoGen contexts and observation masking on the twin models",
        description=(
            "Runs every method on the same held-out episodes at several lengths, each on the twin trained for its "
            "mode (text-level contexts on tiny_full, eviction on tiny_memento), plus a concurrent-agents workload. "
            "Writes results.json, table.md and plots to a new directory; a progress bar goes to stderr."
        ),
    )
    p.add_argument("--base-model", type=model_path, help="base twin (default: shipped tiny_full)")
    p.add_argument("--model", type=model_path, help="memento twin (default: shipped tiny_memento)")
    p.add_argument("--quick", action="store_true", help="small run (a few minutes on 2 cores)")
    p.add_argument("--json", action="store_true", help="print the JSON report only (stdout)")
    p.add_argument("--episodes", type=positive_int, default=None, help="episodes per length (default 10, quick 3)")
    p.add_argument("--pages", default=None, help="comma-separated episode lengths (default 5,10,20; quick 5,10)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    p.add_argument("--seed", type=int, default=20_000, help="held-out episode seed")
    p.add_argument("--agents", type=non_negative_int, default=None, help="concurrent agents (default 4, quick 2)")
    p.add_argument("--kv-budget", type=positive_int, default=8192, help="KV budget (tokens) for the capacity column")
    p.add_argument("--out", default=None, help="new output directory (default: ./memento-bench-TIMESTAMP)")
    p.add_argument("--force", action="store_true", help="write into --out even if it already holds a report")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    p.set_defaults(func=run)


def _pages(text: str | None, quick: bool) -> list[int]:
    if text is None:
        return [5, 10] if quick else [5, 10, 20]
    try:
        pages = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--pages: expected comma-separated positive integers, got {text!r}") from None
    if not pages or min(pages) < 1:
        raise ValueError(f"--pages: expected comma-separated positive integers, got {text!r}")
    return pages


def _out_dir(out: str | None, force: bool) -> Path:
    path = Path(out) if out else Path(f"memento-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    if (path / "results.json").exists() and not force:
        raise ValueError(f"{path} already holds a report; pass --force to overwrite it or choose another --out")
    return path


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from ..bench import DEFAULT_METHODS, load_models, markdown_table, methods, run_benchmark

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    episodes = args.episodes or (3 if args.quick else 10)
    pages = _pages(args.pages, args.quick)
    names = [m.strip() for m in args.methods.split(",")] if args.methods else list(DEFAULT_METHODS)
    unknown = [m for m in names if m not in methods()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(methods())}")
    out = _out_dir(args.out, args.force)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models, model_names = load_models(args.base_model, args.model)
    bar = tqdm(total=episodes * len(pages) * len(names), desc="bench episodes", unit="ep", file=sys.stderr)
    report = run_benchmark(
        models=models,
        model_names=model_names,
        method_names=names,
        pages=pages,
        episodes=episodes,
        seed=args.seed,
        kv_budget=args.kv_budget,
        concurrent_agents=args.agents if args.agents is not None else (2 if args.quick else 4),
        out_dir=out,
        on_episode=lambda _run: bar.update(1),
    )
    bar.close()
    if args.json:
        print(json.dumps(report))
        return 0
    print(markdown_table(report["methods"], report["descriptions"]))
    print(f"\n{report['seconds']} s; report in {out}/ (results.json, table.md, sawtooth.png)")
    return 0
