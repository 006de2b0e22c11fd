"""Admission by projected pool occupancy: finishing requests give pages back, the window bounds the look-ahead,
idle sessions go before a running request is preempted, and a scripted burst does not become a preemption storm."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _vllm_helpers import make_scenario, sampling, scheduler_of, stats_for

pytestmark = pytest.mark.vllm

BS = 32


@dataclass
class _State:
    """The part of ``MementoState`` that admission reads (a learned sawtooth)."""

    max_cycle: int = 64
    ratio: float | None = 0.25
    progress: int = 0
    offset: int = 0
    config: Any = field(default_factory=lambda: SimpleNamespace(keep_last_n_blocks=0))

    def pending_tokens(self) -> int:
        return 0

    def kept_ratio(self) -> float | None:
        return self.ratio

    def open_cycle_progress(self) -> int:
        return self.progress


class _Sessions:
    def __init__(self, n: int) -> None:
        self.n = n
        self.released = 0

    def __len__(self) -> int:
        return self.n

    def release_lru(self, count: int) -> int:
        self.n -= count
        self.released += count
        return 4 * count


def _request(rid: str, tokens: int, remaining: int, running: bool = True) -> Any:
    from vllm.v1.request import RequestStatus

    status = RequestStatus.RUNNING if running else RequestStatus.WAITING
    return SimpleNamespace(request_id=rid, status=status, num_tokens=tokens, max_tokens=remaining, num_output_tokens=0)


def _scheduler(running: list[Any], held: dict[str, int], free: int, allocate: Any = None) -> Any:
    from autogen_memento_vllm._common import PluginOptions
    from autogen_memento_vllm.admission import Admission

    sched = SimpleNamespace(
        running=running,
        memento_states={r.request_id: _State() for r in running},
        _bs=BS,
        max_model_len=4096,
        _pool=SimpleNamespace(get_num_free_blocks=lambda: free),
        _manager=SimpleNamespace(req_to_blocks={k: [object()] * v for k, v in held.items()}),
        kv_cache_manager=SimpleNamespace(allocate_slots=allocate or (lambda *a, **k: ["page"])),
        memento_sessions=_Sessions(0),
    )
    sched.memento_admission = Admission(sched, PluginOptions(admission_margin=0.0, admission_horizon="life"))
    return sched


def _candidate(sched: Any) -> Any:
    cand = _request("c", 32, 384, running=False)
    sched.memento_states["c"] = _State()
    return cand


def test_pages_of_a_finishing_request_are_counted_as_coming_back() -> None:
    # A holds 10 pages and finishes in 3 steps; B and the candidate C are young (1 page now, 6 at their end).
    old, young = _request("a", 320, 3), _request("b", 32, 384)
    sched = _scheduler([old, young], {"a": 10, "b": 1}, free=8)
    adm = sched.memento_admission
    cand = _candidate(sched)
    env = adm.envelope(cand)
    capacity = 8 + 10 + 1
    peaks = [adm.projected_pages([adm.envelope(r)], np.array([r.max_tokens - 1]))[0] for r in (old, young, cand)]
    assert sum(peaks) > capacity  # reserving every request's own lifetime peak would refuse C
    assert adm.fits(cand, env)  # the projection admits it: A's pages are back before B and C grow


def test_a_long_running_neighbour_keeps_the_candidate_waiting_unless_the_window_is_short() -> None:
    long_, young = _request("a", 320, 400), _request("b", 32, 384)
    sched = _scheduler([long_, young], {"a": 10, "b": 1}, free=8)
    adm = sched.memento_admission
    cand = _candidate(sched)
    assert not adm.fits(cand, adm.envelope(cand))  # at C's end A is still there, grown by its kept share
    adm.begin_step()
    adm.horizon = 3
    assert adm.fits(cand, adm.envelope(cand))  # a 3-step window only checks the next 3 steps


def test_allocate_slots_defers_a_candidate_that_does_not_fit_and_plans_an_admitted_one() -> None:
    long_, young = _request("a", 320, 400), _request("b", 32, 384)
    sched = _scheduler([long_, young], {"a": 10, "b": 1}, free=8)
    adm = sched.memento_admission
    adm.install()
    cand = _candidate(sched)
    adm.begin_step()
    assert sched.kv_cache_manager.allocate_slots(cand, 32) is None
    assert adm.deferred == 1
    adm.begin_step()
    adm.horizon = 3
    assert sched.kv_cache_manager.allocate_slots(cand, 32) == ["page"]
    assert adm._plan is not None and adm._plan.ids[-1] == "c"  # later candidates of this step count C's growth


def test_idle_sessions_are_released_before_a_running_request_would_be_preempted() -> None:
    calls: list[int] = []

    def allocate(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return ["page"] if sched.memento_sessions.released >= 2 else None

    sched = _scheduler([_request("a", 320, 400)], {"a": 10}, free=0, allocate=allocate)
    sched.memento_sessions = _Sessions(3)
    sched.memento_admission.install()
    assert sched.kv_cache_manager.allocate_slots(sched.running[0], 1) == ["page"]
    assert sched.memento_sessions.released == 2 and len(calls) == 3
    assert sched.memento_admission.released_blocks == 8


def test_a_scripted_burst_runs_without_a_preemption_storm(engine: Any, reference: Any) -> None:
    """Sixteen scripted requests at once on the 24-page pool: vLLM's rule preempts (each preempted request is
    re-prefilled at its logical length), admission by projection never preempts with the whole-life window and
    preempts less with the one-cycle window, and all give the same tokens (greedy decoding is exact under
    preemption and compaction)."""
    from test_plugin import _vocab

    ref = reference(keep_last_n_blocks=0)
    scenarios = [make_scenario(ref.memento_ids, 400 + s, _vocab(ref), decode_blocks=2 + s % 3) for s in range(16)]
    adm = scheduler_of(engine).memento_admission
    preemptions: dict[str, int] = {}
    tokens: dict[str, list[list[int]]] = {}
    for name, enabled, horizon in (("vllm", False, "cycle"), ("life", True, "life"), ("cycle", True, "cycle")):
        adm.enabled, adm.horizon = enabled, horizon
        try:
            outs = engine.generate(
                [{"prompt_token_ids": sc.prompt} for sc in scenarios],
                [sampling(sc) for sc in scenarios],
                use_tqdm=False,
            )
        finally:
            adm.enabled, adm.horizon = True, "cycle"
        stats = [stats_for(engine, o.request_id) for o in outs]
        assert all(s.evictions >= 2 for s in stats)
        tokens[name] = [list(o.outputs[0].token_ids) for o in outs]
        preemptions[name] = sum(s.preemptions for s in stats)
    assert tokens["life"] == tokens["vllm"] == tokens["cycle"]
    assert preemptions["vllm"] > 0
    assert preemptions["life"] == 0
    assert preemptions["cycle"] < preemptions["vllm"]
