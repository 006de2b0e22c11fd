"""Adding the memento and ChatML tokens to a tokenizer (and the model's embeddings)."""

from __future__ import annotations

from typing import Any

from .chat_format import CHAT_TOKENS
from .grammar import SPECIAL_TOKENS

REQUIRED_TOKENS: tuple[str, ...] = SPECIAL_TOKENS + CHAT_TOKENS


def missing_tokens(tokenizer: Any) -> list[str]:
    """Which of the memento and ChatML tokens the tokenizer lacks."""
    vocab = tokenizer.get_vocab()
    return [t for t in REQUIRED_TOKENS if t not in vocab]


def add_memento_tokens(tokenizer: Any, model: Any | None = None, *, init_std: float = 0.01) -> list[str]:
    """Add the memento and ChatML tokens a tokenizer lacks, and grow the model's embeddings to match.

    New embedding rows start at the mean of the existing rows plus Gaussian noise (``init_std``), so an untrained
    token neither dominates nor vanishes; the training module refines this with related-word means. Returns the
    tokens that were added.
    """
    added = missing_tokens(tokenizer)
    if added:
        tokenizer.add_special_tokens({"additional_special_tokens": added}, replace_extra_special_tokens=False)
    if model is not None:
        import torch

        emb = model.get_input_embeddings()
        old = emb.weight.shape[0]
        if len(tokenizer) > old:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                w = model.get_input_embeddings().weight
                mean = w[:old].mean(0)
                w[old:] = mean + init_std * torch.randn_like(w[old:])
                out = model.get_output_embeddings()
                if out is not None and out.weight.data_ptr() != w.data_ptr():
                    ow = out.weight
                    ow[old:] = ow[:old].mean(0) + init_std * torch.randn_like(ow[old:])
    return added
