"""Memento SFT recipes on TRL: dataset adapters, token initialisation, the 4-D-mask collator, presets, training.

Needs the ``train`` extra: ``pip install "autogen-ext-memento[train]"``.
"""

from ._collator import IGNORE_INDEX, MASK_KEY, MementoCollator
from ._data import (
    TokenizedSample,
    assemble_full_response,
    build_dataset,
    encode_messages,
    encode_rendering,
    encode_trace,
    load_dataset_rows,
    row_to_sample,
)
from ._presets import PRESETS, TrainingPreset, get_preset
from ._tokens import RELATED_WORDS, add_and_init_tokens, related_token_ids
from ._trainer import length_grouped_order, load_model_and_tokenizer, train_stage
from ._twins import (
    TINY_ARCH,
    TWIN_DIRS,
    TWINS,
    TwinsRecipe,
    build_task_tokenizer,
    encode_episode,
    episode_dataset,
    teacher_forced_exact,
    train_stage1,
    train_tiny_twins,
    train_twin,
)

__all__ = [
    "IGNORE_INDEX",
    "MASK_KEY",
    "PRESETS",
    "RELATED_WORDS",
    "TINY_ARCH",
    "TWINS",
    "TWIN_DIRS",
    "TwinsRecipe",
    "MementoCollator",
    "TokenizedSample",
    "TrainingPreset",
    "add_and_init_tokens",
    "assemble_full_response",
    "build_task_tokenizer",
    "encode_episode",
    "episode_dataset",
    "build_dataset",
    "encode_messages",
    "encode_rendering",
    "encode_trace",
    "get_preset",
    "length_grouped_order",
    "load_dataset_rows",
    "load_model_and_tokenizer",
    "related_token_ids",
    "row_to_sample",
    "teacher_forced_exact",
    "train_stage",
    "train_stage1",
    "train_tiny_twins",
    "train_twin",
]
