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
    recipe = TwinsRecipe(
        warmup_steps=1, curriculum_steps=1, stage1_steps=2, stage2_steps=2, batch_size=2, jobs=1, probe_every=100,
        position_gap=3, stage2_position_gap=7, memento_causal_share=0.5,
    )  # fmt: skip
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
    # the length augmentation: stage 1's gap in every stage-1 phase, stage 2's override for both twins alike
    assert logs["f"]["stage2"]["position_gap"] == logs["m"]["stage2"]["position_gap"] == 7
    assert {p["position_gap"] for p in summary["stage1"]["phases"]} == {3}
    # a share of the memento twin's stage-2 samples can be causal; the base twin is causal anyway
    assert (logs["m"]["stage2"]["causal_share"], logs["f"]["stage2"]["causal_share"]) == (0.5, 0.0)
    assert [p["phase"] for p in summary["stage1"]["phases"]] == ["stage1-warmup", "stage1-curriculum", "stage1"]
    assert not list(tmp_path.glob("*_work"))


def test_warmup_stops_once_the_copy_skill_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``warmup_until``: the warm-up ends at the first probe reaching the threshold; stage 1 runs in full."""
    from autogen_ext_memento.training import _twins

    calls: list[int] = []

    def fake_exact(model: object, batch: object) -> tuple[float, float]:
        calls.append(1)
        return (0.2, 0.5) if len(calls) <= 2 else (0.9, 0.99)  # two probes (causal, memento) per step

    monkeypatch.setattr(_twins, "teacher_forced_exact", fake_exact)
    recipe = TwinsRecipe(warmup_steps=6, warmup_until=0.5, stage1_steps=2, batch_size=2, probe_every=1)
    log = _twins.train_stage1(tmp_path / "stage1", recipe)
    warmup, stage1 = log["phases"]
    assert (warmup["phase"], warmup["steps"], warmup["max_steps"]) == ("stage1-warmup", 2, 6)
    assert [p["step"] for p in warmup["probes"]] == [1, 2]
    assert (stage1["steps"], stage1["max_steps"]) == (2, 2)


def test_bare_episodes_label_only_what_the_model_writes(tok: object) -> None:
    """Warm-up samples: the goal and pages are given; mementos, their closing token and the answer are labelled."""
    from autogen_ext_memento.training._warmup import bare_sample

    ep = sample_episodes(1, 11, HONEST_TASK.with_pages(3))[0]
    s = bare_sample(ep, tok)
    assert len(s.input_ids) == len(s.labels)
    labelled = tok.decode([t for t, lab in zip(s.input_ids, s.labels, strict=True) if lab != -100])  # type: ignore[attr-defined]
    expected = "".join(ep.memento(i) + SUMMARY_END for i in range(3)) + ep.answer + "<|im_end|>"
    assert labelled == expected
    text = tok.decode(s.input_ids)  # type: ignore[attr-defined]
    assert ep.goal_text in text and all(p.text in text for p in ep.pages)
