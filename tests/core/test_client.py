"""MementoChatCompletionClient against a real (tiny, random) model whose outputs are scripted token by token."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from pydantic import BaseModel

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
from autogen_ext_memento._tiny import build_tiny_qwen3
from autogen_ext_memento.chat_format import TurnEncoder, render
from autogen_ext_memento.testing import ScriptedCompletions

CALL = '<|block_start|>look<tool_call>\n{"name": "lookup", "arguments": {"key": "%s"}}\n</tool_call><|im_end|>'


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key} is {len(key)}; " + "filler " * 40


@pytest.fixture()
def backend(tiny_tokenizer: Any) -> TransformersBackend:
    return TransformersBackend(build_tiny_qwen3(len(tiny_tokenizer)), tiny_tokenizer)


def scripted(backend: TransformersBackend, texts: list[str], **kwargs: Any) -> MementoChatCompletionClient:
    backend.logits_processor = ScriptedCompletions(backend.tokenizer, texts)
    return MementoChatCompletionClient(backend, max_new_tokens=120, **kwargs)


def test_implements_every_abstract_member() -> None:
    missing = [
        m for m in ChatCompletionClient.__abstractmethods__ if m in MementoChatCompletionClient.__abstractmethods__
    ]
    assert not missing


@pytest.mark.asyncio
async def test_create_text(backend: TransformersBackend) -> None:
    client = scripted(backend, ["hello world<|im_end|>"])
    res = await client.create([SystemMessage(content="sys"), UserMessage(content="hi", source="user")])
    assert res.content == "hello world" and res.finish_reason == "stop" and res.thought is None
    assert res.usage.completion_tokens > 0 and client.total_usage().prompt_tokens == res.usage.prompt_tokens


@pytest.mark.asyncio
async def test_create_stream_yields_deltas_then_one_result(backend: TransformersBackend) -> None:
    client = scripted(backend, ["<|block_start|>r<|block_end|><|summary_start|>m<|summary_end|>answer 42<|im_end|>"])
    chunks = [c async for c in client.create_stream([UserMessage(content="q", source="user")])]
    assert all(isinstance(c, str) for c in chunks[:-1]) and isinstance(chunks[-1], CreateResult)
    res = chunks[-1]
    assert res.content == "answer 42"
    assert res.thought == "<|block_start|>r<|block_end|><|summary_start|>m<|summary_end|>"
    assert "".join(chunks[:-1]) == res.thought + res.content  # type: ignore[operator]


@pytest.mark.asyncio
async def test_tool_calls_and_malformed_json(backend: TransformersBackend, caplog: pytest.LogCaptureFixture) -> None:
    bad = '<|block_start|><tool_call>\n{"name": "lookup", "arguments": {"key": \n</tool_call><|im_end|>'
    client = scripted(backend, [CALL % "a", bad])
    tool = FunctionTool(lookup, description="look")
    msgs = [UserMessage(content="find a", source="user")]
    res = await client.create(msgs, tools=[tool])
    assert res.finish_reason == "function_calls"
    assert isinstance(res.content, list) and res.content[0].name == "lookup"
    assert json.loads(res.content[0].arguments) == {"key": "a"} and res.thought == "<|block_start|>look"
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        res2 = await client.create([UserMessage(content="other", source="user")], tools=[tool])
    assert isinstance(res2.content, list) and res2.content[0].name == "lookup"  # name recovered, raw arguments
    assert not _is_json(res2.content[0].arguments)
    assert any("MementoMalformedOutputEvent" in r.getMessage() for r in caplog.records)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


class Answer(BaseModel):
    value: int


@pytest.mark.asyncio
async def test_json_output_is_validated(backend: TransformersBackend) -> None:
    client = scripted(backend, ['{"value": 3}<|im_end|>', "not json<|im_end|>", '{"value": "x"}<|im_end|>'])
    msgs = [UserMessage(content="json please", source="user")]
    ok = await client.create(msgs, json_output=Answer)
    assert Answer.model_validate_json(ok.content).value == 3  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid JSON"):
        await client.create(msgs, json_output=True)
    with pytest.raises(ValueError, match="Answer"):
        await client.create(msgs, json_output=Answer)


@pytest.mark.asyncio
async def test_agent_with_tools_evicts_each_observation_block(backend: TransformersBackend) -> None:
    script = [CALL % "a", "a=1<|summary_end|>", CALL % "bb", "a=1 bb=2<|summary_end|>", CALL % "ccc"]
    script += ["a=1 bb=2 ccc=3<|summary_end|>", "total 6<|im_end|>"]
    client = scripted(backend, script, session_id="s1")
    agent = AssistantAgent(
        "agent", model_client=client, tools=[FunctionTool(lookup, description="look")], max_tool_iterations=5
    )
    result = await agent.run(task="sum the values of a, bb, ccc")
    assert result.messages[-1].content == "total 6"  # type: ignore[union-attr]
    stats = client.session_stats("s1")
    assert stats is not None
    assert stats.evictions == 3 and stats.rebuilds == 0
    assert stats.peak_kv_tokens < stats.full_context_kv_tokens
    assert stats.live_kv_tokens < stats.logical_tokens - 3 * 40  # every observation's bulk is gone
    # the agent's history re-renders to exactly what the session holds, so every token was computed once:
    # prefilled, or sampled and fed (each of the 7 generations leaves its stop token to the next prefill)
    held, _ = backend.session_tokens("s1")
    assert stats.prefill_tokens + stats.generated_tokens - len(script) == len(held) - 1


@pytest.mark.asyncio
async def test_history_mismatch_rebuilds_and_logs(
    backend: TransformersBackend, caplog: pytest.LogCaptureFixture
) -> None:
    client = scripted(backend, ["one<|im_end|>", "two<|im_end|>", "three<|im_end|>"])
    first = [UserMessage(content="first", source="user")]
    r1 = await client.create(first)
    second = [*first, AssistantMessage(content=r1.content, source="a"), UserMessage(content="next", source="user")]
    r2 = await client.create(second)
    assert client.session_stats().rebuilds == 0  # type: ignore[union-attr]
    assert r2.usage.prompt_tokens < client.count_tokens(second)  # only the new turn was prefilled
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        await client.create([UserMessage(content="a different conversation", source="user")])
    assert client.session_stats().rebuilds == 1  # type: ignore[union-attr]
    assert any("MementoSessionRebuildEvent" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_runaway_memento_is_closed_by_force(backend: TransformersBackend) -> None:
    client = scripted(backend, [CALL % "a", "x " * 50 + "<|summary_end|>", "done<|im_end|>"], max_memento_tokens=8)
    tool = FunctionTool(lookup, description="look")
    msgs: list[Any] = [UserMessage(content="go", source="user")]
    r1 = await client.create(msgs, tools=[tool])
    msgs += [AssistantMessage(content=r1.content, thought=r1.thought, source="a")]
    assert isinstance(r1.content, list)
    msgs += [
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="v", name="lookup", call_id=r1.content[0].id)]
        )
    ]
    r2 = await client.create(msgs, tools=[tool])
    assert r2.thought is not None and r2.thought.endswith("<|summary_end|>")
    stats = client.session_stats()
    assert stats is not None and stats.evictions == 1 and stats.rebuilds == 0


@pytest.mark.asyncio
async def test_count_and_remaining_tokens(backend: TransformersBackend) -> None:
    client = MementoChatCompletionClient(backend)
    call = FunctionCall(id="1", name="lookup", arguments='{"key": "a"}')
    msgs = [
        UserMessage(content="q", source="user"),
        AssistantMessage(content=[call], source="a"),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="y " * 50, name="lookup", call_id="1")]
        ),
        AssistantMessage(content="done", thought="<|block_end|><|summary_start|>m<|summary_end|>", source="a"),
    ]
    n = client.count_tokens(msgs)
    assert n == len(TurnEncoder(backend.tokenizer).encode(render(msgs, add_generation_prompt=True)))
    kept = backend.max_model_len - client.remaining_tokens(msgs)
    assert kept < n - 50  # the observation block no longer counts against the window


@pytest.mark.asyncio
async def test_component_round_trip(tiny_model_dir: Path) -> None:
    client = MementoChatCompletionClient(TransformersBackend(str(tiny_model_dir)), max_new_tokens=7, seed=3)
    comp = client.dump_component()
    assert comp.provider == "autogen_ext_memento.MementoChatCompletionClient"
    again = ChatCompletionClient.load_component(comp)
    assert isinstance(again, MementoChatCompletionClient)
    assert again.dump_component().model_dump() == comp.model_dump()


@pytest.mark.asyncio
async def test_round_robin_agents_get_separate_sessions(backend: TransformersBackend) -> None:
    client = scripted(backend, ["alpha<|im_end|>", "beta<|im_end|>", "gamma<|im_end|>", "delta<|im_end|>"])
    a = AssistantAgent("a", model_client=client)
    b = AssistantAgent("b", model_client=client)
    team = RoundRobinGroupChat([a, b], termination_condition=MaxMessageTermination(5))
    result = await team.run(task="talk")
    assert [m.content for m in result.messages[1:]] == ["alpha", "beta", "gamma", "delta"]
    sessions = client.session_ids()
    assert (
        len(sessions) == 2 and any(s.startswith("a_") for s in sessions) and any(s.startswith("b_") for s in sessions)
    )
    for sid in sessions:
        assert client.session_stats(sid).rebuilds == 0  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_cancellation_stops_generation(backend: TransformersBackend) -> None:
    import asyncio

    from autogen_core import CancellationToken

    client = MementoChatCompletionClient(backend, max_new_tokens=5000)
    backend._max_len = 100_000  # noqa: SLF001 - let the random model run long enough to be cancelled
    token = CancellationToken()
    task = asyncio.ensure_future(client.create([UserMessage(content="go on", source="user")], cancellation_token=token))
    await asyncio.sleep(0.3)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    stats = client.session_stats()
    assert stats is not None and stats.generated_tokens < 5000
    # the backend is free again: a new call completes
    backend.logits_processor = ScriptedCompletions(backend.tokenizer, ["ok<|im_end|>"])
    res = await client.create([UserMessage(content="again", source="user")])
    assert res.content == "ok"


@pytest.mark.asyncio
async def test_call_events_carry_session_stats(backend: TransformersBackend, caplog: pytest.LogCaptureFixture) -> None:
    client = scripted(backend, ["hi<|im_end|>"], session_id="ev")
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        await client.create([UserMessage(content="x", source="user")])
    payloads = [json.loads(r.getMessage()) for r in caplog.records if "MementoCallEvent" in r.getMessage()]
    assert payloads and payloads[-1]["session_id"] == "ev"
    assert payloads[-1]["stats"]["peak_kv_tokens"] > 0


def test_create_blocking_matches_create(backend: TransformersBackend) -> None:
    client = scripted(backend, ["same<|im_end|>"])
    res = client.create_blocking([UserMessage(content="q", source="user")], extra_create_args={"session_id": "b"})
    assert res.content == "same" and client.last_session_id == "b"
    with pytest.raises(ValueError, match="unsupported extra_create_args"):
        client.create_blocking([UserMessage(content="q", source="user")], extra_create_args={"bogus": 1})


@pytest.mark.asyncio
async def test_closing_a_client_leaves_the_other_clients_of_its_backend_alone(backend: TransformersBackend) -> None:
    alice = MementoChatCompletionClient(backend, session_id="alice", max_new_tokens=4)
    bob = MementoChatCompletionClient(backend, session_id="bob", max_new_tokens=4)
    await alice.create([UserMessage(content="hi", source="user")])
    await bob.create([UserMessage(content="hey", source="user")])
    assert {"alice", "bob"} <= set(backend.session_ids())
    await alice.close()
    assert "alice" not in backend.session_ids() and "bob" in backend.session_ids()
    await bob.close()
    assert "bob" not in backend.session_ids()
