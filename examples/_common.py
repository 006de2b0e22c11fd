"""Shared plumbing for the examples: arguments, model clients, per-agent context reports and sawtooth plots."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen_core import EVENT_LOGGER_NAME
from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo

from autogen_ext_memento.context import MementoChatCompletionContext, ViewStats
from autogen_ext_memento.wrapping import MementoContextClient

# Replay clients warn on every token count of a non-string message; the examples' own counts are what matter here.
logging.getLogger(EVENT_LOGGER_NAME).setLevel(logging.ERROR)

OPENAI_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "family": ModelFamily.UNKNOWN,
    "structured_output": False,
    "multiple_system_messages": True,
}


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every example takes."""
    p = argparse.ArgumentParser(prog=f"python examples/{name}.py", description=description)
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--model", default=None, help="model name on that server")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"))
    p.add_argument(
        "--out",
        default=None,
        help="directory for the sawtooth PNGs and summary.json (default: a directory under the system temp dir)",
    )
    p.add_argument("--keep-last", type=int, default=1, help="blocks kept whole (keep_last_n_blocks)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def out_dir(args: argparse.Namespace, name: str) -> Path:
    """The output directory (never inside the package)."""
    path = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "autogen-memento-runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def online_client(args: argparse.Namespace) -> ChatCompletionClient | None:
    """An OpenAI-compatible client when ``--base-url`` is given, else ``None`` (offline)."""
    if not args.base_url:
        return None
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(
        model=args.model or "default",
        base_url=args.base_url,
        api_key=args.api_key,
        model_info=OPENAI_MODEL_INFO,
    )


@dataclass
class AgentSeries:
    """Context tokens per model call of one agent: as sent (live) and as the uncompacted history (full)."""

    name: str
    live: list[int] = field(default_factory=list)
    full: list[int] = field(default_factory=list)
    kv: list[int] = field(default_factory=list)

    @classmethod
    def from_trace(cls, name: str, trace: Sequence[ViewStats]) -> AgentSeries:
        return cls(name, [s.view_tokens for s in trace], [s.full_tokens for s in trace])

    @classmethod
    def from_context(cls, name: str, ctx: MementoChatCompletionContext) -> AgentSeries:
        return cls.from_trace(name, ctx.trace)

    @classmethod
    def from_client(cls, name: str, client: MementoContextClient) -> AgentSeries:
        trace: list[ViewStats] = []
        for caller in client.callers():
            trace += client.context_trace(caller)
        return cls.from_trace(name, trace)

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.live),
            "live_tokens": self.live[-1] if self.live else 0,
            "peak_tokens": max(self.live, default=0),
            "full_context_tokens": self.full[-1] if self.full else 0,
            "peak_full_context_tokens": max(self.full, default=0),
            "live_per_call": self.live,
            "full_per_call": self.full,
            **({"kv_trace_peak": max(self.kv), "kv_trace_len": len(self.kv)} if self.kv else {}),
        }


def plot(series: AgentSeries, path: Path, title: str) -> Path:
    """Save the sawtooth of one agent: tokens sent per call vs the full history (and the live KV if known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if series.kv else 1, figsize=(11 if series.kv else 6.5, 3.6), squeeze=False)
    ax = axes[0][0]
    x = list(range(1, len(series.live) + 1))
    ax.plot(x, series.full, "--", color="grey", label="full context")
    ax.plot(x, series.live, "-o", color="tab:blue", markersize=3, label="memento context")
    ax.set_xlabel("model call")
    ax.set_ylabel("context tokens")
    ax.set_title(f"{title}: {series.name}")
    ax.legend(loc="upper left")
    if series.kv:
        ax2 = axes[0][1]
        ax2.plot(range(len(series.kv)), series.kv, color="tab:red", linewidth=0.8, label="live KV")
        ax2.plot(range(len(series.kv)), range(1, len(series.kv) + 1), "--", color="grey", label="full context KV")
        ax2.set_xlabel("token step")
        ax2.set_ylabel("KV entries")
        ax2.set_title("KV sawtooth (memento model)")
        ax2.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report(title: str, series: Sequence[AgentSeries], out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print per-agent live/peak context tokens, save one PNG per agent and ``summary.json``; return the summary."""
    summary: dict[str, Any] = {"example": title, "out": str(out), "agents": {}, **(extra or {})}
    print(f"\n{title}: context tokens per agent (memento context vs full history)")
    print(f"{'agent':<14}{'calls':>6}{'live':>8}{'peak':>8}{'full':>8}{'full peak':>11}")
    for s in series:
        d = s.summary()
        png = plot(s, out / f"sawtooth_{s.name}.png", title)
        d["png"] = str(png)
        summary["agents"][s.name] = d
        print(
            f"{s.name:<14}{d['calls']:>6}{d['live_tokens']:>8}{d['peak_tokens']:>8}"
            f"{d['full_context_tokens']:>8}{d['peak_full_context_tokens']:>11}"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"plots and summary.json in {out}")
    return summary
