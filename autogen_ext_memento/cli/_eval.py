"""``autogen-memento eval``: accuracy and live KV of a memento model in four modes on held-out episodes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="accuracy, peak KV and AUC KV in four modes (full, memento_kv, restart, truncate)",
        description=(
            "Plays held-out fact-tracker episodes in generation mode through TransformersBackend sessions in four "
            "modes, on the same episodes: full context, memento with physical KV eviction, restart mode (memento KV "
            "recomputed from its text) and truncation without mementos. Prints a table (or JSON with --json) and "
            "writes eval.json and sawtooth.png to --out."
        ),
    )
    p.add_argument("--model", default=None, help="model directory (default: the shipped tiny memento model)")
    p.add_argument("--episodes", type=int, default=50, help="number of held-out episodes")
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out episodes")
    p.add_argument("--pages", default="1-5", help="pages per episode: N or LO-HI (training range: 1-5)")
    p.add_argument("--modes", default="full,memento_kv,restart,truncate", help="comma-separated modes")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="directory for eval.json and sawtooth.png")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.set_defaults(func=run)


def _pages(text: str) -> tuple[int, int]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return int(lo), int(hi)
    return int(text), int(text)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..evaluation import MODES, evaluate, format_table, plot_sawtooth

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.model
    if path is None:
        from ..assets import tiny_model_path

        path = str(tiny_model_path())
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown modes {bad}; known: {', '.join(MODES)}")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    report = evaluate(
        model,
        tok,
        episodes=args.episodes,
        seed=args.seed,
        pages=_pages(args.pages),
        modes=modes,  # type: ignore[arg-type]
        max_new_tokens=args.max_new_tokens,
    )
    report["model"] = str(path)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, indent=1))
        plot_sawtooth(report, out / "sawtooth.png")
    if args.json:
        slim = {k: v for k, v in report.items() if k != "traces"}
        print(json.dumps(slim, indent=1))
    else:
        print(format_table(report))
        if args.out:
            print(f"wrote {Path(args.out) / 'eval.json'} and {Path(args.out) / 'sawtooth.png'}")
    return 0
