"""AgentChat trajectories → agent-block samples: conversion, closure placement, rendering, training collator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    UserMessage,
)

from autogen_ext_memento.chat_format import CLOSURE_PREFIX, TurnEncoder, render, split_closure
from autogen_ext_memento.grammar import (
    SUMMARY_END,
    BlockTracker,
    EventKind,
    MementoConfig,
    MementoTokenIds,
    parse_trace,
)
from autogen_ext_memento.pipeline import (
    SAMPLE_AGENTCHAT,
    AgentTrajectory,
    AnnotationPipeline,
    HeuristicChatCompletionClient,
    PipelineConfig,
    agent_blocks,
    apply_mementos,
    dump_messages,
    llm_messages,
    load_agent_inputs,
    messages_from_state,
    messages_from_task_result,
    record_sample_agentchat_run,
    trajectories_from_record,
)
from autogen_ext_memento.pipeline._samples import sample_path


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    import asyncio

    return asyncio.run(record_sample_agentchat_run())


def test_recorded_run_has_real_tool_results_and_matches_the_bundled_file(recorded: dict[str, Any]) -> None:
    views = messages_from_task_result(recorded["task_result"])
    msgs = views["assistant"]
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == ["UserMessage"] + ["AssistantMessage", "FunctionExecutionResultMessage"] * 3 + ["AssistantMessage"]
    first_results = msgs[2]
    assert isinstance(first_results, FunctionExecutionResultMessage)
    assert [r.content for r in first_results.content] == ["18.0 mi = 28.9682 km", "70.0 min = 1.16667 h"]
    # The saved agent state gives the same model context as the TaskResult.
    assert dump_messages(messages_from_state(recorded["state"])["assistant"]) == dump_messages(msgs)
    bundled = json.loads(sample_path(SAMPLE_AGENTCHAT).read_text("utf-8"))
    assert dump_messages(messages_from_task_result(bundled["task_result"])["assistant"]) == dump_messages(msgs)


def test_team_state_and_other_agents_become_user_messages(recorded: dict[str, Any]) -> None:
    team = {
        "type": "TeamState",
        "agent_states": {
            "assistant": {"type": "ChatAgentContainerState", "agent_state": recorded["state"], "message_buffer": []},
            "RoundRobinGroupChatManager": {"type": "RoundRobinManagerState", "message_thread": []},
        },
    }
    trajs = trajectories_from_record({"id": "t", "state": team, "tools": recorded["tools"]}, "x")
    assert [t.id for t in trajs] == ["t"] and len(agent_blocks(trajs[0].messages)) == 3
    # A second agent speaking in a TaskResult is a UserMessage with its name in this agent's view.
    extra = {
        "type": "TextMessage",
        "source": "critic",
        "content": "Please double-check the units.",
        "id": "m1",
        "created_at": recorded["task_result"]["messages"][0]["created_at"],
        "models_usage": None,
        "metadata": {},
    }
    msgs = [recorded["task_result"]["messages"][0], extra, *recorded["task_result"]["messages"][1:]]
    view = messages_from_task_result({"messages": msgs}, "assistant")["assistant"]
    assert isinstance(view[1], UserMessage) and view[1].source == "critic"


def test_apply_mementos_puts_closures_at_the_next_thought_and_handles_a_trailing_observation() -> None:
    call = AssistantMessage(content=[FunctionCall(id="c1", name="f", arguments="{}")], thought="why", source="a")
    res = FunctionExecutionResultMessage(content=[FunctionExecutionResult(content="42", name="f", call_id="c1")])
    msgs: list[LLMMessage] = [
        UserMessage(content="task", source="user"),
        call,
        res,
        call.model_copy(),
        res.model_copy(),
    ]
    blocks = agent_blocks(msgs)
    assert [(b.call_index, b.result_index) for b in blocks] == [(1, 2), (3, 4)]
    out = apply_mementos(msgs, blocks, ["f() -> 42", "again 42"])
    assert isinstance(out[3], AssistantMessage) and out[3].thought == f"{CLOSURE_PREFIX}f() -> 42{SUMMARY_END}why"
    last = out[-1]
    assert (
        isinstance(last, AssistantMessage)
        and last.content == ""
        and last.thought == f"{CLOSURE_PREFIX}again 42{SUMMARY_END}"
    )
    # Idempotent: re-applying replaces the closures instead of stacking them.
    again = apply_mementos(out[:-1], agent_blocks(out[:-1]), ["new 1", "new 2"])
    assert (
        isinstance(again[3], AssistantMessage)
        and split_closure(again[3].thought)[0] == f"{CLOSURE_PREFIX}new 1{SUMMARY_END}"
    )
    assert len(again) == len(out)


@pytest.mark.asyncio
async def test_agent_record_renders_blocks_and_loads_in_the_training_collator(tiny_tokenizer: Any) -> None:
    trajs = load_agent_inputs(sample_path(SAMPLE_AGENTCHAT))
    assert [t.id for t in trajs] == ["agentchat-cyclist"]
    pipe = AnnotationPipeline(HeuristicChatCompletionClient(), PipelineConfig(backoff_base=0))
    rec = await pipe.annotate_agent(trajs[0])
    assert rec["blocks"] == [[0, 1], [2, 3], [4, 5]] and len(rec["block_summaries"]) == 3
    assert all(s.startswith("<tool_call>") for s in rec["sentences"][0::2])
    assert all(s.startswith("<tool_response>") for s in rec["sentences"][1::2])
    assert "unit_convert" in rec["block_summaries"][0] and "28.9682" in rec["block_summaries"][0]
    # response: the grammar's trace shape, one block per action/observation turn, then the final answer.
    blocks, tail = parse_trace(rec["response"])
    assert [b.memento for b in blocks] == rec["block_summaries"]
    assert tail.startswith("The average speed is about 24.33 km/h")
    # messages: closures at the start of the next assistant thought; render moves them after each observation.
    msgs = llm_messages(rec["messages"])
    rendering = render(msgs, json.loads(rec["tools"]))
    assert rendering.text == rec["text"]
    closures = [i for i, t in enumerate(rendering.turns) if t.body.startswith(CLOSURE_PREFIX)]
    assert len(closures) == 3
    assert all("<tool_response>" in rendering.turns[i - 1].body for i in closures)
    # Tokenized, the tracker sees three blocks each closed by its memento: three evictions.
    ids = TurnEncoder(tiny_tokenizer).encode(rendering)
    tracker = BlockTracker(MementoTokenIds.from_tokenizer(tiny_tokenizer), MementoConfig())
    done = [e for e in tracker.feed_many(ids) if e.kind is EventKind.MEMENTO_COMPLETED]
    assert len(done) == 3 and all(e.evict for e in done) and not tracker.anomalies
    training = pytest.importorskip("autogen_ext_memento.training")
    # The tools travel in the record and training's row_to_sample renders them from there.
    sample = training.row_to_sample(rec, tiny_tokenizer)
    assert sample.input_ids == ids
    batch = training.MementoCollator(MementoTokenIds.from_tokenizer(tiny_tokenizer))([sample.as_dict()])
    mask = batch[training.MASK_KEY][0, 0]
    assert mask.shape == (len(ids), len(ids))
    assert (mask < 0).any()  # stage 2 hides evicted blocks from later tokens


def test_trajectory_without_tool_calls_is_skipped() -> None:
    rec = {
        "llm_messages": dump_messages(
            [UserMessage(content="hi", source="user"), AssistantMessage(content="hello", source="a")]
        )
    }
    assert trajectories_from_record(rec, "x") == []
    assert isinstance(AgentTrajectory("i", []).messages, list)
