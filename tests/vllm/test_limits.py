"""Bounded lengths, tenant-scoped sessions, the TTL timer and start-up defaults of the memento vLLM plugin."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import pytest
from _vllm_helpers import MAX_LEN, Scenario, make_scenario, sampling, scheduler_of, stats_for

from autogen_ext_memento.backends import SamplingParams

pytestmark = pytest.mark.vllm


def _long_scenario(ids: Any, seed: int) -> Scenario:
    """A request whose logical length runs into ``max_model_len`` while its compacted length stays far below."""
    sc = make_scenario(ids, seed, 380, blocks_in_prompt=2, decode_blocks=24)
    return Scenario(sc.prompt, sc.force, MAX_LEN)  # more than fits: the logical cap must stop it


def _reference(reference: Any, sc: Scenario) -> Any:
    ref = reference(keep_last_n_blocks=0, max_model_len=MAX_LEN)
    ref.script = sc.force
    return ref.generate("long", sc.prompt, SamplingParams(max_new_tokens=sc.max_tokens))


def test_logical_length_is_capped_at_max_model_len(engine: Any, reference: Any) -> None:
    sc = _long_scenario(reference(keep_last_n_blocks=0).memento_ids, 900)
    exp = _reference(reference, sc)
    (out,) = engine.generate([{"prompt_token_ids": sc.prompt}], [sampling(sc)], use_tqdm=False)
    got = list(out.outputs[0].token_ids)
    assert got == exp.token_ids
    assert out.outputs[0].finish_reason == "length" and exp.finish_reason == "length"
    assert len(sc.prompt) + len(got) == MAX_LEN  # logical length, not the compacted one
    st = stats_for(engine, out.request_id)
    assert st.length_capped and st.evicted_tokens > 100  # the compacted length was far below the cap


def test_preempting_a_long_request_does_not_crash_and_stays_exact(engine: Any, reference: Any) -> None:
    sc = _long_scenario(reference(keep_last_n_blocks=0).memento_ids, 901)
    exp = _reference(reference, sc)
    llm = engine.llm_engine
    sched = scheduler_of(engine)
    llm.add_request("long-preempt", {"prompt_token_ids": sc.prompt}, sampling(sc))
    outs: list[Any] = []
    preempted = 0
    while llm.has_unfinished_requests():
        outs += [o for o in llm.step() if o.finished]
        for req in list(sched.running):
            state = sched.memento_states.get(req.request_id)
            logical = req.num_tokens + (state.offset if state else 0)
            # Preempt twice, late in its life: its logical token list is much longer than its compacted one.
            if state is not None and state.offset and logical > MAX_LEN - 60 * (2 - preempted) and preempted < 2:
                sched.running.remove(req)
                sched._preempt_request(req, time.monotonic())
                preempted += 1
    (out,) = outs
    assert preempted == 2
    assert list(out.outputs[0].token_ids) == exp.token_ids
    assert out.outputs[0].finish_reason == "length"
    assert stats_for(engine, out.request_id).preemptions == 2


def _salted(sc: Scenario, salt: str | None) -> dict[str, Any]:
    prompt: dict[str, Any] = {"prompt_token_ids": sc.prompt}
    if salt is not None:
        prompt["cache_salt"] = salt
    return prompt


def test_sessions_are_scoped_to_their_cache_salt(engine: Any, reference: Any) -> None:
    ids = reference(keep_last_n_blocks=0).memento_ids
    sched = scheduler_of(engine)
    a, b = ["tenant-a", None], ["tenant-b", None]
    sc = make_scenario(ids, 910, 380, blocks_in_prompt=1, decode_blocks=1)
    (first,) = engine.generate([_salted(sc, "tenant-a")], [sampling(sc, memento_session="shared")], use_tqdm=False)
    try:
        held = sched.memento_rpc("get", "shared", a)
        assert held is not None
        # Another salt (or none) cannot see, read or close it.
        assert all(s["session_id"] != "shared" for s in sched.memento_rpc("list", None, b))
        assert all(s["session_id"] != "shared" for s in sched.memento_rpc("list"))
        assert sched.memento_rpc("get", "shared", b) is None
        assert sched.memento_rpc("close", "shared", b) is False
        # ... nor adopt it: the same id and history under another salt is a fresh session, and a's stays intact.
        turn = Scenario(sc.prompt + list(first.outputs[0].token_ids), {}, 3)
        (other,) = engine.generate(
            [_salted(turn, "tenant-b")], [sampling(turn, memento_session="shared")], use_tqdm=False
        )
        st_b = stats_for(engine, other.request_id)
        assert st_b.adopted_tokens == 0 and not st_b.rebuilt
        after = sched.memento_rpc("get", "shared", a)
        assert (after["kv_tokens"], after["logical_tokens"]) == (held["kv_tokens"], held["logical_tokens"])
        # The owner adopts it.
        (mine,) = engine.generate(
            [_salted(turn, "tenant-a")], [sampling(turn, memento_session="shared")], use_tqdm=False
        )
        assert stats_for(engine, mine.request_id).adopted_tokens > 0
        assert list(mine.outputs[0].token_ids) == list(other.outputs[0].token_ids)  # same logical prompt
    finally:
        assert sched.memento_rpc("close", "shared", a) is True
        sched.memento_rpc("close", "shared", b)
    assert sched.memento_rpc("get", "shared", a) is None


def test_expire_runs_without_a_scheduler_step_and_limits_are_reported(engine: Any, reference: Any) -> None:
    ids = reference(keep_last_n_blocks=0).memento_ids
    sched = scheduler_of(engine)
    reg = sched.memento_sessions
    sc = make_scenario(ids, 920, 380, blocks_in_prompt=1, decode_blocks=0)
    engine.generate([{"prompt_token_ids": sc.prompt}], [sampling(sc, memento_session="ttl")], use_tqdm=False)
    limits = reg.limits
    try:
        assert sched.memento_rpc("limits") == limits.summary()
        assert set(limits.summary()) == {"session_ttl_s", "session_budget_blocks", "max_sessions"}
        free = sched.memento_rpc("memory")["free_blocks"]
        blocks = sched.memento_rpc("get", "ttl")["blocks"]
        reg.limits = dataclasses.replace(limits, ttl_s=0.0)
        time.sleep(0.01)
        assert sched.memento_rpc("expire") == 1  # what the API server's sweep timer calls
        assert sched.memento_rpc("get", "ttl") is None
        assert sched.memento_rpc("memory")["free_blocks"] == free + blocks
    finally:
        reg.limits = limits
        sched.memento_rpc("close", "ttl")


def test_api_server_sweep_timer_calls_expire() -> None:
    from _vllm_helpers import _ensure_plugin_importable

    _ensure_plugin_importable()
    from autogen_memento_vllm.sessions import MementoEndpointPlugin, sweep_period

    assert sweep_period(600) == 30.0 and sweep_period(1) == 0.5 and sweep_period(8) == 2.0
    calls: list[tuple[Any, ...]] = []

    class Core:
        async def call_utility_async(self, *args: Any) -> Any:
            calls.append(args)
            return {"session_ttl_s": 0.1} if args[1] == "limits" else 0

    async def run() -> None:
        state = SimpleNamespace()
        await MementoEndpointPlugin().init_state(SimpleNamespace(engine_core=Core()), state, SimpleNamespace())
        await asyncio.sleep(1.3)
        state.memento_sweeper.cancel()

    asyncio.run(run())
    assert sum(1 for c in calls if c[1] == "expire") >= 2


def test_session_api_clamps_max_tokens_to_the_logical_limit() -> None:
    from _vllm_helpers import _ensure_plugin_importable

    _ensure_plugin_importable()
    from autogen_memento_vllm.turns import clamp_max_tokens
    from fastapi import HTTPException

    assert clamp_max_tokens(100, 50, MAX_LEN) == 50
    assert clamp_max_tokens(500, 50, MAX_LEN) == MAX_LEN - 500
    with pytest.raises(HTTPException, match="max_model_len is 512"):
        clamp_max_tokens(MAX_LEN, 1, MAX_LEN)


def test_cpu_kv_default_only_where_vllm_would_refuse_to_start() -> None:
    from _vllm_helpers import _ensure_plugin_importable

    _ensure_plugin_importable()
    from autogen_memento_vllm.memory import GIB, MIB, default_kv_cache_bytes, fit_cpu_kv_cache

    def cfg(kv: int | None = None, util: float = 0.92) -> Any:
        return SimpleNamespace(
            cache_config=SimpleNamespace(kv_cache_memory_bytes=kv, gpu_memory_utilization=util),
            model_config=SimpleNamespace(model="/nonexistent", hf_text_config=None, dtype=None),
        )

    # A 24 GiB machine with 19 GiB free: vLLM's 92 % (22 GiB) refuses; the default fits.
    c = cfg()
    size = fit_cpu_kv_cache(c, 24 * GIB, 19 * GIB)
    assert size == c.cache_config.kv_cache_memory_bytes == default_kv_cache_bytes(19 * GIB, 0)
    assert MIB * 256 <= size <= 19 * GIB // 2
    assert default_kv_cache_bytes(10 * GIB, 2 * GIB) == (5 * GIB - int(2 * GIB * 1.2)) // MIB * MIB
    assert default_kv_cache_bytes(GIB, 8 * GIB) == 256 * MIB
    # Explicit sizes and setups that start anyway are left alone.
    assert fit_cpu_kv_cache(cfg(kv=GIB), 24 * GIB, 1 * GIB) is None
    assert fit_cpu_kv_cache(cfg(util=0.5), 24 * GIB, 19 * GIB) is None
    assert fit_cpu_kv_cache(cfg(), 24 * GIB, 23 * GIB) is None


def test_engine_finishes_all_requests_under_a_length_and_preemption_fuzz(engine: Any, reference: Any) -> None:
    """Many concurrent requests of mixed lengths on the small pool, some aborted: no crash, all accounted for."""
    import random

    ids = reference(keep_last_n_blocks=0).memento_ids
    r = random.Random(5)
    llm = engine.llm_engine
    scs = [
        make_scenario(ids, 950 + i, 380, blocks_in_prompt=r.randrange(0, 3), decode_blocks=r.randrange(0, 12))
        for i in range(12)
    ]
    for i, sc in enumerate(scs):
        llm.add_request(
            f"fuzz-{i}",
            {"prompt_token_ids": sc.prompt},
            sampling(Scenario(sc.prompt, sc.force, r.randrange(8, MAX_LEN))),
        )
    done: dict[str, Any] = {}
    steps = 0
    while llm.has_unfinished_requests():
        for o in llm.step():
            if o.finished:
                done[o.request_id] = o
        steps += 1
        if steps == 20:
            llm.abort_request([f"fuzz-{i}" for i in (3, 7)])
    assert len(done) >= 10
    for rid, o in done.items():
        sc = scs[int(rid.split("-")[1])]
        assert len(sc.prompt) + len(o.outputs[0].token_ids) <= MAX_LEN
