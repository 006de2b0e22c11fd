"""Exact segmentation of a trace into blocks: maximise mean cut score − λ·CV(block token sizes).

Objective (published ``segment_variance_dp``): for ``K`` blocks of token sizes ``ℓ_1..ℓ_K`` (each ≥
``min_tokens``) and the boundary scores ``s_c`` of the ``K−1`` cuts,

    F = (Σ_c s_c) / K  −  λ · σ(ℓ) / μ(ℓ)

(the first block has no cut, so it contributes 0 to the mean; σ is the population standard deviation). With
``L = Σℓ`` fixed, ``μ = L/K`` and ``σ/μ = sqrt(K·Q − L²) / L`` where ``Q = Σℓ²``. So for a fixed ``K``,

    F = S/K − (λ/L)·sqrt(K·Q − L²),      S = Σ s_c,

which increases with ``S`` and decreases with ``Q``; both are sums over blocks.

Why this DP is exact. The published DP keeps one best partial sum per (prefix, #blocks) state; the mean and the
CV are not additive, so a partial solution with a worse partial sum can still end better, and that DP is a
heuristic. Here each state ``(i, k)`` (first ``i`` units in ``k`` blocks) keeps the whole Pareto front of
``(S, Q)`` pairs — maximal ``S``, minimal ``Q``. Extending two partial solutions of the same state by the same
suffix adds the same ``ΔS`` and ``ΔQ`` to both, so a dominated pair (``S' ≤ S`` and ``Q' ≥ Q``) stays dominated
after any extension and, because ``F`` is monotone in ``(S, Q)`` for fixed ``K``, can never yield a better final
value: discarding it loses nothing. At the end every front point of each ``(n, K)`` is evaluated with the true
``F`` and the maximum over all ``K`` is taken. ``S`` is rounded to 1e-9 so float noise does not keep duplicate
points; ``Q`` is an exact integer sum. Cost: ``O(Σ_k Σ_i |candidates(i,k)|·log)`` with NumPy doing each state's
merge; boundary scores on a coarse grid (integers 0–3 or their two-pass averages) keep fronts short — see
:func:`segment` for measured times.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Segmentation:
    """A segmentation: ``blocks`` are inclusive ``(first_unit, last_unit)`` pairs covering all units in order."""

    blocks: list[tuple[int, int]]
    objective: float
    mean_score: float
    cv: float
    sizes: list[int]

    @property
    def cuts(self) -> list[int]:
        """Unit indices after which a block ends (all blocks but the last)."""
        return [b for _, b in self.blocks[:-1]]


def objective(
    sizes: Sequence[int], scores: Sequence[float], cuts: Sequence[int], lam: float = 0.5
) -> tuple[float, float, float]:
    """``(F, mean cut score, CV)`` of cutting after the unit indices ``cuts`` (see the module docstring)."""
    bounds = [-1, *sorted(cuts), len(sizes) - 1]
    lens = [sum(sizes[a + 1 : b + 1]) for a, b in itertools.pairwise(bounds)]
    k = len(lens)
    mean = sum(scores[c] for c in cuts) / k
    mu = sum(lens) / k
    if mu <= 0:
        return mean, mean, 0.0
    var = sum((x - mu) ** 2 for x in lens) / k
    cv = math.sqrt(var) / mu
    return mean - lam * cv, mean, cv


def _result(sizes: Sequence[int], scores: Sequence[float], cuts: Sequence[int], lam: float) -> Segmentation:
    f, mean, cv = objective(sizes, scores, cuts, lam)
    bounds = [-1, *sorted(cuts), len(sizes) - 1]
    blocks = [(a + 1, b) for a, b in itertools.pairwise(bounds)]
    return Segmentation(blocks, f, mean, cv, [sum(sizes[a : b + 1]) for a, b in blocks])


def _feasible(lens: Sequence[int], min_tokens: int, max_tokens: int | None) -> bool:
    return all(x >= min_tokens and (max_tokens is None or x <= max_tokens) for x in lens)


def brute_force_segment(
    sizes: Sequence[int],
    scores: Sequence[float],
    *,
    lam: float = 0.5,
    min_tokens: int = 200,
    max_tokens: int | None = None,
) -> Segmentation:
    """Reference optimum by enumerating every cut set (exponential: tests and tiny inputs only)."""
    n = len(sizes)
    best: tuple[float, list[int]] | None = None
    for r in range(n):
        for cuts in itertools.combinations(range(n - 1), r):
            bounds = [-1, *cuts, n - 1]
            lens = [sum(sizes[a + 1 : b + 1]) for a, b in itertools.pairwise(bounds)]
            if not _feasible(lens, min_tokens, max_tokens):
                continue
            f = objective(sizes, scores, cuts, lam)[0]
            if best is None or f > best[0] + 1e-12:
                best = (f, list(cuts))
    return _result(sizes, scores, best[1] if best else [], lam)


@dataclass
class _Front:
    s: npt.NDArray[np.float64]
    q: npt.NDArray[np.float64]
    prev_j: npt.NDArray[np.int64]
    prev_idx: npt.NDArray[np.int64]


def segment(
    sizes: Sequence[int],
    scores: Sequence[float],
    *,
    lam: float = 0.5,
    min_tokens: int = 200,
    max_tokens: int | None = None,
    max_blocks: int | None = None,
) -> Segmentation:
    """The exact maximiser of mean cut score − ``lam``·CV(block sizes) with every block ≥ ``min_tokens``.

    Args:
        sizes: token count of each unit.
        scores: ``len(sizes) - 1`` boundary scores; ``scores[j]`` is the score of cutting after unit ``j``.
        lam: weight of the coefficient-of-variation penalty (published default 0.5).
        min_tokens: every block holds at least this many tokens (published 200).
        max_tokens: optional cap on a block's tokens.
        max_blocks: optional cap on the number of blocks.

    If no segmentation satisfies the size limits (e.g. the whole trace is under ``min_tokens``) the result is a
    single block. Ties are broken towards fewer blocks, then the earliest cuts.

    Measured (2-core CI machine, integer scores 0–3, unit sizes 5–60 tokens, ``min_tokens=200``): 400 units in
    about a second; see ``tests/pipeline/test_segment.py::test_segment_400_units_is_fast``.
    """
    n = len(sizes)
    if len(scores) != max(n - 1, 0):
        raise ValueError(f"need {max(n - 1, 0)} boundary scores for {n} units, got {len(scores)}")
    if n == 0:
        return Segmentation([], 0.0, 0.0, 0.0, [])
    prefix = np.zeros(n + 1, dtype=np.int64)
    prefix[1:] = np.cumsum(np.asarray(sizes, dtype=np.int64))
    total = int(prefix[-1])
    if min_tokens > 0:
        k_max = max(1, total // min_tokens)
    else:
        k_max = n
    if max_blocks is not None:
        k_max = min(k_max, max_blocks)
    cut_score = np.zeros(n + 1, dtype=np.float64)  # cut_score[j]: cutting before unit j (after unit j-1)
    if n > 1:
        cut_score[1:n] = np.asarray(scores, dtype=np.float64)
    pf = prefix.astype(np.float64)

    def valid_range(i: int) -> tuple[int, int]:
        # j with prefix[i] - prefix[j] in [min_tokens, max_tokens]: a contiguous range since prefix is sorted.
        hi = int(np.searchsorted(prefix, prefix[i] - min_tokens, side="right")) - 1
        lo = 0 if max_tokens is None else int(np.searchsorted(prefix, prefix[i] - max_tokens, side="left"))
        return lo, min(hi, i - 1)

    def alive(i: int) -> bool:
        # A prefix ending at i < n must leave room for one more block.
        return i == n or total - int(prefix[i]) >= min_tokens

    layers: list[dict[int, _Front]] = []
    first: dict[int, _Front] = {}
    for i in range(1, n + 1):
        size = int(prefix[i])
        if size >= min_tokens and (max_tokens is None or size <= max_tokens) and alive(i):
            first[i] = _Front(np.zeros(1), np.array([float(size) ** 2]), np.zeros(1, np.int64), np.zeros(1, np.int64))
    layers.append(first)
    for _k in range(2, k_max + 1):
        prev = layers[-1]
        if not prev:
            break
        js = sorted(prev)
        # Concatenate the previous layer's fronts in j order: each state's candidates are one contiguous slice.
        s_all = np.concatenate([prev[j].s for j in js])
        q_all = np.concatenate([prev[j].q for j in js])
        j_all = np.concatenate([np.full(len(prev[j].s), j, dtype=np.int64) for j in js])
        idx_all = np.concatenate([np.arange(len(prev[j].s), dtype=np.int64) for j in js])
        starts = np.searchsorted(j_all, np.arange(n + 2), side="left")
        s_shift = np.round(s_all + cut_score[j_all], 9)
        layer: dict[int, _Front] = {}
        for i in range(js[0] + 1, n + 1):
            if not alive(i):
                continue
            lo, hi = valid_range(i)
            if hi < lo:
                continue
            a, b = int(starts[lo]), int(starts[hi + 1])
            if b <= a:
                continue
            s = s_shift[a:b]
            q = q_all[a:b] + (pf[i] - pf[j_all[a:b]]) ** 2
            order = np.lexsort((q, -s))
            qs = q[order]
            running = np.minimum.accumulate(qs)
            keep = np.empty(len(qs), dtype=bool)
            keep[0] = True
            keep[1:] = qs[1:] < running[:-1]
            sel = order[keep]
            layer[i] = _Front(s[sel], q[sel], j_all[a:b][sel], idx_all[a:b][sel])
        layers.append(layer)

    best: tuple[float, int, int] | None = None  # (F, k, index in front)
    for k, layer in enumerate(layers, start=1):
        fr = layer.get(n)
        if fr is None:
            continue
        var_term = np.sqrt(np.maximum(k * fr.q - float(total) ** 2, 0.0)) / float(total) if total > 0 else 0.0 * fr.q
        f = fr.s / k - lam * var_term
        idx = int(np.argmax(f))  # first maximum: the smallest S on ties within a front
        if best is None or float(f[idx]) > best[0] + 1e-12:
            best = (float(f[idx]), k, idx)
    if best is None:
        return _result(sizes, scores, [], lam)
    _, k, idx = best
    cuts: list[int] = []
    i = n
    while k > 1:
        fr = layers[k - 1][i]
        j, idx = int(fr.prev_j[idx]), int(fr.prev_idx[idx])
        cuts.append(j - 1)
        i, k = j, k - 1
    return _result(sizes, scores, sorted(cuts), lam)
