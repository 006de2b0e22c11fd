"""Sampling one token from next-token logits (greedy, temperature, top-k, top-p), for in-process backends."""

from __future__ import annotations

from typing import Any


def sample_token(logits: Any, temperature: float, top_k: int, top_p: float, generator: Any) -> int:
    """One token id from next-token ``logits``: greedy at ``temperature == 0``, else top-k/top-p sampling."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits).item())
    x = logits / temperature
    if top_k > 0:
        kth = torch.topk(x, min(top_k, x.numel())).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, idx = torch.sort(x, descending=True)
        cum = torch.softmax(sorted_x, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_x, -1) > top_p
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, idx, drop), float("-inf"))
    probs = torch.softmax(x, -1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator).item())
