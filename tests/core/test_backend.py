"""TransformersBackend: sessions, incremental prefill, rebuilds, sampling, the block cap, the KV trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autogen_ext_memento import MementoConfig, SamplingParams, TransformersBackend
from autogen_ext_memento._tiny import build_tiny_qwen3
from autogen_ext_memento.testing import ScriptedCompletions


@pytest.fixture()
def backend(tiny_tokenizer: Any) -> TransformersBackend:
    return TransformersBackend(build_tiny_qwen3(len(tiny_tokenizer)), tiny_tokenizer)


def enc(backend: TransformersBackend, text: str) -> list[int]:
    return list(backend.tokenizer.encode(text, add_special_tokens=False))


def test_appends_incrementally_and_rebuilds_on_mismatch(backend: TransformersBackend) -> None:
    p1 = enc(backend, "hello there, general")
    r1 = backend.generate("a", p1, SamplingParams(max_new_tokens=3))
    assert r1.prompt_tokens == len(p1) and not r1.rebuilt
    p2 = p1 + r1.token_ids + enc(backend, " more")
    r2 = backend.generate("a", p2, SamplingParams(max_new_tokens=3))
    # only the pending sampled token and the new text are computed
    assert r2.prompt_tokens == len(p2) - len(p1) - len(r1.token_ids) + 1 and not r2.rebuilt
    r3 = backend.generate("a", enc(backend, "something else"), SamplingParams(max_new_tokens=2))
    assert r3.rebuilt
    stats = backend.stats("a")
    assert stats is not None and stats.rebuilds == 1


def test_sessions_are_independent(backend: TransformersBackend) -> None:
    p = enc(backend, "same prompt")
    a = backend.generate("a", p, SamplingParams(max_new_tokens=5))
    b = backend.generate("b", p, SamplingParams(max_new_tokens=5))
    assert a.token_ids == b.token_ids  # greedy
    assert sorted(backend.session_ids()) == ["a", "b"]
    backend.close_session("a")
    assert backend.session_ids() == ["b"]


def test_sampling_is_seeded(backend: TransformersBackend) -> None:
    p = enc(backend, "seeded sampling")
    params = SamplingParams(max_new_tokens=8, temperature=1.5, top_p=0.9, top_k=50, seed=7)
    x = backend.generate("x", p, params).token_ids
    y = backend.generate("y", p, params).token_ids
    z = backend.generate("z", p, SamplingParams(max_new_tokens=8, temperature=1.5, seed=8)).token_ids
    assert x == y and x != z
    greedy = backend.generate("g", p, SamplingParams(max_new_tokens=8)).token_ids
    top1 = backend.generate("t", p, SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1, seed=1)).token_ids
    assert greedy == top1


def test_invalid_sampling_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_block_cap_forces_block_end(tiny_tokenizer: Any) -> None:
    backend = TransformersBackend(
        build_tiny_qwen3(len(tiny_tokenizer)), tiny_tokenizer, memento=MementoConfig(max_block_tokens=5)
    )
    ids = backend.memento_ids
    backend.logits_processor = ScriptedCompletions(tiny_tokenizer, ["<|block_start|>"])
    res = backend.generate("s", enc(backend, "go"), SamplingParams(max_new_tokens=12))
    assert res.forced_block_ends == 1
    assert res.token_ids[0] == ids.block_start and res.token_ids[6] == ids.block_end


def test_stop_token_is_pending_and_trace_is_a_sawtooth(backend: TransformersBackend) -> None:
    tok = backend.tokenizer
    script = ScriptedCompletions(
        tok, ["<|block_start|>" + "x " * 30 + "<|block_end|><|summary_start|>m<|summary_end|>"]
    )
    backend.logits_processor = script
    end = backend.memento_ids.summary_end
    p = enc(backend, "start")
    res = backend.generate("s", p, SamplingParams(max_new_tokens=100, stop_token_ids=[end]))
    assert res.finish_reason == "stop" and res.token_ids[-1] == end and res.evictions == 0
    held, _ = backend.session_tokens("s")
    assert held == p + res.token_ids  # the stop token is held, not yet computed
    res2 = backend.generate("s", held + enc(backend, " next"), SamplingParams(max_new_tokens=1))
    assert res2.evictions == 1  # computing summary_end triggers the eviction
    stats = backend.stats("s")
    assert stats is not None
    assert stats.peak_kv_tokens > stats.live_kv_tokens
    assert max(stats.trace) == stats.peak_kv_tokens and stats.auc_kv == sum(stats.trace)
    assert stats.full_context_kv_tokens == stats.logical_tokens
    drops = [i for i in range(1, len(stats.trace)) if stats.trace[i] < stats.trace[i - 1]]
    assert len(drops) == 1


def test_loads_from_a_local_dir_and_round_trips_config(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(str(tiny_model_dir), memento=MementoConfig(keep_last_n_blocks=1))
    comp = backend.dump_component()
    assert comp.provider == "autogen_ext_memento.TransformersBackend"
    again = TransformersBackend.load_component(comp)
    assert again.memento_config == backend.memento_config and again.max_model_len == backend.max_model_len


def test_in_memory_model_cannot_be_serialised(backend: TransformersBackend) -> None:
    backend._model_path = None  # noqa: SLF001 - simulate a model object without a path
    with pytest.raises(ValueError, match="cannot be serialised"):
        backend.dump_component()


def test_sliding_window_models_are_refused(tiny_tokenizer: Any) -> None:
    model = build_tiny_qwen3(len(tiny_tokenizer))
    model.config.layer_types = ["sliding_attention", "full_attention"]
    with pytest.raises(ValueError, match="full-attention"):
        TransformersBackend(model, tiny_tokenizer)
