"""Bare fact-tracker episodes: the task's goal, pages, mementos and answer without the chat wrapper.

A tiny model learns to copy goal keys and look values up from these about three times faster per token than from
the agent chat format (no system prompt, tool schema or role tags between the copy events), and the skill carries
over because the words are the same tokens. The twin recipe opens its shared stage 1 with them.
"""

from __future__ import annotations

from typing import Any

from ..chat_format import build_closure, memento_in
from ..grammar import BLOCK_START, SUMMARY_END
from ..tasks import Episode, FactTrackerConfig, sample_episodes
from ._collator import IGNORE_INDEX
from ._data import TokenizedSample

__all__ = ["bare_dataset", "bare_sample"]


def _pieces(episode: Episode) -> list[tuple[str, bool]]:
    """``(text, labelled)`` pieces: the model writes mementos and the answer; the rest is given."""
    out: list[tuple[str, bool]] = [(episode.goal_text + "\n", False)]
    for i, page in enumerate(episode.pages):
        closure = build_closure(episode.memento(i))
        memento = memento_in(closure)
        head = closure[: closure.index(memento)]
        out += [(BLOCK_START + page.text + "\n" + head, False), (memento + SUMMARY_END, True), ("\n", False)]
    out.append((episode.answer, True))
    return out


def bare_sample(episode: Episode, tokenizer: Any) -> TokenizedSample:
    """One bare episode as a labelled sample ending in the tokenizer's ``eos`` (labelled)."""
    ids: list[int] = []
    labels: list[int] = []
    for text, labelled in _pieces(episode):
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if labelled else [IGNORE_INDEX] * len(piece)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return TokenizedSample(ids, labels)


def bare_dataset(tokenizer: Any, n: int, seed: int, config: FactTrackerConfig) -> Any:
    """``n`` seeded bare episodes as a ``datasets.Dataset`` of ``input_ids``/``labels``."""
    import datasets

    samples = [bare_sample(e, tokenizer) for e in sample_episodes(n, seed, config)]
    return datasets.Dataset.from_dict(
        {"input_ids": [s.input_ids for s in samples], "labels": [s.labels for s in samples]}
    )
