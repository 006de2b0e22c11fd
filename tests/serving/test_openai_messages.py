"""OpenAI chat messages → AutoGen messages for the memento chat route, and the implicit-session index (no vLLM)."""

from __future__ import annotations

import json

import pytest
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_memento_vllm.conversations import ConversationIndex, turn_digests
from autogen_memento_vllm.openai_messages import completion_body, to_llm_messages, to_tool_schemas

from autogen_ext_memento.chat_format import build_closure, render

CLOSURE = build_closure("alpha 1")


def _conversation() -> list[dict[str, object]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"cursor": 0}'}}
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "track "}, {"type": "text", "text": "alpha"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "alpha 1"},
        {"role": "assistant", "content": CLOSURE, "tool_calls": [{**call, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "end"},
    ]


def test_openai_messages_become_the_autogen_messages_the_memento_client_sees() -> None:
    msgs = to_llm_messages(_conversation())
    assert [type(m) for m in msgs] == [
        SystemMessage,
        UserMessage,
        AssistantMessage,
        FunctionExecutionResultMessage,
        AssistantMessage,
        FunctionExecutionResultMessage,
    ]
    assert msgs[1].content == "track alpha" and msgs[1].source == "user"
    first, second = msgs[2], msgs[4]
    assert isinstance(first, AssistantMessage) and first.thought is None
    assert first.content == [FunctionCall(id="call_1", name="read", arguments='{"cursor": 0}')]
    assert isinstance(second, AssistantMessage) and second.thought == CLOSURE  # the closure rides in content
    result = msgs[3]
    assert isinstance(result, FunctionExecutionResultMessage)
    assert result.content[0].name == "read" and result.content[0].call_id == "call_1"
    # The closure renders as its own turn right after the observation it ends.
    turns = render(msgs).turns
    assert [t.role for t in turns] == ["system", "user", "assistant", "user", "assistant", "assistant", "user"]
    assert turns[4].body == CLOSURE


def test_consecutive_tool_messages_are_one_observation_block() -> None:
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": f"t{i}", "arguments": "{}"}} for i in range(2)]
    msgs = to_llm_messages(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c0", "content": "a"},
            {"role": "tool", "tool_call_id": "c1", "content": "b"},
        ]
    )
    block = msgs[-1]
    assert isinstance(block, FunctionExecutionResultMessage)
    assert [(r.name, r.content) for r in block.content] == [("t0", "a"), ("t1", "b")]


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([{"role": "wizard", "content": "x"}], "messages[0]: unsupported role 'wizard'"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0]: only text content parts"),
        ([{"role": "assistant", "tool_calls": [{"id": "c"}]}], "messages[0].tool_calls[0]: a tool call needs"),
        (["hello"], "messages[0]: expected an object"),
        ([{"role": "user", "content": 3}], "messages[0]: content must be a string"),
    ],
)
def test_bad_messages_get_one_line_naming_the_message(messages: list[object], needle: str) -> None:
    with pytest.raises(ValueError) as err:
        to_llm_messages(messages)  # type: ignore[arg-type]
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_tools_keep_the_schema_the_memento_client_renders() -> None:
    params = {"type": "object", "properties": {"cursor": {"type": "integer"}}, "required": ["cursor"]}
    tools = [{"type": "function", "function": {"name": "read", "description": "read a page", "parameters": params}}]
    assert to_tool_schemas(tools) == [{"name": "read", "description": "read a page", "parameters": params}]
    with pytest.raises(ValueError, match=r"tools\[0\]"):
        to_tool_schemas([{"type": "function"}])


def test_completion_body_puts_the_closure_where_autogen_keeps_it() -> None:
    usage = RequestUsage(prompt_tokens=7, completion_tokens=3)
    calls = [FunctionCall(id="call_9", name="read", arguments='{"cursor": 1}')]
    with_calls = CreateResult(finish_reason="function_calls", content=calls, usage=usage, cached=False, thought=CLOSURE)
    body = completion_body(with_calls, "m")
    msg = body["choices"][0]["message"]
    assert msg["content"] == CLOSURE and body["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["tool_calls"][0]["function"] == {"name": "read", "arguments": '{"cursor": 1}'}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    text = CreateResult(finish_reason="stop", content="answer: a 1", usage=usage, cached=False, thought=CLOSURE)
    msg = completion_body(text, "m")["choices"][0]["message"]
    assert msg["content"] == "answer: a 1" and msg["reasoning_content"] == CLOSURE
    json.dumps(body)  # serialisable as is


def test_conversation_index_finds_the_longest_prefix_and_isolates_tenants() -> None:
    msgs = to_llm_messages(_conversation())
    turns = render(msgs).turns
    index = ConversationIndex(capacity=4)
    index.remember_session(turns[:3], None, "s-short")
    index.remember_session(turns[:5], None, "s-long")
    assert index.session_for(turns, None) == "s-long"
    assert index.session_for(turns[:4], None) == "s-short"
    assert index.session_for(turns, "tenant-b") is None  # another salt never sees the entry
    assert index.session_for(turns[:2], None) is None
    index.remember_closure(turns[:4], None, CLOSURE)
    assert index.closure_for(turns[:4], None) == CLOSURE and index.closure_for(turns[:4], "x") is None
    for k in range(6):  # bounded: the oldest entries go first
        index.remember_session(turns[: k + 1], "other", f"o{k}")
    assert index.session_for(turns[:5], None) is None and len(index) == 4
    assert turn_digests(turns, None) != turn_digests(turns, "x")
    with pytest.raises(ValueError, match="capacity"):
        ConversationIndex(capacity=0)


def test_turns_after_an_answer_equal_rendering_the_history_with_it() -> None:
    from autogen_memento_vllm.conversations import turns_after

    msgs = to_llm_messages(_conversation())  # ends with an observation waiting for its closure
    call = FunctionCall(id="call_3", name="read", arguments='{"cursor": 2}')
    answers = [
        AssistantMessage(content=[call], thought=CLOSURE, source="assistant"),  # closure, then a tool call
        AssistantMessage(content="answer: alpha 1", thought=CLOSURE + "<|block_start|>x", source="assistant"),
        AssistantMessage(content="answer", thought=None, source="assistant"),  # no closure written
    ]
    for history in (msgs, msgs[:2]):  # with and without a pending observation
        for done in answers:
            expected = render([*history, done]).turns
            assert turns_after(render(history), done.thought, done.content) == expected
