"""Evaluation of the twins: the paper's base-vs-memento table, with AutoGen's text-level contexts beside it."""

from ._fact_tracker_eval import (
    TRAINING_TASK,
    evaluate,
    evaluate_parallel,
    format_table,
    plot_sawtooth,
    scale_pages,
    summarize_mode,
    wilson_interval,
)

__all__ = [
    "TRAINING_TASK",
    "evaluate",
    "evaluate_parallel",
    "format_table",
    "plot_sawtooth",
    "scale_pages",
    "summarize_mode",
    "wilson_interval",
]
