"""``autogen-memento bench``: every method side by side on the same model and episodes."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="compare memento with full context, AutoGen contexts, masking and summaries")
    p.add_argument("--model", help="model directory (default: the shipped tiny memento model)")
    p.add_argument("--quick", action="store_true", help="small run (< 3 minutes on 2 cores)")
    p.add_argument("--json", action="store_true", help="print the JSON report only")
    p.add_argument("--episodes", type=int, default=None, help="episodes per length (default 10, quick 4)")
    p.add_argument("--pages", default=None, help="comma-separated episode lengths (default 4,8,16; quick 4,8)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    p.add_argument("--seed", type=int, default=20_000, help="held-out episode seed")
    p.add_argument("--agents", type=int, default=None, help="concurrent agents on one backend (default 4, quick 2)")
    p.add_argument("--kv-budget", type=int, default=8192, help="KV budget (tokens) for the capacity column")
    p.add_argument("--out", default="benchmarks/latest", help="output directory for results.json, table.md, PNGs")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..bench import DEFAULT_METHODS, markdown_table, run_benchmark

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    episodes = args.episodes or (4 if args.quick else 10)
    pages = [int(x) for x in args.pages.split(",")] if args.pages else ([4, 8] if args.quick else [4, 8, 16])
    names = args.methods.split(",") if args.methods else list(DEFAULT_METHODS)
    report = run_benchmark(
        model_dir=args.model,
        method_names=names,
        pages=pages,
        episodes=episodes,
        seed=args.seed,
        kv_budget=args.kv_budget,
        concurrent_agents=args.agents if args.agents is not None else (2 if args.quick else 4),
        out_dir=args.out,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(markdown_table(report["methods"], report["descriptions"]))
    print(f"\n{report['seconds']} s; report in {args.out}/ (results.json, table.md, sawtooth.png)")
    return 0
