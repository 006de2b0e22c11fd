"""The client's sessions: what each holds between calls, how it is saved and restored, who adopts a restored one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from autogen_core.models import LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ConfigDict, Field

from ..chat_format import IncrementalRenderer, render

logger = logging.getLogger(__name__)


class SavedSession(BaseModel):
    """One client session in saved state: each generated turn body and the token ids sampled for it."""

    model_config = ConfigDict(extra="forbid")

    overrides: list[tuple[str, list[int]]] = Field(default_factory=list)


class MementoChatCompletionClientState(BaseModel):
    """Saved state of :class:`MementoChatCompletionClient` (what :meth:`~MementoChatCompletionClient.save_state` returns).

    The sampled token ids of every generated turn still in a session's history are kept: a client loaded from
    this state renders the same history to the very same prompt tokens as the client that saved it.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["MementoChatCompletionClientState"] = "MementoChatCompletionClientState"
    version: Literal[1] = 1
    sessions: dict[str, SavedSession] = Field(default_factory=dict)
    last_session_id: str | None = None
    call_count: int = Field(default=0, ge=0)
    total_prompt_tokens: int = Field(default=0, ge=0)
    total_completion_tokens: int = Field(default=0, ge=0)


@dataclass
class ClientSession:
    """What the client keeps for one session between calls."""

    # Generated turn bodies tokenized exactly as sampled, keyed by their canonical rendering.
    overrides: dict[str, list[int]] = field(default_factory=dict)
    # A call is two backend generations (closure, then answer); another call must not slip in between.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The history rendered by the last call, so the next one encodes only its new messages.
    renderer: IncrementalRenderer | None = None

    def save(self) -> SavedSession:
        """The session as saved state (taken under its lock: never between a call's two generations)."""
        with self.lock:
            return SavedSession(overrides=[(k, list(v)) for k, v in self.overrides.items()])

    @classmethod
    def restore(cls, saved: SavedSession) -> ClientSession:
        """A session holding what :meth:`save` saved."""
        return cls(overrides={body: list(ids) for body, ids in saved.overrides})


def adoptable_session(
    sessions: Mapping[str, ClientSession],
    candidates: Iterable[str],
    messages: Sequence[LLMMessage],
    tools: Sequence[Tool | ToolSchema],
) -> str | None:
    """The restored session (among ``candidates``) whose generated turns ``messages`` holds most of, if any.

    Inside a team the session id is the agent's ``AgentId``, which holds the team's random id: a team restarted
    from saved state has new ids. The restored session whose generated turns the history contains is the one
    this agent had (other agents' turns arrive as user messages), so its sampled tokens apply.
    """
    pool = list(candidates)
    if not pool:
        return None
    bodies = {t.body for t in render(messages, tools).turns if t.generated}
    if not bodies:
        return None
    overlap = {old: len(bodies & sessions[old].overrides.keys()) for old in pool}
    best = max(overlap, key=lambda k: overlap[k])
    return best if overlap[best] > 0 else None
