"""The paper's base-vs-memento table on held-out fact-tracker episodes, with AutoGen's contexts beside it.

Every mode plays the same episodes through an ``AssistantAgent`` with a real ``FunctionTool`` and
:class:`~autogen_ext_memento.MementoChatCompletionClient` on a :class:`~autogen_ext_memento.TransformersBackend`,
whose live-KV accounting gives peak and area under the curve. Each mode runs on the twin trained for it:

* ``full``: ``tiny_full`` (the base, causal attention only), full context;
* ``memento_kv``: ``tiny_memento``, each block's KV physically evicted at its memento, the memento's KV kept;
* ``restart``: ``tiny_memento``, each memento's KV recomputed from its text without its block (the dual-stream
  ablation);
* ``memento_full``: ``tiny_memento`` with nothing evicted (does the memento model *need* eviction?);
* ``buffered``, ``token_limited``: ``tiny_full`` under AutoGen's ``BufferedChatCompletionContext`` and
  ``TokenLimitedChatCompletionContext``; ``observation_masking``: ``tiny_full`` under our context with
  :class:`~autogen_ext_memento.ObservationMaskingWriter`.

Lengths are given as a *scale* of the longest training episode (``scale=1``: the training distribution).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..bench import PAPER_MODES, EpisodeRun, ModelKind, Models, methods, run_method
from ..tasks import HONEST_TASK, FactTrackerConfig, sample_episodes

TRAINING_TASK = HONEST_TASK
"""The task the twins are trained on (random goal keys, 1-5 pages): the evaluation's task."""


def scale_pages(scale: int, task: FactTrackerConfig = TRAINING_TASK) -> tuple[int, int]:
    """Page range of a length scale: ``1`` is the training range; ``K > 1`` is exactly ``K`` x the longest episode."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return task.min_pages, task.max_pages
    return scale * task.max_pages, scale * task.max_pages


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize_mode(runs: Sequence[EpisodeRun], seconds: float) -> dict[str, Any]:
    """One mode's row: accuracy with its 95% interval, KV means and prefill tokens per episode."""
    n = len(runs)
    solved = sum(r.correct for r in runs)
    lo, hi = wilson_interval(solved, n)

    def mean(key: str) -> float:
        return round(statistics.fmean(getattr(r, key) for r in runs), 2) if runs else 0.0

    return {
        "accuracy": solved / n if n else 0.0,
        "accuracy_ci95": [round(lo, 4), round(hi, 4)],
        "per_key_accuracy": round(statistics.fmean(r.per_key for r in runs), 4) if runs else 0.0,
        "peak_kv_tokens": mean("peak_kv_tokens"),
        "max_peak_kv_tokens": max((r.peak_kv_tokens for r in runs), default=0),
        "auc_kv": mean("auc_kv"),
        "full_context_kv_tokens": mean("full_context_kv_tokens"),
        "prefill_tokens": mean("prompt_tokens"),
        "evictions": mean("evictions"),
        "episodes": n,
        "seconds": round(seconds, 1),
    }


def _episodes(episodes: int, seed: int, pages: tuple[int, int]) -> list[Any]:
    lo, hi = pages
    return sample_episodes(episodes, seed, TRAINING_TASK.model_copy(update={"min_pages": lo, "max_pages": hi}))


def _assemble(
    runs: Mapping[str, list[EpisodeRun]], seconds: Mapping[str, float], episodes: int, seed: int, pages: tuple[int, int]
) -> dict[str, Any]:
    table = methods()
    report: dict[str, Any] = {"episodes": episodes, "seed": seed, "pages": list(pages), "modes": {}, "traces": {}}
    for name, rs in runs.items():
        report["modes"][name] = {
            **summarize_mode(rs, seconds[name]),
            "model": table[name].model,
            "description": table[name].description,
        }
        if rs:
            longest = max(range(len(rs)), key=lambda i: (rs[i].pages, -i))
            report["traces"][name] = rs[longest].trace
    return report


def _check_modes(modes: Sequence[str]) -> None:
    table = methods()
    unknown = [m for m in modes if m not in table]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown or list(modes)}; known: {', '.join(table)}")


def evaluate(
    models: Models,
    *,
    episodes: int = 100,
    seed: int = 12345,
    pages: tuple[int, int] = (1, 5),
    modes: Sequence[str] = PAPER_MODES,
    max_new_tokens: int = 64,
    on_episode: Callable[[EpisodeRun], None] | None = None,
) -> dict[str, Any]:
    """Run every mode on the same held-out episodes in this process; returns the report (with KV traces).

    Args:
        models: the twins, ``{"base": (model, tokenizer), "memento": (model, tokenizer)}`` (only the ones the
            chosen modes need).
        episodes, seed: the held-out set (the recipe trains on seeds 500-2999 and probes on 99999).
        pages: ``(lo, hi)`` pages per episode, drawn uniformly.
        modes: names from :data:`~autogen_ext_memento.bench.PAPER_MODES` (any benchmark method works).
        on_episode: called after every episode (progress bars).
    """
    _check_modes(modes)
    eps = _episodes(episodes, seed, pages)
    table = methods()
    runs: dict[str, list[EpisodeRun]] = {}
    seconds: dict[str, float] = {}
    for name in modes:
        t0 = time.perf_counter()
        runs[name] = run_method(models, table[name], eps, max_new_tokens=max_new_tokens, on_episode=on_episode)
        seconds[name] = time.perf_counter() - t0
    return _assemble(runs, seconds, episodes, seed, pages)


_WORKER: dict[str, Any] = {}


def _init_worker(paths: Mapping[ModelKind, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    _WORKER["models"] = {
        kind: (
            AutoModelForCausalLM.from_pretrained(p, attn_implementation="sdpa").eval(),
            AutoTokenizer.from_pretrained(p),
        )
        for kind, p in paths.items()
    }


def _run_chunk(
    mode: str, start: int, chunk: list[Any], max_new_tokens: int
) -> tuple[str, int, list[EpisodeRun], float]:
    t0 = time.perf_counter()
    runs = run_method(_WORKER["models"], methods()[mode], chunk, max_new_tokens=max_new_tokens, tag=f"-{start}")
    return mode, start, runs, time.perf_counter() - t0


def evaluate_parallel(
    paths: Mapping[ModelKind, str],
    *,
    jobs: int,
    episodes: int = 100,
    seed: int = 12345,
    pages: tuple[int, int] = (1, 5),
    modes: Sequence[str] = PAPER_MODES,
    max_new_tokens: int = 64,
    chunk: int = 10,
    on_episode: Callable[[EpisodeRun], None] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` spread over ``jobs`` processes (one CPU thread each), in chunks of episodes.

    Every episode is a fresh greedy session, so the report equals the single-process one; only wall time changes.
    """
    _check_modes(modes)
    eps = _episodes(episodes, seed, pages)
    parts: dict[str, dict[int, list[EpisodeRun]]] = {m: {} for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    ctx = get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(dict(paths), 1)) as pool:
        futures = [
            pool.submit(_run_chunk, m, i, eps[i : i + chunk], max_new_tokens)
            for m in modes
            for i in range(0, len(eps), chunk)
        ]
        for fut in as_completed(futures):
            mode, start, runs, secs = fut.result()
            parts[mode][start] = runs
            seconds[mode] += secs
            for r in runs:
                if on_episode is not None:
                    on_episode(r)
    ordered = {m: [r for start in sorted(parts[m]) for r in parts[m][start]] for m in modes}
    return _assemble(ordered, seconds, episodes, seed, pages)


def plot_sawtooth(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the live-KV trace of the longest episode, one line per mode, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for mode, trace in report.get("traces", {}).items():
        ax.plot(range(1, len(trace) + 1), trace, label=mode, linewidth=1.2)
    ax.set_xlabel("tokens processed (prefill + decode)")
    ax.set_ylabel("live KV entries (tokens)")
    ax.set_title(f"Live KV, longest of {report.get('episodes')} episodes, pages {report.get('pages')}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of the report."""
    head = f"{'mode':<20} {'model':<8} {'exact':>6} {'95% CI':>13} {'peak KV':>8} {'no-evict':>8} {'AUC KV':>9} {'prefill':>8}"
    lines = [head, "-" * len(head)]
    for mode, r in report["modes"].items():
        lo, hi = r["accuracy_ci95"]
        lines.append(
            f"{mode:<20} {r['model']:<8} {r['accuracy']:>6.1%} {f'{lo:.0%}-{hi:.0%}':>13} {r['peak_kv_tokens']:>8.0f} "
            f"{r['full_context_kv_tokens']:>8.0f} {r['auc_kv']:>9.0f} {r['prefill_tokens']:>8.0f}"
        )
    lines.append(f"episodes={report['episodes']} seed={report['seed']} pages={report['pages']}")
    return "\n".join(lines)
