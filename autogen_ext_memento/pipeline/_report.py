"""Statistics of a pipeline output: what a run did and the blocks, mementos and judge pass rates of a file."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    """What a run did and the statistics of the whole output file (including samples of earlier runs)."""

    processed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": dict(self.failed),
            "usage": self.usage,
            "elapsed_s": round(self.elapsed_s, 3),
            **self.stats,
        }


def _dist(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "mean": round(statistics.fmean(xs), 3),
        "median": round(float(statistics.median(xs)), 3),
        "min": round(float(min(xs)), 3),
        "max": round(float(max(xs)), 3),
    }


def summarize_records(records: Sequence[Mapping[str, Any]], *, tau: float = 8.0, rounds: int = 2) -> dict[str, Any]:
    """Blocks per sample, block and memento sizes, compression ratio and judge pass rates per round.

    ``pass_rate_by_round[r-1]`` is the fraction of blocks whose memento scored ≥ ``tau`` in some round ≤ ``r``
    (cumulative, as the published 28% → 92%); ``first_try_pass_rate`` equals its first entry.
    """
    blocks_per = [len(r["blocks"]) for r in records]
    btok = [t for r in records for t in r["block_tokens"]]
    stok = [t for r in records for t in r["summary_tokens"]]
    ratios = [s / b for r in records for b, s in zip(r["block_tokens"], r["summary_tokens"], strict=True) if b]
    n_rounds = max([rounds, *(len(rs) for r in records for rs in r["judge_rounds"])])
    passed = [0] * n_rounds
    total_blocks = 0
    for r in records:
        for rs in r["judge_rounds"]:
            total_blocks += 1
            first = next((x["round"] for x in rs if x["score"] >= tau), None)
            if first is not None:
                for k in range(first - 1, n_rounds):
                    passed[k] += 1
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r.get("kind", "?")] = kinds.get(r.get("kind", "?"), 0) + 1
    return {
        "samples": len(records),
        "kinds": kinds,
        "blocks": total_blocks,
        "blocks_per_sample": _dist(blocks_per),
        "block_tokens": _dist(btok),
        "summary_tokens": _dist(stok),
        "compression_ratio": round(sum(stok) / sum(btok), 4) if sum(btok) else 0.0,
        "block_compression": _dist(ratios),
        "pass_rate_by_round": [round(p / total_blocks, 4) if total_blocks else 0.0 for p in passed],
        "mean_judge_score": round(statistics.fmean(s for r in records for s in r["judge_scores"]), 3)
        if total_blocks
        else 0.0,
    }
