"""Bare fact-tracker episodes: the task's goal, pages, mementos and answer without the chat wrapper.

They carry a copy event (a goal key or a looked-up value in a memento or the answer) every ~13 tokens, against ~30
in the agent chat format (no system prompt, tool schema or role tags between them), so a tiny model meets the copy
skill on less compute, and the skill carries over because the words are the same tokens. The twin recipe opens its
shared stage 1 with them.
"""

from __future__ import annotations

from typing import Any

from ..chat_format import build_closure, memento_in
from ..grammar import BLOCK_START, SUMMARY_END
from ..tasks import Episode, FactTrackerConfig, sample_episodes
from ._collator import IGNORE_INDEX
from ._data import TokenizedSample, samples_dataset

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
    return samples_dataset([bare_sample(e, tokenizer) for e in sample_episodes(n, seed, config)])
