"""MementoChatCompletionContext, writers, stores, memory and the wrapping client: behaviour and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from autogen_core import CancellationToken, FunctionCall
from autogen_core.memory import MemoryContent
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_ext_memento.context import (
    DIGEST_SOURCE,
    ClosureMementoWriter,
    LLMMementoWriter,
    MementoChatCompletionContext,
    MementoWriter,
    ObservationMaskingWriter,
    approx_tokens,
    build_blocks,
)
from autogen_ext_memento.memory import MEMORY_SOURCE, MementoMemory
from autogen_ext_memento.store import (
    BlockStore,
    InMemoryBlockStore,
    SQLiteBlockStore,
    StoredBlock,
    dumps_messages,
    make_recall_tool,
)
from autogen_ext_memento.wrapping import MementoContextClient

from ._helpers import validate_role_order


def pair(i: int, size: int = 400, error: bool = False, source: str = "agent") -> list[LLMMessage]:
    cid = f"call_{i}"
    body = ("Error: missing page " if error else f"page {i}: alpha={i} beta={i * 2} ") * max(1, size // 24)
    return [
        AssistantMessage(
            content=[FunctionCall(id=cid, name="lookup", arguments=json.dumps({"page": i}))], source=source
        ),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content=body, name="lookup", call_id=cid, is_error=error)]
        ),
    ]


async def fill(ctx: MementoChatCompletionContext, turns: int, size: int = 400) -> list[LLMMessage]:
    msgs: list[LLMMessage] = [UserMessage(content="Task: read pages and report alpha.", source="user")]
    for i in range(turns):
        msgs += pair(i, size)
    for m in msgs:
        await ctx.add_message(m)
    return msgs


# --- blocks ---------------------------------------------------------------------------------------------------


def test_block_rules() -> None:
    msgs: list[LLMMessage] = [
        SystemMessage(content="memory note"),
        UserMessage(content="task", source="user"),
        *pair(0),
        AssistantMessage(content="partial answer", source="agent"),
        UserMessage(content="I disagree", source="critic"),
        # A dangling call (the run was cancelled) followed by an unrelated result.
        AssistantMessage(content=[FunctionCall(id="x", name="f", arguments="{}")], source="agent"),
        FunctionExecutionResultMessage(content=[FunctionExecutionResult(content="late", name="f", call_id="y")]),
        *pair(1, error=True),
    ]
    blocks = build_blocks(msgs)
    assert [b.kind for b in blocks] == [
        "system",
        "message",
        "tool",
        "answer",
        "message",
        "unanswered",
        "orphan_result",
        "tool",
    ]
    assert [b.agent for b in blocks][:5] == ["system", "user", "agent", "agent", "critic"]
    assert blocks[-1].has_error and len(blocks[2].messages) == 2
    # Rendering keeps the request valid: the dangling call and the orphan result become text.
    rendered = [m for b in blocks for m in b.render_messages()]
    validate_role_order(rendered)
    assert "[no tool result was recorded]" in str(rendered[6].content)


def test_closure_memento_goes_to_its_block() -> None:
    msgs: list[LLMMessage] = [
        UserMessage(content="task", source="user"),
        *pair(0),
        AssistantMessage(
            content="alpha is 0",
            thought="<|block_end|><|summary_start|>page 0: alpha=0 beta=0<|summary_end|>",
            source="agent",
        ),
    ]
    blocks = build_blocks(msgs)
    assert blocks[1].memento == "page 0: alpha=0 beta=0" and blocks[1].memento_source == "model"
    assert blocks[2].memento is None


# --- the context ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sawtooth_keeps_last_n_blocks_and_archives_everything() -> None:
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=2, store=store, name="w")
    msgs = await fill(ctx, 8)
    stored_before = list(msgs)
    view = await ctx.get_messages()
    validate_role_order(view)
    # Task pinned, one digest of the 6 older tool blocks, the last 2 blocks whole.
    assert view[0] == msgs[0]
    assert isinstance(view[1], UserMessage) and view[1].source == DIGEST_SOURCE
    assert view[2:] == msgs[-4:]
    assert str(view[1].content).count("\n- [w-") == 6
    stats = ctx.context_stats()
    assert stats["compacted_blocks"] == 6
    assert stats["live_tokens"] < 0.6 * stats["full_context_tokens"], stats
    # Stored messages untouched, a fresh list each time, every closed block archived byte-exactly.
    assert msgs == stored_before and (await ctx.get_messages()) is not (await ctx.get_messages())
    assert dumps_messages([m for b in store.list_blocks() for m in b.messages]) == dumps_messages(msgs)
    assert all(b.memento for b in store.list_blocks()[1:7])
    # recall_block returns the evicted block verbatim.
    tool = make_recall_tool(store)
    text = await tool.run_json({"block_id": "w-3"}, CancellationToken())
    assert isinstance(text, str)
    res = msgs[6]
    assert isinstance(res, FunctionExecutionResultMessage) and res.content[0].content in text
    assert "No block" in str(await tool.run_json({"block_id": "nope"}, CancellationToken()))


@pytest.mark.asyncio
async def test_token_trigger_and_hard_fallback_without_llm_calls() -> None:
    writer_client = ReplayChatCompletionClient([])  # any call would raise "No more mock responses"
    writer = LLMMementoWriter(writer_client)
    # Already far over the limit at construction (e.g. a long history loaded from disk).
    msgs: list[LLMMessage] = [UserMessage(content="task " * 800, source="user")]
    for i in range(30):
        msgs += pair(i, 2000)
    ctx = MementoChatCompletionContext(
        trigger="tokens",
        token_limit=1500,
        keep_last_n_blocks=3,
        writer=writer,
        max_llm_mementos_per_call=0,
        initial_messages=msgs,
    )
    assert approx_tokens(msgs) > 10 * 1500
    view = await ctx.get_messages()
    validate_role_order(view)
    assert approx_tokens(view) <= 1500 + 64
    assert ctx.trace[-1].hard and writer.calls == 0 and len(writer_client.create_calls) == 0
    # The next turn costs nothing more: no new model calls, same bound.
    for m in pair(99, 2000):
        await ctx.add_message(m)
    view = await ctx.get_messages()
    validate_role_order(view)
    assert approx_tokens(view) <= 1500 + 64 and writer.calls == 0


@pytest.mark.asyncio
async def test_token_trigger_passes_history_through_below_the_limit() -> None:
    ctx = MementoChatCompletionContext(trigger="tokens", token_limit=100_000, writer=ClosureMementoWriter())
    msgs = await fill(ctx, 5)
    assert await ctx.get_messages() == msgs


@pytest.mark.asyncio
async def test_llm_writer_judge_loop_and_one_call_per_block() -> None:
    client = ReplayChatCompletionClient(
        [
            "page 0 read",  # memento for block 1
            "FAIL: drops alpha=0",  # judge
            "page 0: alpha=0 beta=0",  # rewrite
            "PASS",  # judge
            "page 1: alpha=1 beta=2",  # memento for block 2
            "PASS",
        ]
    )
    writer = LLMMementoWriter(client, max_judge_rounds=2)
    ctx = MementoChatCompletionContext(keep_last_n_blocks=1, writer=writer, name="j")
    await fill(ctx, 3)
    view = await ctx.get_messages()
    digest = str(view[1].content)
    assert "[j-1] agent: page 0: alpha=0 beta=0" in digest and "[j-2] agent: page 1: alpha=1 beta=2" in digest
    assert (writer.calls, writer.judge_calls, len(client.create_calls)) == (3, 3, 6)
    # The compression prompt is what the writer sent.
    first = client.create_calls[0]["messages"]
    assert "result" in first[0].content and "page 0" in first[1].content
    # Once compacted, further views make no model call.
    await ctx.get_messages()
    assert len(client.create_calls) == 6


@pytest.mark.asyncio
async def test_llm_writer_falls_back_to_masking_on_error() -> None:
    writer = LLMMementoWriter(ReplayChatCompletionClient([]))
    ctx = MementoChatCompletionContext(keep_last_n_blocks=0, writer=writer)
    await fill(ctx, 2)
    view = await ctx.get_messages()
    assert "called lookup" in str(view[1].content) and writer.fallbacks == 2


@pytest.mark.asyncio
async def test_model_mementos_reach_store_and_memory() -> None:
    store, memory = InMemoryBlockStore(), MementoMemory()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=0, writer=ClosureMementoWriter(), store=store, memory=memory)
    await ctx.add_message(UserMessage(content="task", source="user"))
    for m in pair(0):
        await ctx.add_message(m)
    await ctx.add_message(
        AssistantMessage(content="done", thought="<|block_end|><|summary_start|>alpha=0<|summary_end|>", source="agent")
    )
    assert store.list_blocks()[1].memento == "alpha=0" and store.list_blocks()[1].memento_source == "model"
    assert [e.content for e in memory.entries] == ["alpha=0"]
    view = await ctx.get_messages()
    assert "alpha=0" in str(view[1].content)
    assert len(memory) == 2  # the answer block got a masked memento on compaction


@pytest.mark.asyncio
async def test_save_load_round_trip_mid_trajectory() -> None:
    store = InMemoryBlockStore()
    a = MementoChatCompletionContext(keep_last_n_blocks=1, store=store, name="s")
    await fill(a, 4)
    await a.add_message(pair(50)[0])  # a call still waiting for its result
    state = json.loads(json.dumps(await a.save_state()))
    assert state["version"] == 1
    b = MementoChatCompletionContext(keep_last_n_blocks=1, store=store, name="other")
    await b.load_state(state)
    assert await b.get_messages() == await a.get_messages()
    rest = pair(50)[1:] + pair(51)
    for m in rest:
        await a.add_message(m)
        await b.add_message(m)
    assert await b.get_messages() == await a.get_messages()
    assert [x.block_id for x in b.blocks] == [x.block_id for x in a.blocks]
    # A plain ChatCompletionContextState (messages only) loads too.
    plain = UnboundedChatCompletionContext()
    for m in a.messages:
        await plain.add_message(m)
    c = MementoChatCompletionContext(keep_last_n_blocks=1)
    await c.load_state(await plain.save_state())
    assert len(await c.get_messages()) == len(await a.get_messages())


@pytest.mark.asyncio
async def test_clear_keeps_ids_increasing_and_store_intact() -> None:
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(store=store, name="c")
    await fill(ctx, 2)
    await ctx.clear()
    assert await ctx.get_messages() == []
    await fill(ctx, 1)
    assert [b.block_id for b in store.list_blocks()] == ["c-0", "c-1", "c-2", "c-3", "c-4"]


# --- stores ---------------------------------------------------------------------------------------------------


def _stored(i: int) -> StoredBlock:
    return StoredBlock(block_id=f"b-{i}", agent="a" if i % 2 else "b", kind="tool", messages=pair(i), tokens=10)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_is_append_only_and_byte_exact(kind: str, tmp_path: Path) -> None:
    store: BlockStore = InMemoryBlockStore() if kind == "memory" else SQLiteBlockStore(str(tmp_path / "b.db"))
    for i in range(5):
        assert store.append(_stored(i))
    assert not store.append(_stored(2))  # identical: no-op
    with pytest.raises(ValueError):
        store.append(_stored(3).model_copy(update={"messages": pair(9)}))
    assert store.set_memento("b-1", "first", "test", 2) and not store.set_memento("b-1", "second", "test", 2)
    got = store.get("b-1")
    assert got is not None and got.memento == "first"
    assert got.messages_json() == dumps_messages(pair(1))
    assert [b.block_id for b in store.list_blocks(agent="a")] == ["b-1", "b-3"]
    assert [b.block_id for b in store.list_blocks(limit=2)] == ["b-3", "b-4"]
    assert [b.block_id for b in store.search("alpha=4")] == ["b-4"]
    assert len(store) == 5


def test_sqlite_store_persists_across_instances(tmp_path: Path) -> None:
    path = str(tmp_path / "blocks.db")
    s1 = SQLiteBlockStore(path)
    s1.append(_stored(7))
    s1.close()
    s2 = SQLiteBlockStore(path)
    got = s2.get("b-7")
    assert got is not None and got.messages == pair(7)


# --- memory ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_memory_query_and_bounded_single_injection() -> None:
    mem = MementoMemory(max_tokens=60)
    for i in range(20):
        await mem.add_memento(f"step {i} found value {i * 3}", agent="coder" if i % 2 else "surfer", block_id=f"b{i}")
    assert [e.content for e in (await mem.query("value 27")).results] == ["step 9 found value 27"]
    assert len((await mem.query("", agent="coder")).results) == 10
    assert [e.metadata["block_id"] for e in (await mem.query("found", limit=2)).results] == ["b18", "b19"]  # type: ignore[index]
    assert len((await mem.query(MemoryContent(content="step", mime_type="text/plain"), since_seq=15)).results) == 5
    msg = mem.render_message()
    assert msg is not None and approx_tokens([msg]) <= 60 + 8 and "step 19" in str(msg.content)
    # A plain context gets exactly one injected message, turn after turn.
    ctx = UnboundedChatCompletionContext()
    await ctx.add_message(UserMessage(content="task", source="user"))
    for _ in range(3):
        await mem.update_context(ctx)
        await ctx.add_message(AssistantMessage(content="ok", source="agent"))
    msgs = await ctx.get_messages()
    assert sum(1 for m in msgs if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE) == 1
    # In a memento context it replaces the previous one.
    mctx = MementoChatCompletionContext()
    await mctx.add_message(UserMessage(content="task", source="user"))
    await mem.update_context(mctx)
    await mem.update_context(mctx)
    view = await mctx.get_messages()
    assert sum(1 for m in view if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE) == 1


# --- the wrapping client --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrapping_client_compacts_each_request_and_writes_once() -> None:
    inner = ReplayChatCompletionClient(["a", "b", "c"])
    writer_client = ReplayChatCompletionClient([f"memento {i}" for i in range(20)])
    memory = MementoMemory()
    client = MementoContextClient(
        inner, keep_last_n_blocks=2, writer=LLMMementoWriter(writer_client), memory=memory, name="o"
    )
    history: list[LLMMessage] = [SystemMessage(content="sys"), UserMessage(content="task", source="user")]
    for i in range(6):
        history += [
            AssistantMessage(content=f"step {i}: " + "instructions " * 30, source="orch"),
            UserMessage(content=f"r{i}: " + "result text " * 30, source="coder"),
        ]
    await client.create(history)
    sent = inner.create_calls[0]["messages"]
    assert sent[0] == history[0] and sent[1] == history[1]
    assert isinstance(sent[2], UserMessage) and sent[2].source == DIGEST_SOURCE
    assert sent[3:] == history[-2:]
    assert len(writer_client.create_calls) == 10  # 13 blocks - the pinned task - the last 2
    # Same history plus one turn: only the block that left the window is written.
    history += [AssistantMessage(content="step 6: " + "instructions " * 30, source="orch")]
    await client.create(history)
    assert len(writer_client.create_calls) == 11
    assert len(memory) == 11
    # A reset history (re-plan) keeps its earlier mementos through the memory message.
    await client.create([UserMessage(content="new plan", source="user")])
    last = inner.create_calls[2]["messages"]
    assert any(isinstance(m, UserMessage) and m.source == MEMORY_SOURCE for m in last)
    assert client.count_tokens(history) > 0 and client.remaining_tokens(history) >= 0
    assert [s.compacted_blocks for s in client.context_trace()] == [10, 11, 0]


@pytest.mark.asyncio
async def test_wrapping_client_streams() -> None:
    inner = ReplayChatCompletionClient(["hello world"])
    client = MementoContextClient(inner)
    chunks = [c async for c in client.create_stream([UserMessage(content="hi", source="user")])]
    assert chunks[-1].content == "hello world"  # type: ignore[union-attr]


# --- component config -----------------------------------------------------------------------------------------


def _replay() -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(["x"])


@pytest.mark.parametrize(
    "make,base,provider",
    [
        (lambda p: ObservationMaskingWriter(preview_chars=12), MementoWriter, "context.ObservationMaskingWriter"),
        (lambda p: ClosureMementoWriter(), MementoWriter, "context.ClosureMementoWriter"),
        (
            lambda p: LLMMementoWriter(_replay(), judge_client=_replay(), max_judge_rounds=1, max_words=30),
            MementoWriter,
            "context.LLMMementoWriter",
        ),
        (lambda p: InMemoryBlockStore(), BlockStore, "store.InMemoryBlockStore"),
        (lambda p: SQLiteBlockStore(str(p / "x.db")), BlockStore, "store.SQLiteBlockStore"),
        (lambda p: MementoMemory("team", max_tokens=99), None, "memory.MementoMemory"),
        (
            lambda p: MementoChatCompletionContext(
                keep_last_n_blocks=3,
                trigger="tokens",
                token_limit=5000,
                writer=LLMMementoWriter(_replay()),
                store=SQLiteBlockStore(str(p / "c.db")),
                memory=MementoMemory(),
                model_client=_replay(),
                name="ctx",
                initial_messages=[UserMessage(content="hi", source="user")],
            ),
            None,
            "context.MementoChatCompletionContext",
        ),
        (
            lambda p: MementoContextClient(_replay(), keep_last_n_blocks=4, memory=MementoMemory(), name="m"),
            ChatCompletionClient,
            "wrapping.MementoContextClient",
        ),
    ],
)
def test_component_round_trip(make: Any, base: Any, provider: str, tmp_path: Path) -> None:
    comp = make(tmp_path)
    model = comp.dump_component()
    assert model.provider == "autogen_ext_memento." + provider
    assert model.description and "\n" not in model.description
    cls = base or type(comp)
    loaded = cls.load_component(model.model_dump())
    assert type(loaded) is type(comp)
    assert loaded.dump_component().model_dump() == model.model_dump()


@pytest.mark.asyncio
async def test_memory_round_trip_keeps_entries() -> None:
    mem = MementoMemory()
    await mem.add_memento("x=1", agent="a", block_id="b0")
    again = MementoMemory.load_component(mem.dump_component())
    assert [e.content for e in again.entries] == ["x=1"]


@pytest.mark.asyncio
async def test_compaction_is_logged_as_an_event(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from autogen_core import EVENT_LOGGER_NAME

    ctx = MementoChatCompletionContext(keep_last_n_blocks=1, name="ev")
    await fill(ctx, 4)
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        await ctx.get_messages()
        await ctx.get_messages()  # nothing new to compact: no second event
    events = [json.loads(r.getMessage()) for r in caplog.records if "MementoCompactionEvent" in r.getMessage()]
    assert len(events) == 1
    e = events[0]
    assert e["scope"] == "ev" and e["newly_compacted"] == 3 and e["view_tokens"] < e["full_tokens"]


@pytest.mark.asyncio
async def test_closure_writer_waits_for_the_models_memento() -> None:
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=0, writer=ClosureMementoWriter(), store=store, name="w")
    await ctx.add_message(UserMessage(content="task", source="user"))
    for m in pair(0):
        await ctx.add_message(m)
    view = await ctx.get_messages()  # the agent asks for the next action: the model has not closed the block yet
    assert isinstance(view[-1], FunctionExecutionResultMessage)
    await ctx.add_message(
        AssistantMessage(
            content=[FunctionCall(id="call_1", name="lookup", arguments=json.dumps({"page": 1}))],
            thought="<|block_end|><|summary_start|>alpha=0<|summary_end|>",
            source="agent",
        )
    )
    await ctx.add_message(pair(1)[1])
    view = await ctx.get_messages()
    assert "[w-1] agent: alpha=0" in str(view[1].content)
    assert store.list_blocks()[1].memento_source == "model"


@pytest.mark.asyncio
async def test_load_state_into_a_fresh_sqlite_store_restores_blocks_and_mementos(tmp_path: Path) -> None:
    a = MementoChatCompletionContext(keep_last_n_blocks=1, name="x")
    msgs = await fill(a, 4)
    await a.get_messages()
    state = await a.save_state()
    store = SQLiteBlockStore(str(tmp_path / "fresh.db"))
    b = MementoChatCompletionContext(keep_last_n_blocks=1, store=store)
    await b.load_state(state)
    assert dumps_messages([m for blk in store.list_blocks() for m in blk.messages]) == dumps_messages(msgs)
    assert [blk.memento is not None for blk in store.list_blocks()] == [False, True, True, True, False]
    assert await b.get_messages() == await a.get_messages()
