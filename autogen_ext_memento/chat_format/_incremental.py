"""Incremental rendering: a session's history is rendered and tokenized once, and each call encodes only what is new."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autogen_core.models import LLMMessage, SystemMessage
from autogen_core.tools import Tool, ToolSchema

from ._format import Rendering, Turn, TurnEncoder, _leading_system, append_turns, render_tools

Overrides = Mapping[str, Sequence[int]]


@dataclass
class RenderedHistory:
    """A rendered history with its token ids: ``ids`` of every turn, ``starts[k]`` where turn ``k`` begins."""

    rendering: Rendering
    ids: list[int]
    starts: list[int]

    def upto_closure_ids(self) -> list[int]:
        """The ids of the turns before the pending closure (what the model sees while it writes the memento)."""
        return self.ids[: self.starts[self._pending()]]

    def prompt_ids(self, encoder: TurnEncoder, overrides: Overrides, closure: str | None = None) -> list[int]:
        """The generation prompt: every turn, the closure turn (if given) at its place, then the assistant header.

        Equal to encoding ``rendering.with_closure(closure)`` with the generation prompt.
        """
        ids = list(self.ids)
        if closure is not None:
            at = self.starts[self._pending()]
            ids[at:at] = _encode_turn(encoder, Turn("assistant", closure, generated=True), overrides)
        return ids + encoder.header("assistant")

    def _pending(self) -> int:
        at = self.rendering.pending_closure
        if at is None:
            raise ValueError("no pending observation block to close")
        return at


def _encode_turn(encoder: TurnEncoder, turn: Turn, overrides: Overrides) -> list[int]:
    return [*encoder.header(turn.role), *encoder.body(turn, overrides), *encoder.footer]


@dataclass
class IncrementalRenderer:
    """Per-session cache of the last rendered history: its messages, tools, turns and token ids.

    A new history that extends the cached one (the same message objects, or equal ones, first) renders only its
    new messages and encodes only the turns from the first one that changed; any other history is rendered in
    full. The result equals :func:`~autogen_ext_memento.chat_format.render` followed by
    :meth:`TurnEncoder.encode` with the same overrides.
    """

    encoder: TurnEncoder
    _messages: list[LLMMessage] = field(default_factory=list)
    _tools: list[Tool | ToolSchema] = field(default_factory=list)
    _tools_text: str | None = None
    _history: RenderedHistory | None = None

    def render(
        self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema], overrides: Overrides
    ) -> RenderedHistory:
        """The history of ``messages`` (without closure or generation prompt), from the cache where it extends it."""
        previous = self._tools_text
        tools_text = self._tools_text_of(tools)
        cached = self._history
        n = len(self._messages)
        if cached is not None and tools_text == previous and self._extends(messages):
            turns = list(cached.rendering.turns)
            pending, changed = append_turns(turns, cached.rendering.pending_closure, messages[n:])
            keep = cached.starts[changed]
            ids, starts = cached.ids[:keep], cached.starts[: changed + 1]
        else:
            turns, i = _leading_system(messages, tools)
            pending, _ = append_turns(turns, None, messages[i:])
            changed, ids, starts = 0, [], [0]
        for turn in turns[changed:]:
            ids += _encode_turn(self.encoder, turn, overrides)
            starts.append(len(ids))
        history = RenderedHistory(Rendering(turns, pending), ids, starts)
        self._messages, self._tools_text, self._history = list(messages), tools_text, history
        return history

    def _tools_text_of(self, tools: Sequence[Tool | ToolSchema]) -> str:
        """The tools section, not re-rendered for the very same ``Tool`` objects (a ``Tool`` builds its schema anew on
        every access, a millisecond per call); schema dicts, which a caller may edit in place, are always rendered."""
        same = len(tools) == len(self._tools) and all(
            a is b and not isinstance(a, dict) for a, b in zip(tools, self._tools, strict=True)
        )
        if not same or self._tools_text is None:
            self._tools, self._tools_text = list(tools), render_tools(tools)
        return self._tools_text

    def _extends(self, messages: Sequence[LLMMessage]) -> bool:
        """Whether ``messages`` starts with the cached messages and the leading system run was already complete."""
        old = self._messages
        if len(messages) < len(old) or not any(not isinstance(m, SystemMessage) for m in old):
            return False
        return all(a is b or a == b for a, b in zip(old, messages[: len(old)], strict=True))
