"""One TRL training step per stage on a random tiny Qwen3, with the 4-D mask reaching the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from autogen_ext_memento.training import get_preset, length_grouped_order, train_stage


def test_length_grouped_order_keeps_batches_homogeneous() -> None:
    lengths = [5, 100, 7, 98, 6, 99, 50, 51]
    order = length_grouped_order(lengths, 2, seed=0)
    assert sorted(order) == list(range(8))
    pairs = [sorted(lengths[i] for i in order[k : k + 2]) for k in range(0, 8, 2)]
    assert sorted(pairs) == [[5, 6], [7, 50], [51, 98], [99, 100]]
    assert order == length_grouped_order(lengths, 2, seed=0)


def test_presets_follow_the_published_recipe() -> None:
    p = get_preset("qwen3-8b")
    assert (p.learning_rate, p.lr_scheduler_type, p.warmup_ratio, p.num_train_epochs) == (8e-5, "cosine", 0.05, 5.0)
    assert (p.max_grad_norm, p.bf16, p.gradient_checkpointing, p.max_length) == (1.0, True, True, 32768)
    assert (p.global_batch_size, p.num_samples, p.mask_delimiters, p.stages) == (512, 31000, False, (1, 2))
    assert get_preset("phi-4-reasoning").mask_delimiters is True
    assert get_preset("olmo-3-7b").mask_delimiters is False
    assert get_preset("qwen2.5-7b-3stage").stages == (0, 1, 2)
    assert p.memento_config(1).keep_last_n_blocks == -1 and p.memento_config(2).keep_last_n_blocks == 0
    assert [p.mask_stage(s) for s in (0, 1, 2)] == [1, 1, 2]
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_one_step_per_stage(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autogen_ext_memento.tasks import FactTrackerConfig
    from autogen_ext_memento.training import episode_dataset

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = episode_dataset(tok, 4, seed=3, config=FactTrackerConfig(min_pages=2, max_pages=3, facts_per_page=3))
    preset = get_preset("tiny").model_copy(
        update={"per_device_batch_size": 2, "global_batch_size": 2, "warmup_ratio": 0.0}
    )
    seen: list[Any] = []

    def spy(_m: Any, _a: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs.get("attention_mask"))

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.model.register_forward_pre_hook(spy, with_kwargs=True)
    m1, tok1, tr1 = train_stage(
        model,
        data,
        stage=1,
        preset=preset,
        output_dir=tmp_path / "s1",
        tokenizer=tok,
        max_steps=1,
        disable_tqdm=True,
        extra_args={"use_cpu": True, "save_strategy": "no"},
    )
    assert (tmp_path / "s1" / "model.safetensors").is_file()
    loss1 = [h["loss"] for h in tr1.state.log_history if "loss" in h] or [tr1.state.log_history[-1]["train_loss"]]
    assert all(torch.isfinite(torch.tensor(x)) for x in loss1)
    assert any(not torch.equal(before[k], v) for k, v in m1.state_dict().items())
    mask1 = seen[-1]
    assert mask1 is not None and mask1.dim() == 4 and mask1.dtype == torch.float32
    n = mask1.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    # stage 1: causal (pad rows see only themselves)
    for b in range(mask1.shape[0]):
        vis = mask1[b, 0] == 0
        assert not (vis & ~causal).any()  # nothing in the future
        assert vis.diagonal().all()  # no empty row

    seen.clear()
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path / "s1", attn_implementation="sdpa")
    model2.model.register_forward_pre_hook(spy, with_kwargs=True)
    _, _, tr2 = train_stage(
        model2,
        data,
        stage=2,
        preset=preset,
        output_dir=tmp_path / "s2",
        tokenizer=tok1,
        max_steps=1,
        disable_tqdm=True,
        extra_args={"use_cpu": True, "save_strategy": "no"},
    )
    assert (tmp_path / "s2" / "model.safetensors").is_file()
    assert tr2.state.global_step == 1
    mask2 = seen[-1]
    assert mask2 is not None and mask2.dim() == 4
    n2 = mask2.shape[-1]
    causal2 = torch.ones(n2, n2, dtype=torch.bool).tril()
    # stage 2: the memento rule hides evicted blocks from later tokens (strictly fewer visible keys than causal)
    hidden = [int(((mask2[b, 0] != 0) & causal2).sum()) for b in range(mask2.shape[0])]
    assert all(h > 0 for h in hidden)
