"""Implicit sessions for stateless chat clients: which retained session a conversation continues, and its closures.

A stateless client re-sends the whole conversation each turn and names no session. The server renders it with
``chat_format`` and digests the rendered turns (salted with the tenant's ``cache_salt``, so tenants never share an
entry): after a turn, the digest of the conversation *including* the turn just generated points at the session
that holds its compacted KV; the next request, whose rendering extends that conversation, finds the session by the
longest rendered prefix it has a digest for and adopts its KV.

Closures (the memento that ends an observation block) are kept too, keyed by the digest of the turns before them:
AutoGen's OpenAI client re-sends the text that came with tool calls (and so the closure) but drops the reasoning
of a text answer; the server puts a dropped closure back, so the history renders to the same tokens either way.

Both maps are bounded (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from autogen_ext_memento.chat_format import Rendering, Turn, assistant_body, split_closure

__all__ = ["ConversationIndex", "turns_after", "turn_digests"]


def turn_digests(turns: Sequence[Turn], salt: str | None) -> list[str]:
    """``digests[k]``: the digest of ``turns[:k + 1]`` under ``salt`` (a rolling SHA-256 over the turn texts)."""
    h = hashlib.sha256(b"memento-chat\x00" + (salt or "").encode() + b"\x00")
    out: list[str] = []
    for turn in turns:
        h.update(turn.text.encode())
        h.update(b"\x00")
        out.append(h.hexdigest())
    return out


def turns_after(rendering: Rendering, thought: str | None, content: Any) -> list[Turn]:
    """The turns of a conversation once the answer (``thought``, ``content``) is appended to ``rendering``.

    Equal to rendering the messages with the answer's :class:`~autogen_core.models.AssistantMessage` appended (a
    leading closure goes back to the pending observation, the rest is the assistant turn), without rendering the
    whole history again.
    """
    turns = list(rendering.turns)
    closure, _ = split_closure(thought)
    if closure is not None:
        at = rendering.pending_closure if rendering.pending_closure is not None else len(turns)
        turns.insert(at, Turn("assistant", closure, generated=True))
    turns.append(Turn("assistant", assistant_body(thought, content), generated=True))
    return turns


class _Lru:
    """A bounded, thread-safe map that forgets its least recently used entries."""

    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[str, str] = OrderedDict()
        self._cap = capacity
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._cap:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ConversationIndex:
    """Conversation digests → session ids, and prefix digests → closure texts (see the module docstring)."""

    def __init__(self, capacity: int = 8192) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._sessions = _Lru(capacity)
        self._closures = _Lru(capacity)

    def session_for(self, turns: Sequence[Turn], salt: str | None) -> str | None:
        """The session whose conversation is the longest rendered prefix of ``turns`` (``None``: a new one)."""
        for digest in reversed(turn_digests(turns, salt)):
            sid = self._sessions.get(digest)
            if sid is not None:
                return sid
        return None

    def remember_session(self, turns: Sequence[Turn], salt: str | None, session_id: str) -> None:
        """Record that ``session_id`` holds the conversation ``turns`` (the last turn included)."""
        if turns:
            self._sessions.put(turn_digests(turns, salt)[-1], session_id)

    def closure_for(self, before: Sequence[Turn], salt: str | None) -> str | None:
        """The closure the server wrote after the turns ``before`` (``None`` if it wrote none)."""
        return self._closures.get(turn_digests(before, salt)[-1]) if before else None

    def remember_closure(self, before: Sequence[Turn], salt: str | None, closure: str) -> None:
        """Record the closure written after the turns ``before``."""
        if before:
            self._closures.put(turn_digests(before, salt)[-1], closure)

    def __len__(self) -> int:
        return len(self._sessions)
