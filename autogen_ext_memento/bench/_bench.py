"""``run_benchmark``: every method on the same model and the same held-out episodes, at several lengths."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..tasks import HONEST_TASK, FactTrackerConfig, sample_episodes
from ._methods import DEFAULT_METHODS, ModelKind, methods
from ._report import markdown_table, plot_sawtooth, plot_scatter
from ._runner import ConcurrentRun, EpisodeRun, Models, run_concurrent, run_method, summarize


def load_models(base_dir: str | None = None, memento_dir: str | None = None) -> tuple[Models, dict[str, str]]:
    """The twins to compare: directories, or the shipped ``tiny_full`` and ``tiny_memento``; also their names."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import tiny_full_model_path, tiny_model_path

    paths = {"base": base_dir or str(tiny_full_model_path()), "memento": memento_dir or str(tiny_model_path())}
    names = {
        "base": base_dir or "tiny_full (shipped)",
        "memento": memento_dir or "tiny_memento (shipped)",
    }
    models: dict[ModelKind, tuple[Any, Any]] = {}
    for kind in ("base", "memento"):
        models[kind] = (
            AutoModelForCausalLM.from_pretrained(paths[kind], attn_implementation="sdpa").eval(),
            AutoTokenizer.from_pretrained(paths[kind]),
        )
    return models, names


def run_benchmark(
    *,
    models: Models | None = None,
    model_names: dict[str, str] | None = None,
    method_names: Sequence[str] = DEFAULT_METHODS,
    pages: Sequence[int] = (4, 8, 16),
    episodes: int = 10,
    seed: int = 20_000,
    kv_budget: int = 8192,
    max_new_tokens: int = 64,
    concurrent_agents: int = 4,
    out_dir: str | Path | None = None,
    on_episode: Callable[[EpisodeRun], None] | None = None,
    task: FactTrackerConfig = HONEST_TASK,
) -> dict[str, Any]:
    """Run the benchmark and return the report (also written to ``out_dir`` with a table and plots).

    The headline ``methods`` block averages over every length; ``by_length`` has one block per page count. Seeds
    are held out from the training recipe's seeds. ``models`` defaults to the shipped twins (each method runs on
    the twin trained for its mode); ``task`` is the twins' task (random goal keys) unless given.
    """
    if models is None:
        models, model_names = load_models()
    table = methods()
    unknown = [m for m in method_names if m not in table]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(table)}")
    t0 = time.perf_counter()
    runs: dict[str, list[EpisodeRun]] = {m: [] for m in method_names}
    by_length: dict[str, dict[str, Any]] = {}
    for n_pages in pages:
        eps = sample_episodes(episodes, seed + n_pages, task.with_pages(n_pages))
        block: dict[str, Any] = {}
        for m in method_names:
            rs = run_method(
                models, table[m], eps, max_new_tokens=max_new_tokens, tag=f"-p{n_pages}", on_episode=on_episode
            )
            runs[m] += rs
            block[m] = summarize(rs, kv_budget).as_dict()
        by_length[str(n_pages)] = block
    concurrent: dict[str, ConcurrentRun] = {}
    if concurrent_agents > 0:
        longest = max(pages)
        eps = sample_episodes(concurrent_agents, seed + 7 * longest, task.with_pages(longest))
        for m in method_names:
            concurrent[m] = run_concurrent(models, table[m], eps, max_new_tokens=max_new_tokens)
    report: dict[str, Any] = {
        "models": dict(model_names or {}),
        "workload": "fact_tracker (AssistantAgent + FunctionTool, held-out seeds)",
        "episodes": episodes,
        "pages": list(pages),
        "seed": seed,
        "kv_budget": kv_budget,
        "methods": {m: summarize(runs[m], kv_budget).as_dict() for m in method_names},
        "by_length": by_length,
        "concurrent": {
            "agents": concurrent_agents,
            "pages": max(pages),
            "methods": {m: r.as_dict() for m, r in concurrent.items()},
        },
        "descriptions": {m: table[m].description for m in method_names},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if out_dir is not None:
        write_report(report, runs, Path(out_dir), {m: r.pool_trace for m, r in concurrent.items()})
    return report


def write_report(
    report: dict[str, Any],
    runs: dict[str, list[EpisodeRun]],
    out: Path,
    pool_traces: dict[str, list[int]] | None = None,
) -> None:
    """``results.json``, ``table.md`` and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    longest = str(max(report["pages"]))
    lines = [
        f"# Benchmark: {report['workload']}",
        "",
        f"models {', '.join(f'{k}: `{v}`' for k, v in report['models'].items())}; {report['episodes']} episodes per length, pages {report['pages']}, "
        f"seed {report['seed']}; KV budget for capacity {report['kv_budget']} tokens.",
        "",
        "## All lengths",
        "",
        markdown_table(report["methods"], report["descriptions"]),
    ]
    for n_pages, block in report["by_length"].items():
        lines += ["", f"## {n_pages} pages", "", markdown_table(block)]
    conc = report.get("concurrent", {})
    if conc.get("methods"):
        lines += [
            "",
            f"## {conc['agents']} agents at once on one backend ({conc['pages']} pages each)",
            "",
            "| method | accuracy | pool peak KV (tok) | prompt tok processed | completion tok/s |",
            "|---|---|---|---|---|",
        ]
        for name, c in conc["methods"].items():
            lines.append(
                f"| {name} | {c['accuracy']:.1%} | {c['pool_peak_kv_tokens']} | {c['prompt_tokens']} | "
                f"{c['tokens_per_s']:.1f} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    traces = {m: rs[-1].trace for m, rs in runs.items() if rs and str(rs[-1].pages) == longest}
    plot_sawtooth(traces, out / "sawtooth.png", f"live KV, one {longest}-page episode")
    plot_scatter(report["methods"], out / "accuracy_vs_peak_kv.png", "accuracy vs peak KV (all lengths)")
    if pool_traces:
        plot_sawtooth(pool_traces, out / "pool.png", "live KV of all concurrent sessions (pool occupancy)")
