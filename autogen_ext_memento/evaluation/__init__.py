"""Evaluation of memento models: accuracy and live KV in four modes (full, memento KV, restart, truncate)."""

from ._fact_tracker_eval import (
    MODES,
    EpisodeOutcome,
    EpisodeRunner,
    Mode,
    ModeResult,
    evaluate,
    evaluate_mode,
    format_table,
    mode_config,
    plot_sawtooth,
)

__all__ = [
    "MODES",
    "EpisodeOutcome",
    "EpisodeRunner",
    "Mode",
    "ModeResult",
    "evaluate",
    "evaluate_mode",
    "format_table",
    "mode_config",
    "plot_sawtooth",
]
