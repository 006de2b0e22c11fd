"""Training presets: the published Memento SFT recipe per model family, and the tiny CPU recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..grammar import MementoConfig

Family = Literal["qwen3", "phi4", "olmo3", "qwen2", "tiny"]


class TrainingPreset(BaseModel):
    """Hyperparameters of a memento SFT run (every stage uses the same ones, as in the paper).

    The published recipe: AdamW (β 0.9/0.999, no weight decay), learning rate 8e-5 with cosine decay and 5% warmup,
    5 epochs per stage, gradient clipping 1.0, bf16 with gradient checkpointing, sequence length 32K, ~31K samples,
    global batch 512, seed 42; stage 2 starts from the stage-1 checkpoint. ``mask_delimiters`` follows the family
    (``False`` for Qwen3 and OLMo 3, ``True`` for Phi-4). Non-reasoning bases use three stages: plain reasoning SFT
    (stage 0, causal, data without mementos), then stages 1 and 2.

    Args:
        name: preset name.
        base_model: hub name or path of the base model (``None``: given on the command line).
        family: model family (decides ``mask_delimiters``).
        stages: the stages the one-shot run goes through, in order.
        mask_delimiters: evict block delimiters with the block (Phi-4) or keep them visible.
        max_length: sequence length; longer samples are dropped.
        global_batch_size: samples per optimiser step over all devices (reached by gradient accumulation).
        per_device_batch_size: micro-batch per device.
        num_samples: how many samples to train on (``None``: all).
        num_train_epochs: epochs per stage (ignored when ``max_steps`` > 0).
        max_steps: optimiser steps per stage (``-1``: by epochs).
        learning_rate, lr_scheduler_type, warmup_ratio, min_lr_ratio, weight_decay, adam_beta1, adam_beta2,
        max_grad_norm: optimiser settings.
        bf16: mixed precision.
        gradient_checkpointing: recompute activations in the backward pass.
        seed: training seed.
        max_position_gap: length augmentation: each block's positions end with a random gap of up to this many
            positions (see :class:`MementoCollator`); 0 = contiguous positions.
        causal_share: stage 2: the share of samples trained with causal attention instead of the memento mask.
        logging_steps, save_steps, save_total_limit: logging and resumable checkpoints.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_model: str | None = None
    family: Family = "qwen3"
    stages: tuple[int, ...] = (1, 2)
    mask_delimiters: bool = False
    max_length: int = Field(default=32768, ge=16)
    global_batch_size: int = Field(default=512, ge=1)
    per_device_batch_size: int = Field(default=1, ge=1)
    num_samples: int | None = 31000
    num_train_epochs: float = 5.0
    max_steps: int = -1
    learning_rate: float = 8e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: bool = True
    gradient_checkpointing: bool = True
    seed: int = 42
    max_position_gap: int = Field(default=0, ge=0)
    causal_share: float = Field(default=0.0, ge=0.0, le=1.0)
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 2

    def memento_config(self, stage: int) -> MementoConfig:
        """The memento rule of a stage: stages 0 and 1 never evict; stage 2 evicts at each memento."""
        return MementoConfig(mask_delimiters=self.mask_delimiters, keep_last_n_blocks=0 if stage == 2 else -1)

    def mask_stage(self, stage: int) -> int:
        """The collator stage (attention pattern) of a training stage: 1 = causal, 2 = memento rule."""
        if stage not in (0, 1, 2):
            raise ValueError(f"stage must be 0, 1 or 2, got {stage}")
        return 2 if stage == 2 else 1


_PAPER: dict[str, Any] = {"num_samples": 31000, "max_length": 32768, "global_batch_size": 512, "learning_rate": 8e-5}

PRESETS: dict[str, TrainingPreset] = {
    "qwen3-8b": TrainingPreset(name="qwen3-8b", base_model="Qwen/Qwen3-8B", family="qwen3", **_PAPER),
    "qwen3-32b": TrainingPreset(name="qwen3-32b", base_model="Qwen/Qwen3-32B", family="qwen3", **_PAPER),
    "phi-4-reasoning": TrainingPreset(
        name="phi-4-reasoning", base_model="microsoft/Phi-4-reasoning", family="phi4", mask_delimiters=True, **_PAPER
    ),
    "olmo-3-7b": TrainingPreset(name="olmo-3-7b", base_model="allenai/Olmo-3-7B-Think", family="olmo3", **_PAPER),
    "qwen2.5-7b-3stage": TrainingPreset(
        name="qwen2.5-7b-3stage", base_model="Qwen/Qwen2.5-7B", family="qwen2", stages=(0, 1, 2), **_PAPER
    ),
    # The shipped twins' optimiser settings (the tiny-twins recipe builds the model from scratch, see TwinsRecipe).
    "tiny": TrainingPreset(
        name="tiny",
        family="tiny",
        max_length=2048,
        global_batch_size=12,
        per_device_batch_size=12,
        num_samples=None,
        num_train_epochs=1.0,
        max_steps=500,
        learning_rate=1.5e-3,
        lr_scheduler_type="cosine_with_min_lr",
        warmup_ratio=0.05,
        min_lr_ratio=0.1,
        weight_decay=0.01,
        adam_beta2=0.98,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
        logging_steps=25,
        save_steps=250,
    ),
}
"""Named presets. Note: OLMo 3 uses sliding-window attention in most layers, which limits its KV savings."""


def get_preset(name: str) -> TrainingPreset:
    """Look a preset up by name (``ValueError`` listing the known names otherwise)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
