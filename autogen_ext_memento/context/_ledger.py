"""The block ledger: what a sawtooth context and the wrapping client share once blocks are formed."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from autogen_core import CancellationToken, ComponentModel
from autogen_core.models import ChatCompletionClient, LLMMessage, UserMessage

from .._checks import require_type
from ..memory import MementoMemory
from ..store import BlockStore, InMemoryBlockStore, StoredBlock
from ._blocks import Block, TokenCounter, approx_tokens
from ._compactor import OnMemento, compact
from ._policy import CompactionPolicy, ViewStats
from ._writers import MementoWriter, ObservationMaskingWriter


def client_counter(client: ChatCompletionClient | None) -> TokenCounter:
    """A token counter from a model client's ``count_tokens``, falling back to :func:`approx_tokens` on errors.

    The fallback matters because ``count_tokens`` raises offline for OpenAI clients (tiktoken downloads).
    """
    if client is None:
        return approx_tokens

    def count(messages: Sequence[LLMMessage]) -> int:
        try:
            return int(client.count_tokens(messages))
        except Exception:  # noqa: BLE001 - counting must never break the agent
            return approx_tokens(messages)

    return count


class BlockLedgerConfig(CompactionPolicy):
    """The compaction policy fields plus the ledger's parts (the base of the context's and client's configs)."""

    writer: ComponentModel | None = None
    store: ComponentModel | None = None
    memory: ComponentModel | None = None


class BlockLedger:
    """The compaction policy and the parts around it: archiving blocks, recording mementos, building views.

    Both :class:`~autogen_ext_memento.context.MementoChatCompletionContext` and
    :class:`~autogen_ext_memento.wrapping.MementoContextClient` keep one: every closed block is archived verbatim in
    ``store``, every memento (the model's or a writer's) is recorded there and sent to ``memory``, and a view is the
    policy applied to the blocks by :func:`~autogen_ext_memento.context.compact` with ``writer``.

    Args:
        policy: the compaction policy.
        writer: memento writer (default :class:`~autogen_ext_memento.context.ObservationMaskingWriter`).
        store: block archive (default in memory).
        memory: a :class:`~autogen_ext_memento.memory.MementoMemory` receiving every memento.
        model_client: counts tokens (default :func:`~autogen_ext_memento.context.approx_tokens`).
        owner: the class named in argument errors.
    """

    def __init__(
        self,
        policy: CompactionPolicy,
        *,
        writer: MementoWriter | None = None,
        store: BlockStore | None = None,
        memory: MementoMemory | None = None,
        model_client: ChatCompletionClient | None = None,
        owner: str = "BlockLedger",
    ) -> None:
        require_type(writer, MementoWriter, "writer", owner)
        require_type(store, BlockStore, "store", owner)
        require_type(memory, MementoMemory, "memory", owner)
        require_type(model_client, ChatCompletionClient, "model_client", owner)
        self.policy = policy
        self.writer: MementoWriter = writer if writer is not None else ObservationMaskingWriter()
        self.store: BlockStore = store if store is not None else InMemoryBlockStore()
        self.memory = memory
        self.counter = client_counter(model_client)

    def archive(self, block: Block, *, scope: str, seq: int) -> bool:
        """Archive ``block`` verbatim in the store (``False`` if the store already held it)."""
        return self.store.append(
            StoredBlock(
                block_id=block.block_id,
                agent=block.agent,
                kind=block.kind,
                messages=block.messages,
                tokens=block.tokens,
                scope=scope,
                seq=seq,
            )
        )

    def store_memento(self, block: Block) -> None:
        """Record a closed block's memento in the store (with its token count)."""
        assert block.memento is not None
        mtok = self.counter([UserMessage(content=block.memento, source="memento")])
        self.store.set_memento(block.block_id, block.memento, block.memento_source or "", mtok)

    async def record_memento(self, block: Block) -> None:
        """A block just got its memento: record it in the store (once the block is closed) and send it to memory."""
        if block.memento is None:
            return
        if block.closed:
            self.store_memento(block)
        if self.memory is not None:
            await self.memory.add_memento(block.memento, agent=block.agent, block_id=block.block_id, kind=block.kind)

    def memory_message(self, own_block_ids: Collection[str]) -> LLMMessage | None:
        """The memory's message for a view that already shows ``own_block_ids`` (``None`` without a memory)."""
        return self.memory.render_message(own_block_ids) if self.memory is not None else None

    async def view(
        self,
        blocks: list[Block],
        memory_message: LLMMessage | None,
        cancellation_token: CancellationToken | None = None,
        on_memento: OnMemento | None = None,
    ) -> tuple[list[LLMMessage], ViewStats]:
        """The compacted view of ``blocks`` under the policy; new mementos go to ``on_memento`` (default
        :meth:`record_memento`)."""
        return await compact(
            blocks,
            self.policy,
            self.writer,
            self.counter,
            memory_message=memory_message,
            on_memento=on_memento if on_memento is not None else self.record_memento,
            cancellation_token=cancellation_token,
        )

    def config_fields(self) -> dict[str, Any]:
        """The policy values and the parts' component models, as a component config takes them."""
        return {
            **self.policy.model_dump(),
            "writer": self.writer.dump_component(),
            "store": self.store.dump_component(),
            "memory": self.memory.dump_component() if self.memory is not None else None,
        }

    @staticmethod
    def parts_from_config(config: BlockLedgerConfig) -> dict[str, Any]:
        """Constructor keywords (policy values and loaded parts) from a config written by :meth:`config_fields`."""
        return {
            **config.model_dump(include=set(CompactionPolicy.model_fields)),
            "writer": MementoWriter.load_component(config.writer) if config.writer else None,
            "store": BlockStore.load_component(config.store) if config.store else None,
            "memory": MementoMemory.load_component(config.memory) if config.memory else None,
        }
