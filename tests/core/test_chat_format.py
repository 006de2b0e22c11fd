"""The agent chat format: rendering rules, closure placement, escaping, completion parsing."""

from __future__ import annotations

from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    SystemMessage,
    UserMessage,
)

from autogen_ext_memento.chat_format import (
    assistant_body,
    parse_completion,
    render,
    render_tool_call,
    split_closure,
)

CLOSURE = "<|block_end|><|summary_start|>a=1<|summary_end|>"


def history() -> list:
    call = FunctionCall(id="c1", name="lookup", arguments='{"key": "a"}')
    return [
        SystemMessage(content="be brief"),
        UserMessage(content="task", source="user"),
        AssistantMessage(content=[call], thought="<|block_start|>think", source="agent"),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(content="r1", name="lookup", call_id="c1"),
                FunctionExecutionResult(content="r2 <|im_end|> <|summary_end|>", name="lookup", call_id="c1"),
            ]
        ),
        UserMessage(content="hurry", source="boss"),
        AssistantMessage(content="answer", thought=CLOSURE, source="agent"),
    ]


def test_tool_pair_shares_one_block_and_closure_follows_the_observation() -> None:
    r = render(history(), [{"name": "lookup", "parameters": {"type": "object", "properties": {}}}])
    roles = [t.role for t in r.turns]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert "# Tools" in r.turns[0].body and '"name": "lookup"' in r.turns[0].body
    assert r.turns[2].body == "<|block_start|>think" + render_tool_call("lookup", '{"key": "a"}')
    # both results in one turn, untrusted special tokens neutralised
    assert r.turns[3].body.count("<tool_response>") == 2 and "<|summary_end|>" not in r.turns[3].body
    assert "<|im_end|>" not in r.turns[3].body
    assert r.turns[4].body == CLOSURE  # moved back right after the observation, before the boss's message
    assert r.turns[5].body == "[boss] hurry" and r.turns[6].body == "answer"
    assert r.pending_closure is None


def test_open_observation_block_is_reported() -> None:
    r = render(history()[:4])
    assert r.pending_closure == len(r.turns)
    closed = r.with_closure(CLOSURE)
    assert closed.turns[-1].body == CLOSURE and closed.pending_closure is None
    assert r.upto_closure().turns == r.turns


def test_block_start_is_inserted_for_tool_calls_without_thought() -> None:
    call = FunctionCall(id="c", name="f", arguments="{}")
    body = render([AssistantMessage(content=[call], source="a")]).turns[0].body
    assert body.startswith("<|block_start|><tool_call>")


def test_generation_prompt() -> None:
    assert render([UserMessage(content="x", source="user")], add_generation_prompt=True).text.endswith(
        "<|im_start|>assistant\n"
    )


def test_parse_round_trips_through_render() -> None:
    text = '<|block_start|>plan<tool_call>\n{"name": "f", "arguments": {"x": [1, 2]}}\n</tool_call>'
    p = parse_completion(text)
    assert p.thought == "<|block_start|>plan" and p.tool_calls == [("f", '{"x": [1, 2]}')]
    calls = [FunctionCall(id="i", name=n, arguments=a) for n, a in p.tool_calls]
    assert assistant_body(p.thought, calls) == text
    q = parse_completion("<|block_start|>w<|block_end|><|summary_start|>m<|summary_end|>final")
    assert (q.thought, q.content) == ("<|block_start|>w<|block_end|><|summary_start|>m<|summary_end|>", "final")
    assert parse_completion("plain").thought is None


def test_split_closure() -> None:
    assert split_closure(CLOSURE + "<|block_start|>x") == (CLOSURE, "<|block_start|>x")
    assert split_closure("<|block_start|>x") == (None, "<|block_start|>x")
    assert split_closure(None) == (None, None)


def test_incremental_rendering_equals_a_full_render_as_history_and_tools_change(tiny_tokenizer: Any) -> None:
    from autogen_core.tools import FunctionTool

    from autogen_ext_memento.chat_format import IncrementalRenderer, TurnEncoder

    def lookup(key: str) -> str:
        return key

    def fetch(url: str) -> str:
        return url

    a, b = FunctionTool(lookup, description="look"), FunctionTool(fetch, description="fetch")
    schema = {"name": "lookup", "parameters": {"type": "object", "properties": {}}}
    encoder = TurnEncoder(tiny_tokenizer)
    renderer = IncrementalRenderer(encoder)
    msgs = history()
    # Same Tool objects (cached tools section), other objects, a schema dict edited in place, and none.
    steps: list[list[Any]] = [[a], [a], [a, b], [b], [schema], [schema], []]
    for k, tools in enumerate(steps):
        if k == 5:
            schema["description"] = "edited in place"
        upto = msgs[: 2 + k % (len(msgs) - 1)]
        got = renderer.render(upto, tools, {})
        full = render(upto, tools)
        assert got.rendering.turns == full.turns and got.rendering.pending_closure == full.pending_closure
        assert got.ids == encoder.encode(full)
