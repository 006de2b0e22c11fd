"""``autogen-memento demo``: an AssistantAgent with a tool runs a multi-turn task through the memento client."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._args import model_path, positive_int

_BARS = " ▁▂▃▄▅▆▇█"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run an AssistantAgent with a tool on a local memento model; show the sawtooth")
    p.add_argument(
        "--model",
        type=model_path,
        help="model directory, hub name or 'tiny' (default: the shipped tiny memento model)",
    )
    p.add_argument(
        "--blocks",
        type=positive_int,
        default=5,
        help="tool turns in the task (default 5, the tiny model's longest training episode)",
    )
    p.add_argument("--seed", type=int, default=0, help="held-out episode seed")
    p.add_argument(
        "--policy",
        choices=("auto", "trained", "scripted"),
        default="auto",
        help="trained model (default when available) or a scripted policy that forces the tokens",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable summary only")
    p.add_argument("--plot", help="save the sawtooth as a PNG here")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    p.set_defaults(func=run)


@dataclass
class DemoResult:
    model: str
    policy: str
    answer: str
    expected: str | None
    turns: int
    stats: dict[str, Any]
    trace: list[int]
    seconds: float

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "model": self.model,
            "policy": self.policy,
            "turns": self.turns,
            "evictions": s["evictions"],
            "peak_kv_tokens": s["peak_kv_tokens"],
            "full_context_kv_tokens": s["full_context_kv_tokens"],
            "auc_kv": s["auc_kv"],
            "full_context_auc_kv": s["full_context_auc_kv"],
            "live_kv_tokens": s["live_kv_tokens"],
            "evicted_tokens": s["evicted_tokens"],
            "prefill_tokens": s["prefill_tokens"],
            "rebuilds": s["rebuilds"],
            "answer": self.answer,
            "expected": self.expected,
            "correct": None if self.expected is None else self.answer.strip() == self.expected.strip(),
            "seconds": round(self.seconds, 2),
        }


def sparkline(trace: list[int], width: int = 72) -> str:
    """Downsample a live-KV trace to ``width`` bars (max per bucket, so peaks survive)."""
    if not trace:
        return ""
    top = max(trace)
    n = len(trace)
    cols = [max(trace[i * n // width : max((i + 1) * n // width, i * n // width + 1)]) for i in range(min(width, n))]
    return "".join(_BARS[max(1, round(v / top * (len(_BARS) - 1)))] for v in cols)


async def _run_agent(
    model_dir: str | None, blocks: int, seed: int, threads: int | None, policy: str = "auto"
) -> DemoResult:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage

    from .. import MementoChatCompletionClient, TransformersBackend
    from ._demo_task import make_scenario

    t0 = time.perf_counter()
    scenario = make_scenario(model_dir, blocks=blocks, seed=seed, policy=policy)
    backend = TransformersBackend(scenario.model, scenario.tokenizer, num_threads=threads)
    if scenario.logits_processor is not None:
        backend.logits_processor = scenario.logits_processor
    client = MementoChatCompletionClient(backend, session_id="demo", max_new_tokens=scenario.max_new_tokens)
    agent = AssistantAgent(
        "agent",
        model_client=client,
        tools=scenario.tools,
        system_message=scenario.system_message,
        max_tool_iterations=blocks + 2,
    )
    result = await agent.run(task=scenario.task)
    answers = [m.content for m in result.messages if isinstance(m, TextMessage) and m.source == "agent"]
    stats = client.session_stats("demo")
    assert stats is not None
    await client.close()
    return DemoResult(
        model=scenario.model_name,
        policy=scenario.policy,
        answer=answers[-1] if answers else "",
        expected=scenario.expected,
        turns=scenario.turns(),
        stats=stats.summary(),
        trace=list(stats.trace),
        seconds=time.perf_counter() - t0,
    )


def save_plot(trace: list[int], path: str, title: str) -> None:
    """Save the live-KV sawtooth and the full-context line as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(range(1, len(trace) + 1), range(1, len(trace) + 1), "--", color="grey", label="full context")
    ax.plot(range(1, len(trace) + 1), trace, color="tab:blue", label="memento (live KV)")
    ax.set_xlabel("tokens processed")
    ax.set_ylabel("KV entries")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("autogen_core").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    res = asyncio.run(_run_agent(args.model, args.blocks, args.seed, args.threads, args.policy))
    summary = res.summary()
    if args.plot:
        save_plot(res.trace, args.plot, "autogen-memento demo: live KV per token")
    if args.json:
        print(json.dumps(summary))
        return 0
    s = summary
    print(f"model:  {res.model}\npolicy: {res.policy}")
    print(f"turns:  {s['turns']} tool turns, {s['evictions']} evictions, {s['rebuilds']} session rebuilds")
    print("\nlive KV per token (the sawtooth):")
    print("  " + sparkline(res.trace))
    ratio = s["full_context_kv_tokens"] / max(1, s["peak_kv_tokens"])
    auc_ratio = s["full_context_auc_kv"] / max(1, s["auc_kv"])
    print(f"\npeak KV: {s['peak_kv_tokens']} tokens vs {s['full_context_kv_tokens']} full context ({ratio:.2f}x lower)")
    print(f"AUC KV:  {s['auc_kv']} vs {s['full_context_auc_kv']} ({auc_ratio:.2f}x lower)")
    print(f"answer:  {res.answer!r}" + (f"  (expected {res.expected!r})" if res.expected is not None else ""))
    print(f"time:    {s['seconds']} s")
    if args.plot:
        print(f"plot:    {args.plot}")
    return 0


def default_plot_path() -> str:
    return str(Path(tempfile.gettempdir()) / "autogen-memento-demo.png")
