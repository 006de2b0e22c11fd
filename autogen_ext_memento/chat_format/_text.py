"""The text grammar: every text-level token form of the agent chat format, built and parsed in one place.

The token grammar (:mod:`autogen_ext_memento.grammar`) owns the four memento tokens and the :class:`BlockTracker`;
this module owns the strings built from them and from the chat markup:

==========================  ==============================================================================
form                        text
==========================  ==============================================================================
turn                        ``<|im_start|>{role}\\n{body}<|im_end|>\\n``
block                       ``<|block_start|>work<|block_end|><|summary_start|>memento<|summary_end|>``
closure                     ``<|block_end|><|summary_start|>memento<|summary_end|>`` (the end of an observation
                            block, stored at the start of the next assistant ``thought``)
think section               ``<think>\\nbody\\n</think>``
tool call / tool response   ``<tool_call>\\n{json}\\n</tool_call>`` / ``<tool_response>\\n…\\n</tool_response>``
==========================  ==============================================================================

Untrusted text (user input, other agents, tool output) goes through :func:`escape_untrusted`, which neutralises
every ``<|…|>`` (ChatML and memento tokens alike); a memento written into a closure goes through the narrower
:func:`~autogen_ext_memento.grammar.escape_special`. "Is a block open?" is answered by replaying the grammar's
:class:`~autogen_ext_memento.grammar.BlockTracker` over the memento tokens of the text, never by string search.
"""

from __future__ import annotations

import re

from ..grammar import (
    BLOCK_END,
    BLOCK_START,
    SPECIAL_TOKENS,
    SUMMARY_END,
    SUMMARY_START,
    BlockTracker,
    MementoTokenIds,
    escape_special,
)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_TOKENS: tuple[str, str] = (IM_START, IM_END)
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CLOSURE_PREFIX = BLOCK_END + SUMMARY_START


# Text has no vocabulary: each memento token string stands for one of four fixed ids.
_TEXT_IDS = MementoTokenIds(block_start=0, block_end=1, summary_start=2, summary_end=3)
_TOKEN_ID = dict(zip(SPECIAL_TOKENS, _TEXT_IDS.as_tuple(), strict=True))
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def escape_untrusted(text: str) -> str:
    """Untrusted text with every ``<|…|>`` neutralised, so neither ChatML nor memento tokens can be forged.

    Broader than :func:`~autogen_ext_memento.grammar.escape_special` (which covers the four memento tokens only):
    a zero-width space goes after each ``<``.
    """
    return text.replace("<|", "<\u200b|") if "<|" in text else text


def block_open(text: str) -> bool:
    """Whether a block is still open at the end of ``text``, by the grammar's :class:`BlockTracker`."""
    if BLOCK_START not in text:
        return False
    tracker = BlockTracker(_TEXT_IDS)
    for m in _SPECIAL_RE.finditer(text):
        tracker.feed(_TOKEN_ID[m.group(0)])
    return tracker.open_block is not None


def build_closure(memento: str) -> str:
    """The closure that ends an observation block with ``memento`` (memento tokens in it escaped)."""
    return f"{CLOSURE_PREFIX}{escape_special(memento)}{SUMMARY_END}"


def split_closure(thought: str | None) -> tuple[str | None, str | None]:
    """Split a thought into its leading closure (``<|block_end|><|summary_start|>…<|summary_end|>``) and the rest."""
    if not thought or not thought.startswith(CLOSURE_PREFIX):
        return None, thought
    end = thought.find(SUMMARY_END)
    if end < 0:
        return thought, None
    end += len(SUMMARY_END)
    return thought[:end], (thought[end:] or None)


def closure_memento(thought: str | None) -> str | None:
    """The memento of a complete closure at the start of ``thought`` (``None`` if it has none, or an unfinished one)."""
    closure, _ = split_closure(thought)
    if closure is None or not closure.endswith(SUMMARY_END):
        return None
    return closure[len(CLOSURE_PREFIX) : -len(SUMMARY_END)]


def memento_in(closure_text: str) -> str:
    """The memento inside a closure, leniently: up to ``<|summary_end|>`` or the end; the text itself if it has none."""
    start = closure_text.find(SUMMARY_START)
    if start < 0:
        return closure_text
    end = closure_text.find(SUMMARY_END)
    return closure_text[start + len(SUMMARY_START) : end if end >= 0 else None]


def wrap_think(body: str) -> str:
    """A think section holding ``body`` (``<think>\\n</think>`` when it is empty)."""
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}" if body else f"{THINK_OPEN}\n{THINK_CLOSE}"


def split_think(response: str) -> tuple[str, str] | None:
    """``(reasoning, answer)`` of a response holding ``<think>…</think>answer`` (``None`` without ``</think>``)."""
    if THINK_CLOSE not in response:
        return None
    head, _, tail = response.partition(THINK_CLOSE)
    return head.replace(THINK_OPEN, "", 1).strip("\n"), tail


def tool_response(text: str) -> str:
    """One tool result as the chat format shows it (``text`` must already be escaped)."""
    return f"{TOOL_RESPONSE_OPEN}\n{text}\n{TOOL_RESPONSE_CLOSE}"
