"""``MementoContextClient``: a wrapping model client that gives a sawtooth context to agents without ``model_context``."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import CancellationToken, Component, ComponentModel, MessageHandlerContext
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
    SystemMessage,
)
from autogen_core.tools import Tool, ToolSchema
from typing_extensions import Self

from .._checks import build_config, require_type
from ..context import (
    BlockLedger,
    BlockLedgerConfig,
    CompactionPolicy,
    MementoWriter,
    ViewStats,
    approx_tokens,
    build_blocks,
    log_compaction,
)
from ..memory import MementoMemory
from ..store import BlockStore

logger = logging.getLogger(__name__)

STATE_VERSION = 1
_OWNER = "MementoContextClient"


@dataclass
class _Caller:
    """Per-caller memento cache (block content hash → memento) and view trace."""

    mementos: dict[str, tuple[str, str | None, bool]] = field(default_factory=dict)
    archived: set[str] = field(default_factory=set)
    trace: list[ViewStats] = field(default_factory=list)


class MementoContextClientConfig(BlockLedgerConfig):
    """Configuration of :class:`MementoContextClient` (the compaction policy fields plus the parts it wires)."""

    model_client: ComponentModel
    name: str | None = None


class MementoContextClient(ChatCompletionClient, Component[MementoContextClientConfig]):
    """A model client that compacts every request into a sawtooth context before passing it to an inner client.

    For components that keep their own history and take no ``model_context``: the Magentic-One orchestrator,
    ``MultimodalWebSurfer``, ``FileSurfer``, ``MagenticOneCoderAgent``. Each request's messages are cut into blocks
    (the rules of :mod:`autogen_ext_memento.context._blocks`), the compaction policy of
    :mod:`autogen_ext_memento.context._compactor` is applied, and the compacted list is sent to ``model_client``.
    Leading system messages pass through untouched and are not counted against ``token_limit``.

    Mementos are cached per caller by block content hash, so a block is written at most once even though callers
    resend their whole history; a caller that clears its history (a Magentic-One re-plan) starts a new sawtooth,
    and its earlier mementos stay in ``memory``, which is injected into every request. Callers are told apart by
    :func:`autogen_core.MessageHandlerContext.agent_id` inside a team (``"default"`` outside one). Every block is
    archived verbatim in ``store``.

    Args:
        model_client: the wrapped client.
        keep_last_n_blocks, trigger, token_limit, low_watermark, pin_first_blocks, max_llm_mementos_per_call:
            the compaction policy (:class:`~autogen_ext_memento.context.CompactionPolicy`).
        writer: memento writer (default :class:`~autogen_ext_memento.context.ObservationMaskingWriter`).
        store: block archive (default in memory).
        memory: a :class:`~autogen_ext_memento.memory.MementoMemory` receiving every memento and injected into
            every request.
        name: prefix of block ids.

    Example:

    .. code-block:: python

        import asyncio

        from autogen_ext.models.replay import ReplayChatCompletionClient
        from autogen_ext_memento.memory import MementoMemory
        from autogen_ext_memento.wrapping import MementoContextClient


        async def main() -> None:
            inner = ReplayChatCompletionClient(["facts", "plan"])
            client = MementoContextClient(inner, keep_last_n_blocks=3, memory=MementoMemory())
            print(type(client).__name__)  # pass `client` to MagenticOneGroupChat(..., model_client=client)


        asyncio.run(main())
    """

    component_type = "model"
    component_provider_override = "autogen_ext_memento.wrapping.MementoContextClient"
    component_config_schema = MementoContextClientConfig

    def __init__(
        self,
        model_client: ChatCompletionClient,
        *,
        keep_last_n_blocks: int = 2,
        trigger: Literal["block", "tokens"] = "block",
        token_limit: int | None = None,
        low_watermark: float = 0.7,
        pin_first_blocks: int = 1,
        max_llm_mementos_per_call: int = 16,
        writer: MementoWriter | None = None,
        store: BlockStore | None = None,
        memory: MementoMemory | None = None,
        name: str | None = None,
    ) -> None:
        # One source of rules: the policy part of the Config validates the values; the parts are checked by type.
        self._policy = build_config(
            CompactionPolicy,
            _OWNER,
            keep_last_n_blocks=keep_last_n_blocks,
            trigger=trigger,
            token_limit=token_limit,
            low_watermark=low_watermark,
            pin_first_blocks=pin_first_blocks,
            max_llm_mementos_per_call=max_llm_mementos_per_call,
        )
        require_type(model_client, ChatCompletionClient, "model_client", _OWNER, optional=False)
        self._ledger = BlockLedger(
            self._policy, writer=writer, store=store, memory=memory, model_client=model_client, owner=_OWNER
        )
        require_type(name, str, "name", _OWNER)
        self._client = model_client
        self._name = name
        self._prefix = name or "ctx"
        self._counter = self._ledger.counter
        self._callers: dict[str, _Caller] = {}

    # --- introspection -----------------------------------------------------------------------------------------
    @property
    def inner(self) -> ChatCompletionClient:
        return self._client

    @property
    def store(self) -> BlockStore:
        return self._ledger.store

    @property
    def memory(self) -> MementoMemory | None:
        return self._ledger.memory

    def callers(self) -> list[str]:
        """Ids of the callers seen so far."""
        return list(self._callers)

    def context_trace(self, caller: str | None = None) -> list[ViewStats]:
        """The view statistics of each request from ``caller`` (default: the only or the last caller)."""
        if caller is None:
            if not self._callers:
                return []
            caller = list(self._callers)[-1]
        c = self._callers.get(caller)
        return list(c.trace) if c is not None else []

    @staticmethod
    def _caller_id() -> str:
        try:
            return str(MessageHandlerContext.agent_id())
        except RuntimeError:
            return "default"

    # --- compaction --------------------------------------------------------------------------------------------
    async def compact_messages(
        self,
        messages: Sequence[LLMMessage],
        cancellation_token: CancellationToken | None = None,
        caller: str | None = None,
    ) -> list[LLMMessage]:
        """The compacted list that would be sent for ``messages`` (also updates the caller's cache and trace)."""
        cid = caller or self._caller_id()
        state = self._callers.setdefault(cid, _Caller())
        n_sys = 0
        while n_sys < len(messages) and isinstance(messages[n_sys], SystemMessage):
            n_sys += 1
        lead, rest = list(messages[:n_sys]), list(messages[n_sys:])
        blocks = build_blocks(rest, self._counter)
        for b in blocks:
            b.block_id = f"{self._prefix}-{b.digest()[:12]}"
            cached = state.mementos.get(b.digest())
            if cached is not None and b.closed:
                b.memento, b.memento_source, b.compacted = cached
            if b.closed and b.block_id not in state.archived:
                self._ledger.archive(b, scope=cid, seq=b.seq)
                state.archived.add(b.block_id)
        memory_message = self._ledger.memory_message({b.block_id for b in blocks})
        view, stats = await self._ledger.view(blocks, memory_message, cancellation_token)
        for b in blocks:
            if b.memento is not None and b.closed:
                state.mementos[b.digest()] = (b.memento, b.memento_source, b.compacted)
        state.trace.append(stats)
        log_compaction(f"{self._prefix}:{cid}", stats)
        return lead + view

    # --- ChatCompletionClient ----------------------------------------------------------------------------------
    async def create(
        self, messages: Sequence[LLMMessage], *, cancellation_token: CancellationToken | None = None, **kwargs: Any
    ) -> CreateResult:
        """The inner client's ``create`` on the compacted history (the other arguments are passed on as given)."""
        view = await self.compact_messages(messages, cancellation_token)
        return await self._client.create(view, cancellation_token=cancellation_token, **kwargs)

    def create_stream(
        self, messages: Sequence[LLMMessage], *, cancellation_token: CancellationToken | None = None, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The inner client's ``create_stream`` on the compacted history (the other arguments are passed on)."""
        caller = self._caller_id()  # read here: the generator body may run outside the handler's context

        async def _generator() -> AsyncGenerator[str | CreateResult, None]:
            view = await self.compact_messages(messages, cancellation_token, caller=caller)
            async for chunk in self._client.create_stream(view, cancellation_token=cancellation_token, **kwargs):
                yield chunk

        return _generator()

    async def close(self) -> None:
        await self._client.close()

    # --- state -------------------------------------------------------------------------------------------------
    async def save_state(self) -> Mapping[str, Any]:
        """Each caller's mementos (by block content hash) and archived block ids, JSON-safe.

        With it a restarted process compacts a resent history exactly as before (the same mementos, no writer
        calls, the same compacted blocks). The inner client, ``store`` and ``memory`` keep their own state.
        """
        return {
            "version": STATE_VERSION,
            "type": "MementoContextClientState",
            "callers": {
                cid: {
                    "mementos": [[d, m, src, comp] for d, (m, src, comp) in c.mementos.items()],
                    "archived": sorted(c.archived),
                }
                for cid, c in self._callers.items()
            },
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the callers' caches saved by :meth:`save_state` (replacing the current ones)."""
        version = int(state.get("version", 0))
        if version > STATE_VERSION:
            raise ValueError(f"{_OWNER} state version {version} is newer than supported ({STATE_VERSION})")
        callers: dict[str, _Caller] = {}
        for cid, raw in dict(state.get("callers", {})).items():
            mementos = {
                str(d): (str(m), None if src is None else str(src), bool(c)) for d, m, src, c in raw["mementos"]
            }
            callers[str(cid)] = _Caller(mementos=mementos, archived={str(a) for a in raw.get("archived", [])})
        self._callers = callers

    def actual_usage(self) -> RequestUsage:
        return self._client.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._client.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's count (of the uncompacted messages); never raises (falls back to an estimate)."""
        try:
            return int(self._client.count_tokens(messages, tools=tools))
        except Exception:  # noqa: BLE001 - agents call this in loops (WebSurfer); it must not raise
            return approx_tokens(messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's remaining tokens; never raises (falls back to ``token_limit`` or 128k minus count)."""
        try:
            return int(self._client.remaining_tokens(messages, tools=tools))
        except Exception:  # noqa: BLE001
            return max(0, (self._policy.token_limit or 128000) - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._client.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self._client.model_info

    # --- component config --------------------------------------------------------------------------------------
    def _to_config(self) -> MementoContextClientConfig:
        return MementoContextClientConfig(
            **self._ledger.config_fields(), model_client=self._client.dump_component(), name=self._name
        )

    @classmethod
    def _from_config(cls, config: MementoContextClientConfig) -> Self:
        return cls(
            ChatCompletionClient.load_component(config.model_client),
            **BlockLedger.parts_from_config(config),
            name=config.name,
        )
