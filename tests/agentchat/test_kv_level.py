"""Writer (a): a memento model behind MementoChatCompletionClient writes its own mementos; the context archives them.

A tiny random Qwen3 is forced token by token (``ScriptedCompletions``) to emit tool calls and closure mementos, so the
KV eviction in the backend is real while the text is known.
"""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core.tools import FunctionTool

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
from autogen_ext_memento._tiny import build_tiny_qwen3
from autogen_ext_memento.context import ClosureMementoWriter, MementoChatCompletionContext
from autogen_ext_memento.memory import MementoMemory
from autogen_ext_memento.store import InMemoryBlockStore
from autogen_ext_memento.testing import ScriptedCompletions

CALL = '<|block_start|>look<tool_call>\n{"name": "lookup", "arguments": {"key": "%s"}}\n</tool_call><|im_end|>'
SCRIPT = [CALL % "a", "a=1<|summary_end|>", CALL % "bb", "a=1 bb=2<|summary_end|>", CALL % "ccc"]
SCRIPT += ["a=1 bb=2 ccc=3<|summary_end|>", "total 6<|im_end|>"]


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key} is {len(key)}; " + "filler " * 40


@pytest.fixture()
def backend(tiny_tokenizer: Any) -> TransformersBackend:
    b = TransformersBackend(build_tiny_qwen3(len(tiny_tokenizer)), tiny_tokenizer)
    b.logits_processor = ScriptedCompletions(b.tokenizer, SCRIPT)
    return b


async def run(backend: TransformersBackend, ctx: MementoChatCompletionContext) -> tuple[Any, str]:
    client = MementoChatCompletionClient(backend, max_new_tokens=120, session_id="s1")
    agent = AssistantAgent(
        "agent", client, tools=[FunctionTool(lookup, description="look")], max_tool_iterations=5, model_context=ctx
    )
    result = await agent.run(task="sum the values of a, bb, ccc")
    stats = client.session_stats("s1")
    return stats, result.messages[-1].to_text()


@pytest.mark.asyncio
async def test_model_mementos_pass_through_below_the_limit(backend: TransformersBackend) -> None:
    store, memory = InMemoryBlockStore(), MementoMemory()
    ctx = MementoChatCompletionContext(
        writer=ClosureMementoWriter(), trigger="tokens", token_limit=100_000, store=store, memory=memory, name="kv"
    )
    stats, answer = await run(backend, ctx)
    assert answer == "total 6"
    # The history went through unchanged, so the backend's session never had to be rebuilt: eviction is at KV level.
    assert stats.evictions == 3 and stats.rebuilds == 0 and stats.peak_kv_tokens < stats.full_context_kv_tokens
    mementos = [(b.kind, b.memento, b.memento_source) for b in store.list_blocks() if b.memento]
    assert mementos == [
        ("tool", "a=1", "model"),
        ("tool", "a=1 bb=2", "model"),
        ("tool", "a=1 bb=2 ccc=3", "model"),
    ]
    assert [e.content for e in memory.entries] == ["a=1", "a=1 bb=2", "a=1 bb=2 ccc=3"]
    assert ctx.trace[-1].compacted_blocks == 0


@pytest.mark.asyncio
async def test_over_the_limit_the_text_view_uses_the_model_mementos(backend: TransformersBackend) -> None:
    ctx = MementoChatCompletionContext(writer=ClosureMementoWriter(), keep_last_n_blocks=1, name="kv")
    stats, answer = await run(backend, ctx)
    assert answer == "total 6"
    digest = [str(m.content) for m in await ctx.get_messages() if getattr(m, "source", "") == "memento"]
    assert len(digest) == 1 and "[kv-1] agent: a=1" in digest[0] and "[kv-2] agent: a=1 bb=2" in digest[0]
    assert stats.evictions == 3
