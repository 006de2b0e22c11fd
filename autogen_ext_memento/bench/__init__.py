"""Benchmarks: memento vs full context, AutoGen's contexts, observation masking and text summaries."""

from ._bench import load_models, run_benchmark, write_report
from ._methods import DEFAULT_METHODS, PAPER_MODES, Method, ModelKind, methods
from ._report import markdown_table, plot_sawtooth, plot_scatter
from ._runner import (
    ConcurrentRun,
    EpisodeRun,
    MethodSummary,
    Models,
    run_concurrent,
    run_episode,
    run_method,
    summarize,
)

__all__ = [
    "DEFAULT_METHODS",
    "PAPER_MODES",
    "ConcurrentRun",
    "EpisodeRun",
    "Method",
    "MethodSummary",
    "ModelKind",
    "Models",
    "load_models",
    "markdown_table",
    "methods",
    "plot_sawtooth",
    "plot_scatter",
    "run_benchmark",
    "run_concurrent",
    "run_episode",
    "run_method",
    "summarize",
    "write_report",
]
