"""Benchmark reports: the Markdown table, JSON and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    ("accuracy", "accuracy", "{:.1%}"),
    ("peak_kv_tokens", "peak KV (tok)", "{:.0f}"),
    ("full_context_kv_tokens", "same tokens, no eviction", "{:.0f}"),
    ("auc_kv", "AUC KV (tok²)", "{:.3g}"),
    ("prompt_tokens", "prompt tok processed", "{:.0f}"),
    ("latency_per_call_s", "s / call", "{:.3f}"),
    ("capacity_at_budget", "sessions @ budget", "{:.1f}"),
)


def markdown_table(summaries: Mapping[str, Mapping[str, Any]], descriptions: Mapping[str, str] | None = None) -> str:
    """One row per method, in the given order."""
    head = "| method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|---|" + "---|" * len(COLUMNS)
    rows = [head, sep]
    for name, s in summaries.items():
        cells = [fmt.format(s[key]) for key, _, fmt in COLUMNS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if descriptions:
        rows.append("")
        rows += [f"- `{n}`: {d}" for n, d in descriptions.items() if n in summaries]
    return "\n".join(rows)


def plot_sawtooth(traces: Mapping[str, Sequence[int]], path: Path, title: str) -> None:
    """Live KV per processed token for one episode under each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, trace in traces.items():
        ax.plot(range(1, len(trace) + 1), trace, label=name, linewidth=1)
    ax.set_xlabel("tokens processed (prefill + decode)")
    ax.set_ylabel("live KV entries")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(summaries: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    """Accuracy vs mean peak KV, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in summaries.items():
        ax.scatter(s["peak_kv_tokens"], s["accuracy"])
        ax.annotate(name, (s["peak_kv_tokens"], s["accuracy"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("mean peak live KV (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
