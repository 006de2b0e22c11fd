"""The segmentation DP: exact against brute force (hypothesis), better than a best-partial-sum DP, fast enough."""

from __future__ import annotations

import random
import statistics
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autogen_ext_memento.pipeline import brute_force_segment, objective, segment


def best_partial_sum_dp(sizes: list[int], scores: list[float], lam: float, m: int) -> float:
    """A DP that keeps one best partial cut-score sum per (prefix, #blocks), as the published one does."""
    n = len(sizes)
    pre = [0]
    for size in sizes:
        pre.append(pre[-1] + size)
    best: dict[tuple[int, int], tuple[float, float, list[int]]] = {}
    for i in range(1, n + 1):
        if pre[i] >= m:
            best[(i, 1)] = (0.0, float(pre[i] ** 2), [])
    for k in range(2, n + 1):
        for i in range(1, n + 1):
            cand = None
            for j in range(1, i):
                if (j, k - 1) in best and pre[i] - pre[j] >= m:
                    s, q, c = best[(j, k - 1)]
                    key = (s + scores[j - 1], -(q + (pre[i] - pre[j]) ** 2))
                    if cand is None or key > cand[0]:
                        cand = (key, (s + scores[j - 1], q + (pre[i] - pre[j]) ** 2, [*c, j - 1]))
            if cand:
                best[(i, k)] = cand[1]
    return max(objective(sizes, scores, best[(n, k)][2], lam)[0] for k in range(1, n + 1) if (n, k) in best)


def test_objective_matches_its_definition() -> None:
    sizes, scores = [10, 20, 30, 40], [3.0, 1.0, 2.0]
    f, mean, cv = objective(sizes, scores, [0, 2], lam=0.5)
    lens = [10, 50, 40]
    assert mean == pytest.approx((3.0 + 2.0) / 3)
    assert cv == pytest.approx(statistics.pstdev(lens) / statistics.fmean(lens))
    assert f == pytest.approx(mean - 0.5 * cv)


def test_exact_where_a_best_partial_sum_dp_is_not() -> None:
    sizes, scores = [8, 15, 20, 1, 7, 1], [2.0, 1.0, 3.0, 1.0, 2.0]
    exact = segment(sizes, scores, lam=0.5, min_tokens=1)
    brute = brute_force_segment(sizes, scores, lam=0.5, min_tokens=1)
    assert exact.objective == pytest.approx(brute.objective)
    assert exact.objective > best_partial_sum_dp(sizes, scores, 0.5, 1) + 5e-3


score_values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]), st.floats(0, 3, allow_nan=False))


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[int], list[float], float, int, int | None]:
    n = draw(st.integers(1, 10))
    sizes = draw(st.lists(st.integers(0, 80), min_size=n, max_size=n))
    scores = draw(st.lists(score_values, min_size=n - 1, max_size=n - 1))
    lam = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5]))
    m = draw(st.sampled_from([0, 1, 30, 100]))
    cap = draw(st.sampled_from([None, None, 150]))
    return sizes, scores, lam, m, cap


@settings(max_examples=250, deadline=None)
@given(instances())
def test_dp_equals_brute_force(inst: tuple[list[int], list[float], float, int, int | None]) -> None:
    sizes, scores, lam, m, cap = inst
    got = segment(sizes, scores, lam=lam, min_tokens=m, max_tokens=cap)
    ref = brute_force_segment(sizes, scores, lam=lam, min_tokens=m, max_tokens=cap)
    assert got.objective == pytest.approx(ref.objective, abs=1e-9)
    # The reported objective is the true objective of the reported cuts, and the blocks tile the units.
    assert got.objective == pytest.approx(objective(sizes, scores, got.cuts, lam)[0], abs=1e-9)
    assert [a for a, _ in got.blocks] == [0] + [c + 1 for c in got.cuts]
    assert got.blocks[-1][1] == len(sizes) - 1
    if len(got.blocks) > 1:
        assert all(s >= m and (cap is None or s <= cap) for s in got.sizes)


def test_infeasible_min_tokens_gives_one_block() -> None:
    got = segment([10, 20, 30], [3.0, 3.0], min_tokens=1000)
    assert got.blocks == [(0, 2)] and got.objective == 0.0


def test_strong_boundaries_and_even_sizes_are_chosen() -> None:
    sizes = [50] * 12
    scores = [0.0] * 11
    scores[3] = scores[7] = 3.0  # two major transitions splitting 600 tokens into three 200-token blocks
    got = segment(sizes, scores, lam=0.5, min_tokens=200)
    assert got.cuts == [3, 7]
    assert got.cv == 0.0 and got.objective == pytest.approx(2.0)


def test_rejects_wrong_score_count() -> None:
    with pytest.raises(ValueError):
        segment([1, 2, 3], [1.0])


def test_segment_400_units_is_fast() -> None:
    rng = random.Random(7)
    sizes = [rng.randint(5, 60) for _ in range(400)]
    scores = [float(rng.choice([0, 0, 0, 1, 1, 2, 3])) for _ in range(399)]
    t = time.perf_counter()
    got = segment(sizes, scores, lam=0.5, min_tokens=200)
    elapsed = time.perf_counter() - t
    assert all(s >= 200 for s in got.sizes)
    assert len(got.blocks) > 10
    assert elapsed < 20, elapsed  # ~1 s measured on the shared 2-core machine


def test_bound_pruning_changes_nothing_on_larger_inputs() -> None:
    import math

    from autogen_ext_memento.pipeline._segment import _Problem, _search

    rng = random.Random(11)
    for trial in range(6):
        n = 60
        sizes = [rng.randint(3, 50) for _ in range(n)]
        scores = [rng.choice([0.0, 0.0, 1.0, 1.5, 2.0, 3.0]) if trial % 2 else rng.random() * 3 for _ in range(n - 1)]
        prob = _Problem(sizes, scores, 0.5, 120, None, None)
        unpruned, cuts = _search(prob, keep_one=False, incumbent=-math.inf)
        assert cuts is not None
        got = segment(sizes, scores, lam=0.5, min_tokens=120)
        assert got.objective == pytest.approx(unpruned, abs=1e-9)
        assert got.objective >= _search(prob, keep_one=True, incumbent=-math.inf)[0] - 1e-9
