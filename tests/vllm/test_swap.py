"""Preemption by swap: a preempted compacted request resumes from a copy of its pages, token-identical, without
recomputing its history; the recompute path stays as the fallback; nothing leaks when a swapped request ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _vllm_helpers import Scenario, make_scenario, sampling, scheduler_of, stats_for

from autogen_ext_memento.backends import SamplingParams

pytestmark = pytest.mark.vllm


def _runner(engine: Any) -> Any:
    return engine.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner


def _scenario(reference: Any, seed: int) -> Scenario:
    from test_plugin import _vocab

    ref = reference(keep_last_n_blocks=0)
    return make_scenario(ref.memento_ids, seed, _vocab(ref), blocks_in_prompt=2, decode_blocks=5)


def _expected(reference: Any, sc: Scenario) -> list[int]:
    ref = reference(keep_last_n_blocks=0)
    ref.script = sc.force
    return list(ref.generate("swap", sc.prompt, SamplingParams(max_new_tokens=sc.max_tokens)).token_ids)


def _steps(engine: Any, rid: str, sc: Scenario, preempt_after: set[int]) -> Iterator[tuple[Any, list[int]]]:
    """Run one request step by step, preempting it after each eviction count in ``preempt_after``; yields its
    output and the logical tokens it had computed at each preemption."""
    llm = engine.llm_engine
    sched = scheduler_of(engine)
    llm.add_request(rid, {"prompt_token_ids": sc.prompt}, sampling(sc))
    done: set[int] = set()
    computed: list[int] = []
    while llm.has_unfinished_requests():
        for out in llm.step():
            if out.finished:
                yield out, computed
        for req in list(sched.running):
            state = sched.memento_states.get(req.request_id)
            if state is None or state.stats.evictions not in preempt_after - done:
                continue
            done.add(state.stats.evictions)
            computed.append(req.num_computed_tokens + state.offset)
            sched.running.remove(req)
            sched._preempt_request(req, time.monotonic())


def test_preempt_and_resume_by_swap_is_token_identical_and_recomputes_nothing(engine: Any, reference: Any) -> None:
    sc = _scenario(reference, 1201)
    expected = _expected(reference, sc)
    (plain,) = engine.generate([{"prompt_token_ids": sc.prompt}], [sampling(sc)], use_tqdm=False)
    assert list(plain.outputs[0].token_ids) == expected
    uninterrupted = stats_for(engine, plain.request_id)

    sched = scheduler_of(engine)
    swaps_before = sched.memento_swap.swaps_in
    ((out, preempted),) = list(_steps(engine, "swapped", sc, {1, 3, 5}))
    st = stats_for(engine, out.request_id)
    assert len(preempted) == 3 and st.preemptions == 3 and st.swaps == 3 and st.swapped_tokens > 0
    assert sched.memento_swap.swaps_in - swaps_before == 3
    assert list(out.outputs[0].token_ids) == expected
    assert st.evictions == uninterrupted.evictions
    # Resuming cost a copy: every token was computed once, as in the uninterrupted run.
    assert st.computed_tokens == uninterrupted.computed_tokens
    assert not sched.memento_swap.records and sched.memento_swap.used_blocks == 0
    assert not _runner(engine)._memento_swapped


def test_without_swap_space_a_preempted_request_recomputes_its_logical_history(engine: Any, reference: Any) -> None:
    sc = _scenario(reference, 1202)
    expected = _expected(reference, sc)
    swap = scheduler_of(engine).memento_swap
    budget, swap.budget_blocks = swap.budget_blocks, 0
    try:
        ((out, preempted),) = list(_steps(engine, "recomputed", sc, {4}))
    finally:
        swap.budget_blocks = budget
    st = stats_for(engine, out.request_id)
    assert len(preempted) == 1 and st.preemptions == 1 and st.swaps == 0
    assert list(out.outputs[0].token_ids) == expected
    (plain,) = engine.generate([{"prompt_token_ids": sc.prompt}], [sampling(sc)], use_tqdm=False)
    # The fallback re-prefills the whole logical history computed before the preemption (evicted blocks included).
    assert st.computed_tokens - stats_for(engine, plain.request_id).computed_tokens >= preempted[0] > len(sc.prompt)


def test_a_request_aborted_while_swapped_out_leaves_no_buffer(engine: Any, reference: Any) -> None:
    sc = _scenario(reference, 1203)
    llm = engine.llm_engine
    sched = scheduler_of(engine)
    for when in ("before the copy", "after the copy"):
        rid = f"aborted-{when.split()[0]}"
        llm.add_request(rid, {"prompt_token_ids": sc.prompt}, sampling(sc))
        req = None
        while req is None:
            llm.step()
            req = next((r for r in sched.running if sched.memento_states[r.request_id].offset), None)
        sched.running.remove(req)
        # Keep it waiting: no pages for a swap-in while the test looks.
        no_hit = (sched.kv_cache_manager.empty_kv_cache_blocks, 0, 0, False)
        original, sched.memento_swap.local_hit = sched.memento_swap.local_hit, lambda request, hit=no_hit: hit
        try:
            sched._preempt_request(req, time.monotonic())
            assert sched.memento_swap.records
            if when == "after the copy":
                llm.step()
                assert req.request_id in _runner(engine)._memento_swapped
            llm.abort_request([rid])
            llm.step()
        finally:
            sched.memento_swap.local_hit = original
        assert not sched.memento_swap.records and sched.memento_swap.used_blocks == 0, when
        assert not _runner(engine)._memento_swapped, when
        assert not llm.has_unfinished_requests()


def test_a_burst_preempted_by_vllms_rule_swaps_and_gives_the_same_tokens(engine: Any, reference: Any) -> None:
    """Sixteen scripted requests on the 24-page pool with vLLM's own admission (which preempts): with swap space
    the preempted compacted requests resume from copies, with the same tokens and fewer computed tokens."""
    from test_plugin import _vocab

    ref = reference(keep_last_n_blocks=0)
    scenarios = [make_scenario(ref.memento_ids, 1300 + s, _vocab(ref), decode_blocks=2 + s % 3) for s in range(16)]
    sched = scheduler_of(engine)
    adm, swap = sched.memento_admission, sched.memento_swap
    budget = swap.budget_blocks
    runs: dict[str, tuple[list[list[int]], list[Any]]] = {}
    adm.enabled = False
    try:
        for name, blocks in (("swap", budget), ("recompute", 0)):
            swap.budget_blocks = blocks
            outs = engine.generate(
                [{"prompt_token_ids": sc.prompt} for sc in scenarios],
                [sampling(sc) for sc in scenarios],
                use_tqdm=False,
            )
            runs[name] = ([list(o.outputs[0].token_ids) for o in outs], [stats_for(engine, o.request_id) for o in outs])
    finally:
        adm.enabled, swap.budget_blocks = True, budget
    assert runs["swap"][0] == runs["recompute"][0]
    swapped = sum(s.swaps for s in runs["swap"][1])
    assert swapped > 0 and sum(s.swaps for s in runs["recompute"][1]) == 0
    assert sum(s.computed_tokens for s in runs["swap"][1]) < sum(s.computed_tokens for s in runs["recompute"][1])
    assert not swap.records and not _runner(engine)._memento_swapped


def _run_specs(
    engine: Any, tag: str, specs: list[tuple[Scenario, int, bool]], aborts: dict[int, int]
) -> dict[int, Any]:
    """Run the specs together; abort request ``i`` at step ``aborts[i]``; the finished, unaborted outputs by index."""
    from vllm import SamplingParams as VllmSampling

    llm = engine.llm_engine
    for i, (sc, max_tokens, plain) in enumerate(specs):
        extra: dict[str, Any] = {"memento_force": {str(k): v for k, v in sc.force.items()}}
        if plain:
            extra["memento"] = False
        sp = VllmSampling(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, extra_args=extra)
        llm.add_request(f"{tag}-{i}", {"prompt_token_ids": sc.prompt}, sp)
    done: dict[int, Any] = {}
    step = 0
    while llm.has_unfinished_requests():
        for out in llm.step():
            if out.finished and out.outputs[0].finish_reason != "abort":
                done[int(out.request_id.split("-")[-1])] = out
        step += 1
        llm.abort_request([f"{tag}-{i}" for i, at in aborts.items() if at == step])
    return done


def test_fuzz_of_lengths_swaps_preemptions_and_aborts(engine: Any, reference: Any) -> None:
    """Random batches (mixed prompt blocks, decode blocks, lengths past ``max_model_len``, plain requests, aborts)
    under random swap budgets and admission rules: no crash, nothing leaks, and every finished request has the
    tokens of a reference pass (swap off, no aborts). ``MEMENTO_FUZZ_ROUNDS`` sets the rounds (default 4)."""
    import os
    import random

    from _vllm_helpers import MAX_LEN
    from test_plugin import _vocab

    ref = reference(keep_last_n_blocks=0)
    vocab = _vocab(ref)
    sched = scheduler_of(engine)
    swap, adm = sched.memento_swap, sched.memento_admission
    budget = swap.budget_blocks

    def unowned() -> int:  # free pages plus pages of idle sessions (earlier tests' sessions may expire meanwhile)
        return int(sched._pool.get_num_free_blocks()) + sched.memento_sessions.blocks_held()

    free = unowned()
    cases = swaps = 0
    try:
        for rnd in range(int(os.environ.get("MEMENTO_FUZZ_ROUNDS", "4"))):
            r = random.Random(7000 + rnd)
            specs = [
                (
                    make_scenario(
                        ref.memento_ids, 700_000 + 100 * rnd + i, vocab, r.randrange(0, 3), r.randrange(0, 12)
                    ),
                    r.randrange(8, MAX_LEN),
                    r.random() < 0.2,
                )
                for i in range(r.randrange(4, 17))
            ]
            aborts = {i: r.randrange(1, 80) for i in range(len(specs)) if r.random() < 0.2}
            swap.budget_blocks, adm.enabled = r.choice([0, 2, 6, budget]), r.random() < 0.5
            swaps_before = swap.swaps_out
            got = _run_specs(engine, f"fuzz{rnd}", specs, aborts)
            swaps += swap.swaps_out - swaps_before
            swap.budget_blocks, adm.enabled = 0, True
            expected = _run_specs(engine, f"fuzzref{rnd}", specs, {})
            assert len(expected) == len(specs)
            for i, out in got.items():
                assert list(out.outputs[0].token_ids) == list(expected[i].outputs[0].token_ids), (rnd, i)
                assert len(specs[i][0].prompt) + len(out.outputs[0].token_ids) <= MAX_LEN
            assert not swap.records and swap.used_blocks == 0 and not _runner(engine)._memento_swapped
            assert unowned() == free, rnd  # every page came back
            cases += len(specs)
    finally:
        swap.budget_blocks, adm.enabled = budget, True
    sys.stdout.write(f"fuzz: {cases} requests, {swaps} swaps\n")
    assert swaps > 0
