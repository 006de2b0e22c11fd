"""The twin recipe: a word-level task tokenizer, an honest task, and both twins from one stage 1 and one data stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autogen_ext_memento.grammar import SUMMARY_END, SUMMARY_START, MementoTokenIds
from autogen_ext_memento.tasks import HONEST_TASK, episode_messages, sample_episodes, task_words
from autogen_ext_memento.training import TwinsRecipe, build_task_tokenizer, encode_episode, train_tiny_twins


@pytest.fixture(scope="module")
def tok() -> object:
    return build_task_tokenizer()


def test_every_task_word_is_one_token_and_text_round_trips(tok: object) -> None:
    from autogen_ext_memento.chat_format import render
    from autogen_ext_memento.tasks import tool_schema_tool

    for word in task_words():
        ids = tok.encode(word, add_special_tokens=False)  # type: ignore[attr-defined]
        assert len(ids) == 1, (word, ids)
    ep = sample_episodes(1, 5, HONEST_TASK.with_pages(3))[0]
    text = render(episode_messages(ep), [tool_schema_tool()]).text + "weird ünïcode alphabet 1234 <x>"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text  # type: ignore[attr-defined]


def test_the_twins_task_is_honest(tok: object) -> None:
    """Random goal keys (2-3 of >= 16), and a block holds >= 5x the tokens of its memento."""
    cfg = HONEST_TASK
    assert cfg.goal is None and cfg.n_keys >= 16 and cfg.min_goal_keys == 2 and cfg.goal_keys == 3
    eps = sample_episodes(200, 4242, cfg)
    goals = {e.goal for e in eps}
    assert len(goals) > 100 and {len(g) for g in goals} == {2, 3}
    ids = MementoTokenIds.from_tokenizer(tok)
    ratios = []
    for ep in eps[:40]:
        sample = encode_episode(ep, tok).input_ids
        starts = [i for i, t in enumerate(sample) if t == ids.block_start]
        ends = [i for i, t in enumerate(sample) if t == ids.block_end]
        m_open = [i for i, t in enumerate(sample) if t == ids.summary_start]
        m_close = [i for i, t in enumerate(sample) if t == ids.summary_end]
        for s, e, mo, mc in zip(starts, ends, m_open, m_close, strict=True):
            ratios.append((e - s) / (mc - mo + 1))
    assert min(ratios) >= 5.0, min(ratios)
    # the answer needs facts that exist only in evicted blocks: the last page rarely holds every goal value
    only_evicted = sum(
        any(k not in {f[0] for f in e.pages[-1].facts} and e.answer_values[k] != "?" for k in e.goal)
        for e in eps
        if len(e.pages) > 1
    )
    assert only_evicted > 0.5 * sum(len(e.pages) > 1 for e in eps)
    assert SUMMARY_START and SUMMARY_END


def test_twin_recipe_runs_both_twins_from_one_stage1(tmp_path: Path) -> None:
    recipe = TwinsRecipe(curriculum_steps=1, stage1_steps=2, stage2_steps=2, batch_size=2, jobs=1, probe_every=100)
    summary = train_tiny_twins(tmp_path, recipe)
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny_full")
    mem = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny_memento")
    s1 = AutoModelForCausalLM.from_pretrained(tmp_path / "stage1")
    # both start from the same stage-1 weights and move away from them differently
    w = "model.layers.0.mlp.up_proj.weight"
    sd_full, sd_mem, sd_s1 = full.state_dict(), mem.state_dict(), s1.state_dict()
    assert not torch.equal(sd_full[w], sd_s1[w]) and not torch.equal(sd_mem[w], sd_s1[w])
    assert not torch.equal(sd_full[w], sd_mem[w])
    logs = {
        k: json.loads((tmp_path / d / "training_log.json").read_text())
        for k, d in (("f", "tiny_full"), ("m", "tiny_memento"))
    }
    assert logs["f"]["stage1"] == logs["m"]["stage1"]
    assert logs["f"]["stage2"]["mask"] == "causal" and logs["m"]["stage2"]["mask"] == "memento"
    assert logs["f"]["stage2"]["data_seed"] == logs["m"]["stage2"]["data_seed"]
    assert [p["phase"] for p in summary["stage1"]["phases"]] == ["stage1-curriculum", "stage1"]
    assert not list(tmp_path.glob("*_work"))
