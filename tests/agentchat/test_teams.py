"""Every team type end to end with Replay clients and memento contexts (offline, no model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import MagenticOneGroupChat, RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, FunctionExecutionResultMessage, LLMMessage, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_ext_memento.context import DIGEST_SOURCE, MementoChatCompletionContext, approx_tokens
from autogen_ext_memento.memory import MEMORY_SOURCE, MementoMemory
from autogen_ext_memento.store import InMemoryBlockStore, make_recall_tool
from autogen_ext_memento.wrapping import MementoContextClient

from ._helpers import validate_role_order

TOOLS_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def call(name: str, args: dict[str, Any], cid: str) -> CreateResult:
    return CreateResult(
        content=[FunctionCall(id=cid, name=name, arguments=json.dumps(args))],
        finish_reason="function_calls",
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


async def lookup(page: int) -> str:
    """Read one page of the ledger."""
    return f"page {page}: alpha={page * 7} " + "filler text " * 60


def requests(client: ReplayChatCompletionClient) -> list[list[LLMMessage]]:
    return [list(c["messages"]) for c in client.create_calls]


@pytest.mark.asyncio
async def test_assistant_agent_with_tools_long_task_and_recall() -> None:
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=1, store=store, name="t")
    script: list[str | CreateResult] = [call("lookup", {"page": i}, f"c{i}") for i in range(6)]
    script += [call("recall_block", {"block_id": "t-2"}, "r0"), "alpha on page 1 is 7"]
    client = ReplayChatCompletionClient(script, model_info=TOOLS_INFO)
    agent = AssistantAgent(
        "reader",
        client,
        tools=[lookup, make_recall_tool(store)],
        model_context=ctx,
        max_tool_iterations=10,
    )
    result = await agent.run(task="Read pages 0-5 and report alpha of page 1.")
    assert result.messages[-1].to_text() == "alpha on page 1 is 7"
    reqs = requests(client)
    assert len(reqs) == 8
    for r in reqs:
        validate_role_order(r)
    # Sawtooth: from the third call on, the request holds the task, one digest and the last block only.
    sizes = [approx_tokens(r) for r in reqs]
    full = [approx_tokens(ctx.messages[: 1 + 2 * i]) for i in range(8)]
    assert all(s < f for s, f in zip(sizes[2:], full[2:], strict=True)), (sizes, full)
    assert max(sizes[:7]) < 1.7 * sizes[2]  # bounded while the history grows 5x
    assert any(isinstance(m, UserMessage) and m.source == DIGEST_SOURCE for m in reqs[3])
    # The recalled block (page 1's lookup) came back verbatim into the context.
    recalled = reqs[-1][-1]
    assert isinstance(recalled, FunctionExecutionResultMessage)
    assert "page 1: alpha=7 " + "filler text " * 60 in recalled.content[0].content


@pytest.mark.asyncio
async def test_round_robin_two_agents_with_memento_contexts() -> None:
    store = InMemoryBlockStore()
    a_client = ReplayChatCompletionClient(
        [call("lookup", {"page": i}, f"a{i}") if i % 2 == 0 else f"alice note {i}" for i in range(8)],
        model_info=TOOLS_INFO,
    )
    b_client = ReplayChatCompletionClient([f"bob reply {i}" for i in range(8)])
    alice = AssistantAgent(
        "alice",
        a_client,
        tools=[lookup],
        model_context=MementoChatCompletionContext(keep_last_n_blocks=2, store=store, name="alice"),
    )
    bob = AssistantAgent(
        "bob", b_client, model_context=MementoChatCompletionContext(keep_last_n_blocks=2, store=store, name="bob")
    )
    team = RoundRobinGroupChat([alice, bob], termination_condition=MaxMessageTermination(12))
    result = await team.run(task="Take turns reading pages.")
    assert result.stop_reason is not None and "Maximum number of messages 12" in result.stop_reason
    for r in requests(a_client) + requests(b_client):
        validate_role_order(r)
    # Bob sees alice's turns as messages from "alice" and compacts them.
    last_bob = requests(b_client)[-1]
    assert any(isinstance(m, UserMessage) and m.source == DIGEST_SOURCE and "alice" in str(m.content) for m in last_bob)
    assert {b.scope for b in store.list_blocks()} == {"alice", "bob"}
    assert {b.agent for b in store.list_blocks(scope="bob")} >= {"user", "alice", "bob"}


@pytest.mark.asyncio
async def test_selector_group_chat_with_memento_selector_context() -> None:
    selector_ctx = MementoChatCompletionContext(keep_last_n_blocks=2, name="sel")
    selector = ReplayChatCompletionClient(["alice", "bob", "alice", "bob", "alice", "bob"])
    filler = " with supporting detail" * 12
    alice = AssistantAgent("alice", ReplayChatCompletionClient([f"alice finding {i}{filler}" for i in range(4)]))
    bob = AssistantAgent("bob", ReplayChatCompletionClient([f"bob finding {i}{filler}" for i in range(4)]))
    team = SelectorGroupChat(
        [alice, bob],
        model_client=selector,
        model_context=selector_ctx,
        allow_repeated_speaker=True,
        termination_condition=MaxMessageTermination(7),
    )
    result = await team.run(task="Discuss the findings.")
    assert len(result.messages) == 7
    prompts = [str(r[0].content) for r in requests(selector)]
    assert len(prompts) == 6
    # The selector's history is compacted: old findings appear only as mementos in its later prompts.
    assert "memento: [Mementos" in prompts[-1] and "alice finding 0" in prompts[-1]
    assert selector_ctx.context_stats()["compacted_blocks"] >= 3


@pytest.mark.asyncio
async def test_swarm_handoff_context_forms_one_block() -> None:
    alice_client = ReplayChatCompletionClient(
        [
            CreateResult(
                content=[
                    FunctionCall(id="l1", name="lookup", arguments='{"page": 3}'),
                    FunctionCall(id="h1", name="transfer_to_bob", arguments="{}"),
                ],
                finish_reason="function_calls",
                usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                cached=False,
            )
        ],
        model_info=TOOLS_INFO,
    )
    bob_client = ReplayChatCompletionClient(["alpha is 21 TERMINATE"])
    bob_ctx = MementoChatCompletionContext(keep_last_n_blocks=0, pin_first_blocks=1, name="bob")
    alice = AssistantAgent("alice", alice_client, tools=[lookup], handoffs=["bob"])
    bob = AssistantAgent("bob", bob_client, model_context=bob_ctx)
    team = Swarm([alice, bob], termination_condition=TextMentionTermination("TERMINATE"))
    result = await team.run(task="Find alpha on page 3.")
    assert result.messages[-1].to_text() == "alpha is 21 TERMINATE"
    kinds = [(b.kind, b.agent) for b in bob_ctx.blocks]
    assert kinds[:3] == [("message", "user"), ("tool", "alice"), ("message", "alice")]
    (req,) = requests(bob_client)
    validate_role_order(req)
    # keep_last_n_blocks=0: the handed-over tool pair is compacted as a whole, never split.
    assert not any(isinstance(m, FunctionExecutionResultMessage) for m in req)
    (digest,) = [m for m in req if isinstance(m, UserMessage) and m.source == DIGEST_SOURCE]
    assert "alice: called lookup" in str(digest.content) and "alpha=21" in str(digest.content)


def _ledger(satisfied: bool, progress: bool, speaker: str, instruction: str) -> str:
    def entry(answer: Any) -> dict[str, Any]:
        return {"reason": "scripted", "answer": answer}

    return json.dumps(
        {
            "is_request_satisfied": entry(satisfied),
            "is_in_loop": entry(False),
            "is_progress_being_made": entry(progress),
            "next_speaker": entry(speaker),
            "instruction_or_question": entry(instruction + ", following the plan step by step" * 4),
        }
    )


@pytest.mark.asyncio
async def test_magentic_one_orchestrator_replans_twice_and_keeps_mementos() -> None:
    memory = MementoMemory(max_tokens=3000)
    script: list[str | CreateResult] = ["facts v1", "plan v1"]
    script += [
        _ledger(False, True, "coder", "write the parser"),
        _ledger(False, True, "terminal", "run the parser"),
        _ledger(False, True, "coder", "fix the bug"),
        _ledger(False, False, "coder", "stalled"),
        "facts v2",
        "plan v2",
        _ledger(False, True, "coder", "try approach B"),
        _ledger(False, True, "terminal", "run approach B"),
        _ledger(False, False, "coder", "stalled again"),
        "facts v3",
        "plan v3",
        _ledger(False, True, "coder", "final fix"),
        _ledger(True, True, "coder", "done"),
        "The parser works: 42 rows.",
    ]
    inner = ReplayChatCompletionClient(script)
    orchestrator_client = MementoContextClient(inner, keep_last_n_blocks=2, memory=memory, name="orch")
    coder_ctx = MementoChatCompletionContext(keep_last_n_blocks=1, memory=memory, name="coder")
    coder = AssistantAgent(
        "coder",
        ReplayChatCompletionClient(
            [f"coder output {i}: parser v{i} reads {10 * i} rows" + " (see the code above)" * 10 for i in range(5)]
        ),
        model_context=coder_ctx,
        memory=[memory],
    )
    terminal = AssistantAgent("terminal", ReplayChatCompletionClient([f"terminal ran v{i}: exit 1" for i in range(3)]))
    team = MagenticOneGroupChat([coder, terminal], model_client=orchestrator_client, max_stalls=1, max_turns=30)
    result = await team.run(task="Make the parser read all rows.")
    assert result.messages[-1].to_text() == "The parser works: 42 rows."
    reqs = requests(inner)
    assert len(reqs) == len(script)
    for r in reqs:
        validate_role_order(r)
    # Re-planned twice: the facts/plan update prompts were sent at calls 6-7 and 11-12.
    assert "facts" in str(reqs[6][-1].content).lower() and "facts" in str(reqs[11][-1].content).lower()
    # Before the first re-plan the thread was compacted (more than 2 blocks after the pinned ledger).
    assert any(isinstance(m, UserMessage) and m.source == DIGEST_SOURCE for m in reqs[5])
    # After the second re-plan the thread starts afresh, but the mementos of the first rounds are still shown.
    last_ledger = reqs[-2]
    mem_msgs = [m for m in last_ledger if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE]
    assert len(mem_msgs) == 1
    assert "write the parser" in str(mem_msgs[0].content)  # the orchestrator's round-1 instruction
    assert "coder output 0" in str(mem_msgs[0].content)  # the coder's round-1 reply
    assert len((await memory.query("write the parser")).results) >= 1
    # The coder's context was cleared at each re-plan, yet the memory reaches it too.
    assert any(e.metadata and e.metadata.get("agent") == "coder" for e in memory.entries)
    assert len(orchestrator_client.callers()) == 1


@pytest.mark.asyncio
async def test_memory_survives_agent_reset_and_team_state_round_trips() -> None:
    memory = MementoMemory()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=0, memory=memory, name="r")
    script: list[str | CreateResult] = [call("lookup", {"page": 2}, "c0"), "alpha is 14", "still 14"]
    client = ReplayChatCompletionClient(script, model_info=TOOLS_INFO)
    agent = AssistantAgent("reader", client, tools=[lookup], model_context=ctx, memory=[memory], max_tool_iterations=2)
    team = RoundRobinGroupChat([agent], max_turns=1)
    await team.run(task="Read page 2.")
    state = await team.save_state()
    assert len(memory) >= 1  # the tool block's memento
    await team.reset()  # AssistantAgent.on_reset clears the context, not the memory
    assert await ctx.get_messages() == [] and len(memory) >= 1
    await team.run(task="What was alpha?")
    last = requests(client)[-1]
    mem_msgs = [m for m in last if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE]
    assert len(mem_msgs) == 1 and "lookup" in str(mem_msgs[0].content) and "alpha=14" in str(mem_msgs[0].content)
    # The team state (with the versioned context state inside) is JSON-serialisable and loads back.
    restored = json.loads(json.dumps(state))
    await team.load_state(restored)
    assert [type(m).__name__ for m in ctx.messages][:2] == ["UserMessage", "AssistantMessage"]
