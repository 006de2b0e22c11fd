"""The shipped twins (``tiny_full``, the causal base, and ``tiny_memento``, its memento fine-tune): they load, each
solves held-out episodes of the default task in its own mode through ``AssistantAgent`` and the client, and the memento
twin's logits under the stage-2 training mask equal its logits under physical KV eviction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from autogen_ext_memento import tiny_full_model_path, tiny_model_path
from autogen_ext_memento.grammar import (
    MementoConfig,
    MementoTokenIds,
    build_visibility,
    evictions,
    visibility_to_additive,
)
from autogen_ext_memento.tasks import HONEST_TASK, FactTrackerConfig, sample_episodes, task_words

HELD_OUT_SEED = 777_001  # the recipe trains on seeds 300-2999 (+ its seed) and probes on 99_999
N_EPISODES = 100
# The bar is 90% for each twin at training length (a real assertion); the shipped twins solve 99/100 (full)
# and 100/100 (memento_kv) on this set, so the bar leaves room for BLAS-level differences between machines only.
FLOOR = {"full": 0.9, "memento_kv": 0.9}


@pytest.fixture(scope="module")
def twin_paths() -> dict[str, Path]:
    try:
        return {"full": tiny_full_model_path(), "memento": tiny_model_path()}
    except FileNotFoundError as e:  # pragma: no cover - the twins are committed
        pytest.fail(str(e))


def test_default_task_is_the_twins_task() -> None:
    assert FactTrackerConfig() == HONEST_TASK
    assert HONEST_TASK.goal is None and HONEST_TASK.max_pages == 5


@pytest.mark.parametrize("twin", ["full", "memento"])
def test_shipped_twin_is_small_and_complete(twin_paths: dict[str, Path], twin: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    path = twin_paths[twin]
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "qwen3"
    assert all(t == "full_attention" for t in (cfg.layer_types or ["full_attention"]))
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size < 10 * 1024 * 1024
    assert (path / "README.md").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    MementoTokenIds.from_tokenizer(tok)
    assert tok.eos_token == "<|im_end|>"
    # the tokenizer: every task word is one token
    for word in task_words():
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    text = '<tool_call>\n{"name": "read", "arguments": {"cursor": 7}}\n</tool_call>'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_twins_share_tokenizer_and_architecture(twin_paths: dict[str, Path]) -> None:
    full, memento = (json.loads((twin_paths[t] / "tokenizer.json").read_text()) for t in ("full", "memento"))
    assert full["model"]["vocab"] == memento["model"]["vocab"]
    cfg = [json.loads((twin_paths[t] / "config.json").read_text()) for t in ("full", "memento")]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert cfg[0][key] == cfg[1][key]


@pytest.fixture(scope="module")
def report(twin_paths: dict[str, Path]) -> dict[str, Any]:
    """Held-out training-length episodes, each run by an AssistantAgent with a real FunctionTool through the client:
    the base twin with full context, the memento twin with physical eviction."""
    from autogen_ext_memento.bench import load_models
    from autogen_ext_memento.evaluation import evaluate

    models, _ = load_models(str(twin_paths["full"]), str(twin_paths["memento"]))
    return evaluate(models, episodes=N_EPISODES, seed=HELD_OUT_SEED, pages=(1, 5), modes=("full", "memento_kv"))


@pytest.mark.parametrize("mode", ["full", "memento_kv"])
def test_each_twin_solves_held_out_episodes_in_its_mode(report: dict[str, Any], mode: str) -> None:
    row = report["modes"][mode]
    assert row["episodes"] == N_EPISODES
    assert row["accuracy"] >= FLOOR[mode], row["accuracy"]


def test_memento_twin_evicts_every_block(report: dict[str, Any]) -> None:
    full, memento = report["modes"]["full"], report["modes"]["memento_kv"]
    assert full["evictions"] == 0
    assert memento["evictions"] >= 2.5  # 1-5 pages, one block evicted per page
    assert memento["peak_kv_tokens"] < 0.85 * memento["full_context_kv_tokens"]


def test_stage2_mask_logits_equal_physical_eviction(twin_paths: dict[str, Path]) -> None:
    """Teacher-forced: a full forward under the stage-2 mask gives the logits the backend gives after evicting."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autogen_ext_memento import TransformersBackend
    from autogen_ext_memento.training import encode_episode

    path = twin_paths["memento"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    ep = sample_episodes(1, HELD_OUT_SEED + 1, HONEST_TASK.with_pages(4))[0]
    ids = encode_episode(ep, tok).input_ids
    mids = MementoTokenIds.from_tokenizer(tok)
    cfg = MementoConfig(keep_last_n_blocks=0)
    mask = visibility_to_additive(build_visibility(ids, mids, cfg, stage=2))[None, None]
    with torch.no_grad():
        full = model(
            input_ids=torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], attention_mask=mask
        ).logits[0]
    triggers = [e.trigger for e in evictions(ids, mids, cfg)]
    assert len(triggers) == 4
    backend = TransformersBackend(model, tok, memento=cfg)
    # check right after each eviction and at the end: every prefix extends the session incrementally
    cuts = sorted({t + 2 for t in triggers} | {t + 9 for t in triggers} | {len(ids)})
    worst = 0.0
    for k in cuts:
        got = backend.next_token_logits("oracle", ids[:k])
        worst = max(worst, (got - full[k - 1]).abs().max().item())
    stats = backend.stats("oracle")
    assert stats is not None and stats.evictions == 4 and stats.rebuilds == 0
    assert worst < 1e-4, worst
    # and the kept cache really is smaller than the sequence
    assert stats.live_kv_tokens < len(ids) / 2


@pytest.mark.parametrize("twin", ["full", "memento"])
def test_training_log_reports_the_recipe(twin_paths: dict[str, Path], twin: str) -> None:
    log = json.loads((twin_paths[twin] / "training_log.json").read_text())
    assert 500_000 <= log["parameters"] <= 5_000_000
    phases = [p["phase"] for p in log["stage1"]["phases"]]
    assert phases[-1] == "stage1" and log["stage2"]["phase"] == f"stage2-{twin}"
    assert log["stage2"]["steps"] > 0 and log["stage2"]["probes"] and log["stage2"]["losses"], "learning curve missing"
    assert log["task"] == HONEST_TASK.model_dump(mode="json")
