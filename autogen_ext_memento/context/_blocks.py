"""Block formation: how a stream of AutoGen messages is cut into blocks, the unit of compaction.

The rules follow the agent chat format (:mod:`autogen_ext_memento.chat_format`), where an assistant tool-call turn
opens a block and its observation sits inside the same block:

=====================================================  =========================================================
message                                                block
=====================================================  =========================================================
``AssistantMessage`` with ``FunctionCall`` s           opens a ``tool`` block (the action)
``FunctionExecutionResultMessage`` answering exactly    closes that ``tool`` block (the observation); the pair is
the open block's call ids                               never split, errors (``is_error``) included
``AssistantMessage`` with text                          an ``answer`` block of its own
``UserMessage`` (the user, another agent, a handoff     a ``message`` block of its own, ``agent`` = ``source``
text, a ``StopMessage``)
``SystemMessage`` (e.g. injected by a ``Memory``)       a ``system`` block of its own
a handoff's ``HandoffMessage.context``                  arrives as the pair above followed by the handoff text,
                                                        so it forms one ``tool`` block and one ``message`` block
=====================================================  =========================================================

Malformed streams never raise; they are resolved deterministically:

* a tool block that is followed by anything other than its results, or by results with different call ids, is
  closed as ``unanswered`` (it is rendered as assistant text, since an OpenAI-compatible server rejects an
  ``assistant`` ``tool_calls`` message that is not followed by its ``tool`` messages);
* results that do not answer the open block form an ``orphan_result`` block (rendered as a user message, since a
  ``tool`` message must follow its call);
* an assistant message whose ``thought`` starts with a closure (``<|block_end|><|summary_start|>…<|summary_end|>``,
  written by a memento model behind :class:`~autogen_ext_memento.MementoChatCompletionClient`) hands that
  memento to the most recent ``tool`` block that has none: the model wrote it for that observation.

Block formation is a pure function of the message sequence, so a saved history always replays to the same blocks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from autogen_core import FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from ..chat_format import closure_memento as _closure_memento
from ..chat_format import render_tool_call, tool_response, transcript

BlockKind = Literal["tool", "unanswered", "orphan_result", "answer", "message", "system"]

TokenCounter = Callable[[Sequence[LLMMessage]], int]
"""Counts the tokens of a list of messages (a model client's ``count_tokens`` or :func:`approx_tokens`)."""


def message_text(msg: LLMMessage) -> str:
    """The text of a message as a model reads it (thought, content, tool calls and results)."""
    if isinstance(msg, (SystemMessage, UserMessage)):
        if isinstance(msg.content, str):
            return msg.content
        return "\n".join(p if isinstance(p, str) else "[image]" for p in msg.content)
    if isinstance(msg, AssistantMessage):
        head = msg.thought or ""
        if isinstance(msg.content, str):
            return head + msg.content
        return head + "\n".join(render_tool_call(c.name, c.arguments) for c in msg.content)
    return "\n".join(r.content for r in msg.content)


def image_tokens(image: Image) -> int:
    """Estimated tokens of one image as vision models bill it: 85 plus 170 per 512-pixel tile (OpenAI's rule)."""
    width, height = image.image.size
    scale = min(1.0, 2048 / max(width, height, 1))  # fitted into 2048x2048, then the short side to at most 768
    scale *= min(1.0, 768 / max(min(width, height) * scale, 1))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def _approx_chars(msg: LLMMessage) -> int:
    if isinstance(msg, UserMessage) and not isinstance(msg.content, str):
        # An image is shown as "[image]" in text forms but costs a vision model far more than those 7 characters.
        return sum(len(p) + 1 if isinstance(p, str) else 4 * image_tokens(p) for p in msg.content)
    if isinstance(msg, AssistantMessage) and not isinstance(msg.content, str):
        # ~ the rendered "<tool_call>\n{"name": …, "arguments": …}\n</tool_call>" without re-encoding the JSON.
        return len(msg.thought or "") + sum(len(c.name) + len(c.arguments) + 48 for c in msg.content)
    if isinstance(msg, FunctionExecutionResultMessage):
        return sum(len(r.content) + 1 for r in msg.content)
    return len(message_text(msg))


def approx_tokens(messages: Sequence[LLMMessage]) -> int:
    """A cheap, offline token estimate: 4 characters per token plus 4 tokens of framing per message."""
    return sum((_approx_chars(m) + 3) // 4 + 4 for m in messages)


def closure_memento(msg: LLMMessage) -> str | None:
    """The memento text a memento model wrote in the closure at the start of this message's thought, if any."""
    if not isinstance(msg, AssistantMessage):
        return None
    memento = _closure_memento(msg.thought)
    return None if memento is None else memento.strip()


@dataclass
class Block:
    """One block: consecutive messages compacted, stored and recalled together.

    ``seq`` numbers blocks in order within one history; ``memento`` is set once (by the model's closure or by a
    writer) and never changed; ``compacted`` blocks are shown only through their memento.
    """

    seq: int
    kind: BlockKind
    agent: str
    messages: list[LLMMessage]
    closed: bool = True
    memento: str | None = None
    memento_source: str | None = None
    compacted: bool = False
    tokens: int = 0
    block_id: str = ""
    line_tokens: int | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)

    @property
    def call_ids(self) -> list[str]:
        """Ids of the tool calls of a ``tool``/``unanswered`` block."""
        first = self.messages[0]
        if isinstance(first, AssistantMessage) and not isinstance(first.content, str):
            return [c.id for c in first.content]
        return []

    @property
    def has_error(self) -> bool:
        return any(
            isinstance(m, FunctionExecutionResultMessage) and any(r.is_error for r in m.content) for m in self.messages
        )

    def digest(self) -> str:
        """A content hash (kind, agent and the exact messages), used to cache mementos across calls."""
        if self._digest is None:
            payload = json.dumps(
                [self.kind, self.agent, [m.model_dump(mode="json") for m in self.messages]],
                sort_keys=True,
                ensure_ascii=False,
            )
            self._digest = hashlib.sha256(payload.encode()).hexdigest()
        return self._digest

    def render_messages(self) -> list[LLMMessage]:
        """The block as messages that keep an OpenAI-compatible server's role order valid (stored ones reused)."""
        if self.kind == "unanswered" or not self.closed:
            # A call still waiting for its results is shown as text too: the request must stay valid.
            first = self.messages[0]
            assert isinstance(first, AssistantMessage) and not isinstance(first.content, str)
            text = (first.thought or "") + "\n".join(render_tool_call(c.name, c.arguments) for c in first.content)
            return [AssistantMessage(content=text + "\n[no tool result was recorded]", source=first.source)]
        if self.kind == "orphan_result":
            res = self.messages[0]
            assert isinstance(res, FunctionExecutionResultMessage)
            body = "\n".join(
                tool_response(f"[{r.name} {r.call_id}{' error' if r.is_error else ''}] {r.content}")
                for r in res.content
            )
            return [UserMessage(content=body, source="tool")]
        return list(self.messages)

    def transcript(self) -> str:
        """The block as plain text in the agent chat format (``role: body`` per turn), for writers and recall."""
        return transcript(self.messages)


def _agent_of(msg: LLMMessage) -> str:
    if isinstance(msg, SystemMessage):
        return "system"
    if isinstance(msg, FunctionExecutionResultMessage):
        return "tool"
    return msg.source


class BlockBuilder:
    """Cuts a message stream into :class:`Block` s (see the module docstring for the rules)."""

    def __init__(self, counter: TokenCounter = approx_tokens) -> None:
        self.blocks: list[Block] = []
        self._counter = counter

    @property
    def open_block(self) -> Block | None:
        """The tool block waiting for its results, if any."""
        if self.blocks and not self.blocks[-1].closed:
            return self.blocks[-1]
        return None

    def _new(self, kind: BlockKind, msg: LLMMessage, closed: bool = True) -> Block:
        blk = Block(seq=len(self.blocks), kind=kind, agent=_agent_of(msg), messages=[msg], closed=closed)
        if closed:
            blk.tokens = self._counter(blk.messages)
        self.blocks.append(blk)
        return blk

    def close_open(self) -> Block | None:
        """Close a tool block still waiting for results as ``unanswered`` and return it (on reset)."""
        blk = self.open_block
        self._close_unanswered()
        return blk

    def _close_unanswered(self) -> None:
        blk = self.open_block
        if blk is not None:
            blk.kind, blk.closed = "unanswered", True
            blk.tokens = self._counter(blk.render_messages())

    def add(self, msg: LLMMessage) -> list[Block]:
        """Add one message; return the blocks it closed (in order)."""
        before = self.open_block
        closed: list[Block] = []
        if isinstance(msg, FunctionExecutionResultMessage):
            blk = self.open_block
            ids = [r.call_id for r in msg.content]
            if blk is not None and sorted(ids) == sorted(blk.call_ids) and ids:
                blk.messages.append(msg)
                blk.closed = True
                blk.tokens = self._counter(blk.messages)
                return [blk]
            self._close_unanswered()
            if before is not None:
                closed.append(before)
            closed.append(self._new("orphan_result", msg))
            return closed
        self._close_unanswered()
        if before is not None:
            closed.append(before)
        if isinstance(msg, AssistantMessage):
            memento = closure_memento(msg)
            if memento is not None:
                for prev in reversed(self.blocks):
                    if prev.kind == "tool" and prev.memento is None:
                        prev.memento, prev.memento_source = memento, "model"
                        break
            if isinstance(msg.content, str):
                closed.append(self._new("answer", msg))
            elif msg.content:
                self._new("tool", msg, closed=False)
            else:
                closed.append(self._new("unanswered", msg))
        elif isinstance(msg, UserMessage):
            closed.append(self._new("message", msg))
        else:
            closed.append(self._new("system", msg))
        return closed


def build_blocks(messages: Sequence[LLMMessage], counter: TokenCounter = approx_tokens) -> list[Block]:
    """Blocks of a whole message sequence."""
    b = BlockBuilder(counter)
    for m in messages:
        b.add(m)
    return b.blocks


def function_calls(msg: LLMMessage) -> list[FunctionCall]:
    """The tool calls of an assistant message (empty for anything else)."""
    if isinstance(msg, AssistantMessage) and not isinstance(msg.content, str):
        return list(msg.content)
    return []
