"""Adding the memento tokens to a base model for training, initialised from related words (the paper's recipe)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._tokens import REQUIRED_TOKENS
from ..grammar import BLOCK_END, BLOCK_START, SUMMARY_END, SUMMARY_START

RELATED_WORDS: Mapping[str, tuple[str, ...]] = {
    BLOCK_START: ("block", "start", "begin", "section", "step"),
    BLOCK_END: ("block", "end", "finish", "section", "stop"),
    SUMMARY_START: ("summary", "start", "begin", "note", "recap"),
    SUMMARY_END: ("summary", "end", "finish", "note", "done"),
    "<|im_start|>": ("message", "start", "begin", "turn"),
    "<|im_end|>": ("message", "end", "finish", "turn"),
}
"""Words whose embeddings seed each new token (mean of their sub-token embeddings, with and without a space)."""


def related_token_ids(tokenizer: Any, words: Sequence[str], limit: int) -> list[int]:
    """Ids (below ``limit``, i.e. pre-existing) of the tokens that spell ``words``, with and without a leading space."""
    out: list[int] = []
    for w in words:
        for variant in (w, " " + w):
            out += [i for i in tokenizer.encode(variant, add_special_tokens=False) if i < limit]
    return out


def add_and_init_tokens(
    tokenizer: Any,
    model: Any,
    *,
    tokens: Sequence[str] = REQUIRED_TOKENS,
    related: Mapping[str, Sequence[str]] = RELATED_WORDS,
    std: float = 0.01,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Add missing special tokens, resize the embeddings and initialise each new row from related words.

    A new token's input (and, if untied, output) embedding is the mean of the embeddings of its related words'
    tokens plus Gaussian noise of standard deviation ``std`` (e.g. ``<|block_start|>`` ← block/start/begin/
    section/step). A token without usable related words gets the mean of all old rows. Returns, per added token,
    the ids its row was averaged from.
    """
    import torch

    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if not missing:
        return {}
    old = model.get_input_embeddings().weight.shape[0]
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    limit = min(old, len(tokenizer) - len(missing))
    sources = {t: related_token_ids(tokenizer, related.get(t, ()), limit) for t in missing}
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    emb_in = model.get_input_embeddings().weight
    emb_out = model.get_output_embeddings()
    tied = emb_out is None or emb_out.weight.data_ptr() == emb_in.data_ptr()
    with torch.no_grad():
        for t in missing:
            tid = tokenizer.convert_tokens_to_ids(t)
            mats = [emb_in] if tied else [emb_in, emb_out.weight]
            for w in mats:
                src = sources[t]
                base = w[src].mean(0) if src else w[:limit].mean(0)
                noise = torch.randn(base.shape, generator=gen, dtype=torch.float32).to(w.dtype) * std
                w[tid] = base + noise
    return sources
