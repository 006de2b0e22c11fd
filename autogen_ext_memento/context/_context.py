"""``MementoChatCompletionContext``: a sawtooth model context for AssistantAgent and any agent with ``model_context``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, ComponentModel
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage
from pydantic import TypeAdapter
from typing_extensions import Self

from .._checks import build_config
from ..memory import MementoMemory
from ..store import BlockStore
from ._blocks import Block, BlockBuilder
from ._ledger import BlockLedger, BlockLedgerConfig
from ._policy import CompactionPolicy, MementoSystemOverBudgetEvent, ViewStats, leading_system_blocks, log_compaction
from ._writers import MementoWriter

logger = logging.getLogger(__name__)

STATE_VERSION = 1
_OWNER = "MementoChatCompletionContext"
_MESSAGE = TypeAdapter(LLMMessage)


class MementoChatCompletionContextConfig(BlockLedgerConfig):
    """Configuration of :class:`MementoChatCompletionContext` (the compaction policy fields plus its parts)."""

    model_client: ComponentModel | None = None
    name: str | None = None
    initial_messages: list[LLMMessage] | None = None


class MementoChatCompletionContext(ChatCompletionContext, Component[MementoChatCompletionContextConfig]):
    """A sawtooth chat completion context: closed blocks are replaced by mementos, the last N blocks stay whole.

    Blocks are formed from the messages as documented in :mod:`autogen_ext_memento.context._blocks` (a tool call
    and its results are one block, never split). :meth:`get_messages` returns a fresh list
    ``[system message] + [pinned task] + [memory message] + [one digest of mementos] + [last N blocks whole]`` and
    never mutates the stored messages; every block is archived verbatim in ``store`` as soon as it closes, and
    :func:`~autogen_ext_memento.store.make_recall_tool` reopens it by the id shown in the digest.

    The leading system message(s) are always first and whole in every view. A system message in
    ``initial_messages`` that alone exceeds ``token_limit`` is refused at construction; one added later is kept and
    logged once (a warning and a ``MementoSystemOverBudgetEvent``). Images (``UserMessage`` content lists) are kept
    verbatim and archived bit-exact; their mementos and recall text show ``[image]``. With compaction off (e.g.
    ``trigger="tokens"`` and a large ``token_limit``) the views equal ``UnboundedChatCompletionContext``'s.
    Every argument is checked at construction (one-line ``ValueError``/``TypeError``), by the rules of
    :class:`MementoChatCompletionContextConfig`.

    Args:
        keep_last_n_blocks: closed blocks kept whole after the newest.
        trigger: ``"block"`` compacts after each completed block; ``"tokens"`` only over ``token_limit``.
        token_limit: token budget of the view; enables the hard fallback (see
            :mod:`autogen_ext_memento.context._compactor`), so a history already over the limit is brought under it
            in one call, without extra model calls.
        low_watermark: with ``trigger="tokens"``, compact down to this fraction of ``token_limit``.
        pin_first_blocks: leading blocks (the task) the soft policy never compacts, after the system message.
        max_llm_mementos_per_call: cap on model-written mementos per :meth:`get_messages`.
        writer: who writes mementos (default :class:`ObservationMaskingWriter`, no LLM).
        store: where blocks are archived (default: an in-memory store).
        memory: a :class:`~autogen_ext_memento.memory.MementoMemory` that receives every memento (team level,
            survives ``clear()``) and whose message :meth:`get_messages` shows when it injects one.
        model_client: counts tokens with this client's ``count_tokens`` (default: 4 characters per token).
        name: prefix of block ids (default: random), so ids from several agents sharing a store never collide.
        initial_messages: messages added at construction.

    Example:

    .. code-block:: python

        import asyncio

        from autogen_agentchat.agents import AssistantAgent
        from autogen_ext.models.replay import ReplayChatCompletionClient
        from autogen_ext_memento.context import MementoChatCompletionContext


        async def main() -> None:
            context = MementoChatCompletionContext(keep_last_n_blocks=2, name="writer")
            agent = AssistantAgent("writer", ReplayChatCompletionClient(["done"]), model_context=context)
            print((await agent.run(task="hello")).messages[-1].content)


        asyncio.run(main())
    """

    component_provider_override = "autogen_ext_memento.context.MementoChatCompletionContext"
    component_config_schema = MementoChatCompletionContextConfig

    def __init__(
        self,
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
        model_client: ChatCompletionClient | None = None,
        name: str | None = None,
        initial_messages: list[LLMMessage] | None = None,
    ) -> None:
        # One source of rules: the Config validates every plain value; the parts are checked by type.
        config = build_config(
            MementoChatCompletionContextConfig,
            _OWNER,
            keep_last_n_blocks=keep_last_n_blocks,
            trigger=trigger,
            token_limit=token_limit,
            low_watermark=low_watermark,
            pin_first_blocks=pin_first_blocks,
            max_llm_mementos_per_call=max_llm_mementos_per_call,
            name=name,
            initial_messages=initial_messages,
        )
        policy = CompactionPolicy.model_validate(config.model_dump(include=set(CompactionPolicy.model_fields)))
        self._ledger = BlockLedger(
            policy, writer=writer, store=store, memory=memory, model_client=model_client, owner=_OWNER
        )
        self._policy = policy
        self._store = self._ledger.store
        self._memory = memory
        self._model_client = model_client
        self._counter = self._ledger.counter
        self._name = config.name
        self._prefix = config.name or uuid.uuid4().hex[:6]
        self._seq_base = 0
        self._builder = BlockBuilder(self._counter)
        self._announced: set[int] = set()
        self._memory_message: LLMMessage | None = None
        self._memory_source: MementoMemory | None = None
        self._system_warned = False
        self.trace: list[ViewStats] = []
        super().__init__(None)
        self._refuse_oversized_system(initial_messages or [])
        for m in initial_messages or []:
            self._add_sync(m)
        self._initial_messages = initial_messages

    # --- properties --------------------------------------------------------------------------------------------
    @property
    def policy(self) -> CompactionPolicy:
        return self._policy

    @property
    def store(self) -> BlockStore:
        return self._store

    @property
    def writer(self) -> MementoWriter:
        return self._ledger.writer

    @property
    def memory(self) -> MementoMemory | None:
        return self._memory

    @property
    def blocks(self) -> list[Block]:
        """The blocks formed so far (read-only use)."""
        return self._builder.blocks

    @property
    def messages(self) -> list[LLMMessage]:
        """A copy of every message added (the uncompacted history)."""
        return list(self._messages)

    # --- adding ------------------------------------------------------------------------------------------------
    def _block_id(self, seq: int) -> str:
        return f"{self._prefix}-{self._seq_base + seq}"

    def _archive(self, block: Block) -> None:
        self._ledger.archive(block, scope=self._prefix, seq=self._seq_base + block.seq)

    # --- the system message ------------------------------------------------------------------------------------
    def _refuse_oversized_system(self, initial_messages: list[LLMMessage]) -> None:
        """Refuse a system message in ``initial_messages`` that alone exceeds ``token_limit`` (it is never cut)."""
        limit = self._policy.token_limit
        lead: list[LLMMessage] = []
        for m in initial_messages:
            if not isinstance(m, SystemMessage):
                break
            lead.append(m)
        tokens = sum(self._counter([m]) for m in lead)
        if limit is not None and tokens > limit:
            raise ValueError(
                f"{_OWNER}: the system message in initial_messages is {tokens} tokens, over token_limit={limit}; "
                "it is always shown whole, so raise token_limit or shorten it"
            )

    def _warn_oversized_system(self) -> None:
        """Log (once until :meth:`clear`) when the leading system messages alone exceed ``token_limit``."""
        limit = self._policy.token_limit
        blocks = self._builder.blocks
        lead = leading_system_blocks(blocks)
        if limit is None or self._system_warned or lead != len(blocks):
            return  # only a system message that is still part of the leading run can grow it
        tokens = sum(b.tokens for b in blocks[:lead])
        if tokens > limit:
            self._system_warned = True
            logger.warning(
                "%s %s: the system message is %d tokens, over token_limit=%d; it is kept whole, so views exceed "
                "the limit",
                _OWNER,
                self._prefix,
                tokens,
                limit,
            )
            logging.getLogger(EVENT_LOGGER_NAME).info(
                MementoSystemOverBudgetEvent(scope=self._prefix, system_tokens=tokens, token_limit=limit)
            )

    def _add_sync(self, message: LLMMessage) -> list[Block]:
        """Record a message and archive the blocks it closed; return blocks whose model memento just arrived."""
        self._messages.append(message)
        closed = self._builder.add(message)
        blocks = self._builder.blocks
        if blocks and not blocks[-1].block_id:
            blocks[-1].block_id = self._block_id(blocks[-1].seq)
        for b in closed:
            self._archive(b)
        if isinstance(message, SystemMessage):
            self._warn_oversized_system()
        fresh: list[Block] = []
        for b in reversed(blocks):
            if b.memento is not None and b.memento_source == "model" and b.seq not in self._announced:
                fresh.append(b)
        return fresh

    async def add_message(self, message: LLMMessage) -> None:
        """Add a message; a block it completes is archived, and a memento written by the model is recorded."""
        for b in self._add_sync(message):
            await self._on_memento(b)

    async def _on_memento(self, block: Block) -> None:
        if block.seq in self._announced or block.memento is None:
            return
        self._announced.add(block.seq)
        await self._ledger.record_memento(block)

    def set_memory_message(self, message: LLMMessage | None) -> None:
        """Show ``message`` (one memory message, replacing the previous one) in the next views."""
        self._memory_message = message
        self._memory_source = None

    def attach_memory(self, memory: MementoMemory) -> None:
        """Show ``memory``'s message in the next views, rendered at each view without this context's own blocks."""
        self._memory_source = memory
        self._memory_message = None

    def _current_memory_message(self) -> LLMMessage | None:
        if self._memory_source is not None:
            return self._memory_source.render_message({b.block_id for b in self._builder.blocks})
        return self._memory_message

    # --- the view ----------------------------------------------------------------------------------------------
    async def get_messages(self) -> list[LLMMessage]:
        """The compacted view: a fresh list; tool pairs are never split and it never starts with a tool result."""
        return await self.get_view()

    async def get_view(self, cancellation_token: CancellationToken | None = None) -> list[LLMMessage]:
        """Like :meth:`get_messages`, with a cancellation token for the writer's model calls."""
        view, stats = await self._ledger.view(
            self._builder.blocks, self._current_memory_message(), cancellation_token, on_memento=self._on_memento
        )
        self.trace.append(stats)
        log_compaction(self._prefix, stats)
        return view

    def context_stats(self) -> dict[str, int]:
        """Live (last view), peak and full-context tokens over the views built so far."""
        views = [s.view_tokens for s in self.trace]
        return {
            "views": len(views),
            "live_tokens": views[-1] if views else 0,
            "peak_tokens": max(views, default=0),
            "full_context_tokens": self.trace[-1].full_tokens if self.trace else 0,
            "peak_full_context_tokens": max((s.full_tokens for s in self.trace), default=0),
            "compacted_blocks": self.trace[-1].compacted_blocks if self.trace else 0,
        }

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def clear(self) -> None:
        """Forget the history (the store and the memory keep everything); block ids keep increasing."""
        pending = self._builder.close_open()
        if pending is not None:
            self._archive(pending)
        self._seq_base += len(self._builder.blocks)
        self._messages = []
        self._builder = BlockBuilder(self._counter)
        self._announced = set()
        self._memory_message = None
        self._memory_source = None
        self._system_warned = False

    async def save_state(self) -> Mapping[str, Any]:
        """Versioned, JSON-safe state: the messages, block ids, every block's memento and compaction flag, and the
        memory message shown (restored exactly by :meth:`load_state`)."""
        return {
            "version": STATE_VERSION,
            "type": "MementoChatCompletionContextState",
            "messages": [m.model_dump(mode="json") for m in self._messages],
            "prefix": self._prefix,
            "seq_base": self._seq_base,
            "blocks": [
                {"seq": b.seq, "memento": b.memento, "memento_source": b.memento_source, "compacted": b.compacted}
                for b in self._builder.blocks
            ],
            "announced": sorted(self._announced),
            "memory_message": self._memory_message.model_dump(mode="json") if self._memory_message else None,
            # The memory object itself is not state; this context's own ``memory`` is re-attached on load.
            "memory_attached": self._memory_source is not None and self._memory_source is self._memory,
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`save_state` (or a plain ``ChatCompletionContextState``: messages only).

        The messages are replayed into blocks and each block gets back exactly the memento it had. The blocks are
        archived in this context's store (a store that already holds them keeps its records; restore a store's own
        state first, with :meth:`~autogen_ext_memento.store.BlockStore.load_state`, to keep its insertion times).
        """
        from autogen_core.model_context import ChatCompletionContextState

        version = int(state.get("version", 0))
        if version > STATE_VERSION:
            raise ValueError(f"{_OWNER} state version {version} is newer than supported ({STATE_VERSION})")
        messages = ChatCompletionContextState.model_validate({"messages": state.get("messages", [])}).messages
        self._prefix = str(state.get("prefix", self._prefix))
        self._seq_base = int(state.get("seq_base", 0))
        self._messages = []
        self._builder = BlockBuilder(self._counter)
        self._system_warned = False
        saved = {int(b["seq"]): b for b in state.get("blocks", [])}
        self._replay(messages, saved)
        self._announced = {int(s) for s in state.get("announced", [])}
        for b in self._builder.blocks:
            s = saved.get(b.seq)
            if s is not None and b.memento is None and s.get("memento") is not None:
                # A state written before mementos were restored in order: give the block its saved memento.
                b.memento, b.memento_source = str(s["memento"]), s.get("memento_source")
            b.compacted = s is not None and bool(s.get("compacted")) and b.memento is not None and b.closed
        for b in self._builder.blocks:
            if b.closed and b.memento is not None:
                # A fresh store (another process) gets the mementos too; an existing one keeps its first record.
                self._ledger.store_memento(b)
        raw_memory = state.get("memory_message")
        self._memory_message = _MESSAGE.validate_python(raw_memory) if raw_memory is not None else None
        attached = bool(state.get("memory_attached")) and self._memory is not None
        self._memory_source = self._memory if attached else None

    def _replay(self, messages: list[LLMMessage], saved: Mapping[int, Mapping[str, Any]]) -> None:
        """Re-add ``messages``, giving each new block the memento it had unless the model's own one comes later.

        A block that was compacted (given a masking or writer memento) before the model's closure arrived did not
        take that closure; the closure went to an earlier block or nowhere. Restoring those mementos as soon as the
        block forms, before any later message, makes the replayed closures land exactly where they did.
        """
        for m in messages:
            before = len(self._builder.blocks)
            self._add_sync(m)
            for b in self._builder.blocks[before:]:
                s = saved.get(b.seq)
                if s is None or s.get("memento") is None or s.get("memento_source") == "model":
                    continue
                if b.memento is None:
                    b.memento, b.memento_source = str(s["memento"]), s.get("memento_source")

    # --- component config --------------------------------------------------------------------------------------
    def _to_config(self) -> MementoChatCompletionContextConfig:
        return MementoChatCompletionContextConfig(
            **self._ledger.config_fields(),
            model_client=self._model_client.dump_component() if self._model_client is not None else None,
            name=self._name,
            initial_messages=self._initial_messages,
        )

    @classmethod
    def _from_config(cls, config: MementoChatCompletionContextConfig) -> Self:
        return cls(
            **BlockLedger.parts_from_config(config),
            model_client=ChatCompletionClient.load_component(config.model_client) if config.model_client else None,
            name=config.name,
            initial_messages=config.initial_messages,
        )
