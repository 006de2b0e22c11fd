"""Memento SFT on TRL: a thin ``SFTTrainer`` subclass that feeds the per-sample 4-D mask, and the stage runner."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..grammar import MementoTokenIds
from ._collator import MASK_KEY, MementoCollator
from ._presets import TrainingPreset
from ._tokens import add_and_init_tokens

logger = logging.getLogger(__name__)


def _sft_trainer_cls() -> Any:
    from trl import SFTTrainer

    class MementoSFTTrainer(SFTTrainer):  # type: ignore[misc]
        """TRL's ``SFTTrainer`` with the collator's 4-D additive mask swapped in for the model's forward pass.

        TRL reads ``inputs["attention_mask"]`` as a 2-D padding mask (it sums it to count tokens), so the collator
        keeps a 2-D mask under that key and the 4-D mask under :data:`MASK_KEY`; this subclass hands the 4-D mask
        to the model through a forward pre-hook for exactly one ``compute_loss`` call. Everything else (fused LM
        head loss, metrics, checkpoints, resumption, progress bars) is TRL's.
        """

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            mask = inputs.pop(MASK_KEY, None)
            if mask is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            import torch

            target = self.accelerator.unwrap_model(model)
            dtype = next(target.parameters()).dtype
            # Re-derive the additive mask in the compute dtype (finfo.min of float32 overflows float16).
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
                mask < 0, torch.finfo(dtype).min
            )

            def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
                kwargs["attention_mask"] = mask
                return args, kwargs

            handle = target.register_forward_pre_hook(hook, with_kwargs=True)
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                handle.remove()

    return MementoSFTTrainer


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int) -> list[int]:
    """Indices ordered so that each consecutive run of ``batch_size`` has similar lengths, runs in random order.

    With sequential sampling this keeps dynamic padding small (the prototype trained one block count per batch).
    """
    rng = random.Random(seed)
    idx = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(chunks)
    return [i for c in chunks for i in c]


def load_model_and_tokenizer(
    model: str | Any, tokenizer: str | Any | None = None, *, bf16: bool = False
) -> tuple[Any, Any]:
    """Load a causal LM with SDPA attention (and its tokenizer) from a path or hub name; objects pass through."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(tokenizer, str) or tokenizer is None:
        src = tokenizer if isinstance(tokenizer, str) else model
        if not isinstance(src, str):
            raise ValueError("pass a tokenizer when the model is an object")
        tokenizer = AutoTokenizer.from_pretrained(src)
    if isinstance(model, str):
        model = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa"
        )
    return model, tokenizer


def sft_arguments(
    preset: TrainingPreset, out: Path, *, steps: int, accum: int, group_by_length: bool
) -> dict[str, Any]:
    """The ``SFTConfig`` keyword arguments of a preset: its optimiser, schedule, precision and checkpointing."""
    sched_kwargs = {"min_lr_rate": preset.min_lr_ratio} if preset.lr_scheduler_type == "cosine_with_min_lr" else None
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=preset.per_device_batch_size,
        gradient_accumulation_steps=accum,
        learning_rate=preset.learning_rate,
        lr_scheduler_type=preset.lr_scheduler_type,
        lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=preset.warmup_ratio,
        num_train_epochs=preset.num_train_epochs,
        max_steps=steps,
        max_grad_norm=preset.max_grad_norm,
        weight_decay=preset.weight_decay,
        adam_beta1=preset.adam_beta1,
        adam_beta2=preset.adam_beta2,
        bf16=preset.bf16,
        activation_checkpointing=preset.gradient_checkpointing,
        seed=preset.seed,
        data_seed=preset.seed,
        logging_steps=preset.logging_steps,
        save_steps=preset.save_steps,
        save_total_limit=preset.save_total_limit,
        report_to="none",
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        shuffle_dataset=False,
        train_sampling_strategy="sequential" if group_by_length else "random",
        dataloader_num_workers=0,
    )


def train_stage(
    model: str | Any,
    dataset: Any,
    *,
    stage: int,
    preset: TrainingPreset,
    output_dir: str | Path,
    tokenizer: str | Any | None = None,
    max_steps: int | None = None,
    group_by_length: bool = True,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    disable_tqdm: bool | None = None,
    extra_args: dict[str, Any] | None = None,
) -> tuple[Any, Any, Any]:
    """Run one memento SFT stage on TRL and save the model and tokenizer to ``output_dir``.

    Args:
        model: base model (path, hub name or object); for stage 2, the stage-1 checkpoint.
        dataset: a ``datasets.Dataset`` with ``input_ids`` and ``labels`` (see :func:`build_dataset`).
        stage: 0 (plain reasoning SFT, causal), 1 (memento data, causal) or 2 (memento data, memento mask).
        preset: hyperparameters.
        output_dir: checkpoints go here (training resumes from the last one when ``resume``); the final model
            is saved at its root.
        tokenizer: the tokenizer (default: the model's).
        max_steps: override the preset's step count.
        group_by_length: order samples so batches have similar lengths (sequential sampling).
        callbacks: extra ``TrainerCallback`` s.
        extra_args: overrides passed to ``SFTConfig``.

    Returns:
        ``(model, tokenizer, trainer)``.
    """
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = load_model_and_tokenizer(model, tokenizer, bf16=preset.bf16)
    added = add_and_init_tokens(tok, model, seed=preset.seed)
    if added:
        logger.info("added memento tokens %s", sorted(added))
    ids = MementoTokenIds.from_tokenizer(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collator = MementoCollator(
        ids,
        stage=preset.mask_stage(stage),
        config=preset.memento_config(stage),
        pad_token_id=int(pad or 0),
        max_position_gap=preset.max_position_gap,
        causal_share=preset.causal_share,
        seed=preset.seed + stage,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = max(1, math.ceil(preset.global_batch_size / (preset.per_device_batch_size * world)))
    if preset.num_samples is not None and len(dataset) > preset.num_samples:
        dataset = dataset.select(range(preset.num_samples))
    if group_by_length:
        lengths = [len(x) for x in dataset["input_ids"]]
        dataset = dataset.select(length_grouped_order(lengths, preset.per_device_batch_size, preset.seed + stage))
    steps = preset.max_steps if max_steps is None else max_steps
    kwargs = sft_arguments(preset, out, steps=steps, accum=accum, group_by_length=group_by_length)
    kwargs["disable_tqdm"] = disable_tqdm
    kwargs.update(extra_args or {})  # explicit overrides win over the preset
    args = SFTConfig(**kwargs)
    trainer = _sft_trainer_cls()(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        data_collator=collator,
        callbacks=list(callbacks),
    )
    last = get_last_checkpoint(str(out)) if resume and out.exists() else None
    trainer.train(resume_from_checkpoint=last)
    model = trainer.model
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok, trainer
