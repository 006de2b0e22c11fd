"""Labels of agent-format samples, OpenMementos adapters and the related-word token initialisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from autogen_ext_memento.chat_format import CLOSURE_PREFIX, IM_END, IM_START
from autogen_ext_memento.grammar import BLOCK_END, BLOCK_START, SUMMARY_END, SUMMARY_START, MementoTokenIds
from autogen_ext_memento.tasks import Episode, Page, episode_messages, tool_schema_tool
from autogen_ext_memento.training import (
    IGNORE_INDEX,
    MementoCollator,
    add_and_init_tokens,
    assemble_full_response,
    build_dataset,
    encode_messages,
    load_dataset_rows,
    related_token_ids,
)


def _episode() -> Episode:
    pages = (Page(0, (("alpha", 3), ("kilo", 9)), 17), Page(17, (("bravo", 8),), None))
    return Episode(("alpha", "bravo"), pages)


def _labelled_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    cur: list[int] = []
    for t, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def test_labels_cover_exactly_what_the_model_writes(tiny_tokenizer: Any) -> None:
    ep = _episode()
    s = encode_messages(episode_messages(ep), tiny_tokenizer, [tool_schema_tool()])
    assert len(s.input_ids) == len(s.labels)
    runs = [tiny_tokenizer.decode(r, skip_special_tokens=False) for r in _labelled_runs(s.input_ids, s.labels)]
    call0 = f'{BLOCK_START}<tool_call>\n{{"name": "read", "arguments": {{"cursor": 0}}}}\n</tool_call>{IM_END}'
    call1 = call0.replace('"cursor": 0', '"cursor": 17')
    assert runs == [
        call0,
        f"{ep.memento(0)}{SUMMARY_END}",  # the closure prefix is the backend's, the turn's <|im_end|> too
        call1,
        f"{ep.memento(1)}{SUMMARY_END}",
        f"{ep.answer}{IM_END}",
    ]
    text = tiny_tokenizer.decode(s.input_ids, skip_special_tokens=False)
    assert text.count(CLOSURE_PREFIX) == 2 and text.startswith(f"{IM_START}system\n")
    # nothing from system, user or tool-response turns is labelled
    assert "tool_response" not in "".join(runs) and "Track" not in "".join(runs)


def test_full_rows_are_assembled_and_default_rows_read(tmp_path: Path, tiny_tokenizer: Any) -> None:
    full = {
        "problem": "What is 2+3?",
        "sentences": ["Let me add.", "2+3=5.", "Check: 5-3=2.", "The answer is 5."],
        "blocks": [[0, 1], [2, 2]],
        "block_summaries": ["2+3=5", "checked"],
    }
    expect = (
        f"<think>\n{BLOCK_START}Let me add. 2+3=5.{BLOCK_END}{SUMMARY_START}2+3=5{SUMMARY_END}\n"
        f"{BLOCK_START}Check: 5-3=2.{BLOCK_END}{SUMMARY_START}checked{SUMMARY_END}\n</think>\nThe answer is 5."
    )
    assert assemble_full_response(full) == expect
    with pytest.raises(ValueError):
        assemble_full_response({**full, "block_summaries": ["only one"]})
    default = {"problem": "Say hi.", "response": f"{BLOCK_START}hi{BLOCK_END}{SUMMARY_START}h{SUMMARY_END}hi"}
    pipeline_row = {**full, "response": "assembled by the pipeline"}  # issue-6 output: full schema + response
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (full, default, pipeline_row)) + "\n")
    rows = load_dataset_rows(path)
    ds = build_dataset(rows, tiny_tokenizer, config="auto")
    assert len(ds) == 3
    decoded = []
    for ids, labels in zip(ds["input_ids"], ds["labels"], strict=True):
        runs = _labelled_runs(ids, labels)
        assert len(runs) == 1  # the whole response (blocks and mementos included) and its <|im_end|>
        decoded.append(tiny_tokenizer.decode(runs[0], skip_special_tokens=False))
    assert decoded == [expect + IM_END, default["response"] + IM_END, "assembled by the pipeline" + IM_END]
    # the collator takes these rows as they are and hides block 0 from everything after its memento
    ids = MementoTokenIds.from_tokenizer(tiny_tokenizer)
    batch = MementoCollator(ids, stage=2)([ds[0]])
    row = list(ds[0]["input_ids"])
    vis = batch["memento_attention_mask"][0, 0] == 0
    first_end = row.index(ids.summary_end)
    first_block = row.index(ids.block_start) + 1
    assert vis[first_end, first_block] and not vis[first_end + 1, first_block]


def test_new_tokens_start_at_the_mean_of_related_words() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    corpus = ["block start begin section step end finish stop summary note recap done message turn"] * 20
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(
        corpus,
        trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    old = len(tok)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=old,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=32,
            tie_word_embeddings=True,
        )
    )
    before = model.get_input_embeddings().weight.detach().clone()
    sources = add_and_init_tokens(tok, model, std=0.0)
    assert set(sources) >= {BLOCK_START, BLOCK_END, SUMMARY_START, SUMMARY_END}
    w = model.get_input_embeddings().weight.detach()
    assert w.shape[0] == len(tok) > old
    assert torch.equal(w[:old], before)  # old rows untouched
    bs = tok.convert_tokens_to_ids(BLOCK_START)
    src = related_token_ids(tok, ["block", "start", "begin", "section", "step"], old)
    assert sources[BLOCK_START] == src and len(src) >= 5
    assert torch.allclose(w[bs], before[src].mean(0), atol=1e-6)
    # with noise: sigma ~= 0.01 around the same mean
    tok2 = PreTrainedTokenizerFast(tokenizer_object=raw)
    torch.manual_seed(0)
    model2 = Qwen3ForCausalLM(model.config.__class__(**{**model.config.to_dict(), "vocab_size": old}))
    base2 = model2.get_input_embeddings().weight.detach().clone()
    add_and_init_tokens(tok2, model2, std=0.01, seed=3)
    w2 = model2.get_input_embeddings().weight.detach()
    noise = torch.stack(
        [
            w2[tok2.convert_tokens_to_ids(t)] - base2[sources[t]].mean(0)
            for t in (BLOCK_START, BLOCK_END, SUMMARY_START, SUMMARY_END)
        ]
    )
    assert 0.005 < noise.std().item() < 0.02
    assert add_and_init_tokens(tok2, model2) == {}  # idempotent
