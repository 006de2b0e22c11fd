"""``MementoMemory``: team-level mementos that survive agent resets and Magentic-One re-plans."""

from __future__ import annotations

import base64
import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from autogen_core import CancellationToken, Component, Image
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType, MemoryQueryResult, UpdateContextResult
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import LLMMessage, UserMessage
from pydantic import BaseModel, Field
from typing_extensions import Self

from .._checks import build_config

MEMORY_SOURCE = "memento_memory"
MEMORY_HEADER = "[Team mementos, oldest first (state records of earlier work, kept across resets)]"
MEMORY_STATE_VERSION = 1


def _approx(text: str) -> int:
    return (len(text) + 3) // 4 + 1


def _dump_entry(entry: MemoryContent) -> dict[str, Any]:
    """An entry as JSON-safe data that :func:`_load_entry` turns back into an equal entry.

    ``MemoryContent`` alone does not round-trip through JSON: bytes come back as ``str``, an image as a ``dict``
    and a MIME type enum as its string; the content's kind is recorded so each comes back as it was.
    """
    content = entry.content
    if isinstance(content, bytes):
        entry, kind = entry.model_copy(update={"content": base64.b64encode(content).decode()}), "bytes"
    elif isinstance(content, Image):
        kind = "image"
    else:
        kind = "dict" if isinstance(content, dict) else "str"
    return {
        "entry": entry.model_dump(mode="json"),
        "content_kind": kind,
        "mime_enum": isinstance(entry.mime_type, MemoryMimeType),
    }


def _load_entry(raw: Mapping[str, Any]) -> MemoryContent:
    """Inverse of :func:`_dump_entry` (a bare ``MemoryContent`` dump is accepted too)."""
    if "entry" not in raw:
        return MemoryContent.model_validate(raw)
    data = dict(raw["entry"])
    kind = raw.get("content_kind")
    if kind == "bytes":
        data["content"] = base64.b64decode(data["content"])
    elif kind == "image":
        data["content"] = Image.from_base64(data["content"]["data"])
    if raw.get("mime_enum"):
        data["mime_type"] = MemoryMimeType(data["mime_type"])
    return MemoryContent.model_validate(data)


@runtime_checkable
class MemoryHost(Protocol):
    """A model context that shows a memory's message itself, rendered at each view (how the memory talks to it).

    :class:`~autogen_ext_memento.context.MementoChatCompletionContext` is one: it leaves out the mementos of the
    blocks it already shows, so a memento is never shown twice.
    """

    def attach_memory(self, memory: MementoMemory) -> None:
        """Show ``memory``'s message in the next views."""
        ...


class MementoMemoryConfig(BaseModel):
    """Configuration of :class:`MementoMemory` (its entries included, so a dumped memory keeps its content)."""

    name: str | None = None
    max_tokens: int = Field(default=800, ge=16)
    max_entries: int | None = Field(default=None, ge=1)
    header: str = MEMORY_HEADER
    entries: list[MemoryContent] = Field(default_factory=list)


class MementoMemory(Memory, Component[MementoMemoryConfig]):
    """A memory of mementos shared by a team: it survives ``on_reset`` and injects one bounded message.

    AutoGen calls ``agent.on_reset`` (which clears the model context) on ``team.reset()`` and, in
    Magentic-One, at every re-plan; a :class:`~autogen_core.memory.Memory` is not cleared then, so mementos kept
    here survive. :class:`~autogen_ext_memento.context.MementoChatCompletionContext` and
    :class:`~autogen_ext_memento.wrapping.MementoContextClient` add every memento they obtain.

    :meth:`update_context` injects the most recent mementos that fit ``max_tokens`` as **one** ``UserMessage``
    (oldest first). In a :class:`~autogen_ext_memento.context.MementoChatCompletionContext` that message replaces
    the previous one, so injections never pile up; in another context the previous injection is removed first when
    the context still shows it. A user message, not a system message, because OpenAI-compatible clients reject
    non-contiguous system messages.

    Args:
        name: the memory's name.
        max_tokens: bound of the injected message (estimated at 4 characters per token).
        max_entries: keep at most this many most recent entries in the injected message.
        header: first line of the injected message.
        entries: initial entries.
    """

    component_provider_override = "autogen_ext_memento.memory.MementoMemory"
    component_config_schema = MementoMemoryConfig

    def __init__(
        self,
        name: str | None = None,
        *,
        max_tokens: int = 800,
        max_entries: int | None = None,
        header: str = MEMORY_HEADER,
        entries: list[MemoryContent] | None = None,
    ) -> None:
        # One source of rules: the Config validates every value, and the settings are read back from it.
        config = build_config(
            MementoMemoryConfig,
            "MementoMemory",
            name=name,
            max_tokens=max_tokens,
            max_entries=max_entries,
            header=header,
            entries=list(entries or []),
        )
        self._name = config.name or "memento_memory"
        self._config_name = config.name
        self._max_tokens = config.max_tokens
        self._max_entries = config.max_entries
        self._header = config.header
        self._entries: list[MemoryContent] = list(config.entries)

    @property
    def name(self) -> str:
        return self._name

    @property
    def entries(self) -> list[MemoryContent]:
        """A copy of all entries, oldest first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        """Append an entry; ``metadata`` gets ``seq`` (order) and ``time`` if missing."""
        meta = dict(content.metadata or {})
        meta.setdefault("seq", len(self._entries))
        meta.setdefault("time", time.time())
        self._entries.append(content.model_copy(update={"metadata": meta}))

    async def add_memento(
        self, memento: str, *, agent: str, block_id: str | None = None, kind: str | None = None
    ) -> None:
        """Append one memento written for ``agent``'s block ``block_id``."""
        meta: dict[str, Any] = {"agent": agent}
        if block_id is not None:
            meta["block_id"] = block_id
        if kind is not None:
            meta["kind"] = kind
        await self.add(MemoryContent(content=memento, mime_type=MemoryMimeType.TEXT, metadata=meta))

    @staticmethod
    def _line(entry: MemoryContent) -> str:
        meta = entry.metadata or {}
        who = meta.get("agent", "?")
        bid = f" [{meta['block_id']}]" if meta.get("block_id") else ""
        return f"-{bid} {who}: {entry.content if isinstance(entry.content, str) else str(entry.content)}"

    def select(self, exclude_block_ids: Collection[str] = ()) -> list[MemoryContent]:
        """The most recent entries that fit the bounds, oldest first (skipping mementos of the given blocks)."""
        budget = self._max_tokens - _approx(self._header)
        out: list[MemoryContent] = []
        for e in reversed(self._entries):
            if exclude_block_ids and (e.metadata or {}).get("block_id") in exclude_block_ids:
                continue
            if self._max_entries is not None and len(out) >= self._max_entries:
                break
            cost = _approx(self._line(e))
            if cost > budget:
                break
            budget -= cost
            out.append(e)
        out.reverse()
        return out

    def render_message(self, exclude_block_ids: Collection[str] = ()) -> LLMMessage | None:
        """The one message :meth:`update_context` injects (``None`` when there is nothing to inject).

        ``exclude_block_ids``: blocks the receiving context already shows (whole or in its own digest), so a
        memento is never shown twice.
        """
        chosen = self.select(exclude_block_ids)
        if not chosen:
            return None
        return UserMessage(content=self._header + "\n" + "\n".join(self._line(e) for e in chosen), source=MEMORY_SOURCE)

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        """Inject the bounded memento message into ``model_context`` (replacing an earlier injection)."""
        message = self.render_message()
        chosen = self.select() if message is not None else []
        if isinstance(model_context, MemoryHost):
            # The context renders the message at each view, leaving out the mementos of its own blocks.
            model_context.attach_memory(self)
        else:
            shown = await model_context.get_messages()
            old = [m for m in shown if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE]
            if old:
                # Rewrite through the public API (clear + add) so the earlier injection does not pile up.
                keep = [m for m in shown if not (isinstance(m, UserMessage) and m.source == MEMORY_SOURCE)]
                await model_context.clear()
                for m in keep:
                    await model_context.add_message(m)
            if message is not None:
                await model_context.add_message(message)
        return UpdateContextResult(memories=MemoryQueryResult(results=chosen))

    async def query(
        self,
        query: str | MemoryContent = "",
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> MemoryQueryResult:
        """Entries whose text contains every word of ``query`` (case-insensitive), oldest first.

        Keyword args: ``agent`` (only this agent's mementos), ``limit`` (the most recent N), ``since_seq``
        (entries added at or after this sequence number).
        """
        text = query.content if isinstance(query, MemoryContent) else query
        words = str(text).lower().split()
        agent = kwargs.get("agent")
        limit = kwargs.get("limit")
        since = kwargs.get("since_seq")
        hits = [
            e
            for e in self._entries
            if (agent is None or (e.metadata or {}).get("agent") == agent)
            and (since is None or int((e.metadata or {}).get("seq", 0)) >= int(since))
            and all(w in str(e.content).lower() for w in words)
        ]
        if isinstance(limit, int) and limit > 0:
            hits = hits[-limit:]
        return MemoryQueryResult(results=hits)

    async def clear(self) -> None:
        """Remove every entry (AutoGen never calls this on reset; only an explicit call does)."""
        self._entries = []

    async def close(self) -> None:
        """Nothing to release."""

    async def save_state(self) -> Mapping[str, Any]:
        """The entries (content and metadata, ``seq`` and ``time`` included), JSON-safe."""
        return {
            "version": MEMORY_STATE_VERSION,
            "type": "MementoMemoryState",
            "entries": [_dump_entry(e) for e in self._entries],
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the entries with those of a :meth:`save_state` state (exactly as they were saved)."""
        version = int(state.get("version", 0))
        if version > MEMORY_STATE_VERSION:
            raise ValueError(f"MementoMemory state version {version} is newer than supported ({MEMORY_STATE_VERSION})")
        self._entries = [_load_entry(e) for e in state.get("entries", [])]

    def _to_config(self) -> MementoMemoryConfig:
        return MementoMemoryConfig(
            name=self._config_name,
            max_tokens=self._max_tokens,
            max_entries=self._max_entries,
            header=self._header,
            entries=list(self._entries),
        )

    @classmethod
    def _from_config(cls, config: MementoMemoryConfig) -> Self:
        return cls(
            config.name,
            max_tokens=config.max_tokens,
            max_entries=config.max_entries,
            header=config.header,
            entries=config.entries,
        )
