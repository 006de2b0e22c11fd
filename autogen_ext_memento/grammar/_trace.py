"""The trace shape as text: format a block, escape untrusted text and parse a trace back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._rule import BLOCK_END, BLOCK_START, SPECIAL_TOKENS, SUMMARY_END, SUMMARY_START


def format_block(work: str, memento: str) -> str:
    """Render one block and its memento as text in the trace shape."""
    return f"{BLOCK_START}{work}{BLOCK_END}{SUMMARY_START}{memento}{SUMMARY_END}"


def contains_special(text: str) -> bool:
    """True if ``text`` contains a literal memento token string."""
    return any(tok in text for tok in SPECIAL_TOKENS)


_ESCAPES: Mapping[str, str] = {tok: tok.replace("<|", "<\u200b|") for tok in SPECIAL_TOKENS}


def escape_special(text: str) -> str:
    """Neutralise literal memento token strings in untrusted text (user input, tool output).

    A zero-width space is inserted after ``<`` so the tokenizer cannot read the text as a grammar token; without it
    a tool result could forge ``<|summary_end|>`` and evict arbitrary context.
    """
    if "<|" not in text:
        return text
    for tok, esc in _ESCAPES.items():
        text = text.replace(tok, esc)
    return text


@dataclass(frozen=True)
class ParsedBlock:
    """A block and its memento parsed from text (``memento`` is ``None`` if the block has none yet)."""

    work: str
    memento: str | None


def parse_trace(text: str) -> tuple[list[ParsedBlock], str]:
    """Split text in the trace shape into blocks with mementos and the trailing text after the last memento.

    Text between a memento and the next block (or before the first block) is kept in the trailing text only
    if it follows the last block; this is a convenience for data tools, the token-level tracker is authoritative.
    """
    blocks: list[ParsedBlock] = []
    rest = text
    while True:
        i = rest.find(BLOCK_START)
        if i < 0:
            return blocks, rest
        after = rest[i + len(BLOCK_START) :]
        j = after.find(BLOCK_END)
        if j < 0:
            blocks.append(ParsedBlock(after, None))
            return blocks, ""
        work = after[:j]
        tail = after[j + len(BLOCK_END) :]
        k = tail.find(SUMMARY_START)
        nxt = tail.find(BLOCK_START)
        if k < 0 or (0 <= nxt < k):
            blocks.append(ParsedBlock(work, None))
            rest = tail
            continue
        mem_tail = tail[k + len(SUMMARY_START) :]
        m = mem_tail.find(SUMMARY_END)
        if m < 0:
            blocks.append(ParsedBlock(work, mem_tail))
            return blocks, ""
        blocks.append(ParsedBlock(work, mem_tail[:m]))
        rest = mem_tail[m + len(SUMMARY_END) :]
