"""AgentChat trajectories as agent-block samples: each action/observation turn is a block.

Sources: a :class:`~autogen_agentchat.base.TaskResult` (object or its JSON dump), a saved agent or team state
(``AssistantAgent.save_state()`` / ``team.save_state()``), or a plain list of ``LLMMessage`` s. Each is turned
into the calling agent's own view of the conversation (its model context): its tool-call requests become
``AssistantMessage`` s with :class:`~autogen_core.FunctionCall` content (preceded ``ThoughtEvent`` s become their
``thought``), their executions one ``FunctionExecutionResultMessage``, its text replies ``AssistantMessage`` s and
other agents' or the user's messages ``UserMessage`` s. ``ToolCallSummaryMessage`` s of the agent itself are left
out: AssistantAgent never puts them into its own model context.

A block is an ``AssistantMessage`` with tool calls together with the ``FunctionExecutionResultMessage`` that
answers it (the chat format's rule: a tool pair is never split). Its memento is stored, per the closure protocol
of :mod:`autogen_ext_memento.chat_format`, at the start of the *next* ``AssistantMessage`` 's ``thought`` as
``<|block_end|><|summary_start|>MEMENTO<|summary_end|>``; :func:`~autogen_ext_memento.chat_format.render` moves it
back right after its observation. When a trajectory ends with an observation (e.g. ``max_tool_iterations``
reached without reflection), an ``AssistantMessage`` with empty content carrying only the closure is appended, so
the last block's memento is trained too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import ToolSchema
from pydantic import TypeAdapter

from ..chat_format import build_closure, render_tool_call, split_closure, tool_response
from ..grammar import escape_special
from ._io import read_jsonl

_LLM_MESSAGE: TypeAdapter[LLMMessage] = TypeAdapter(LLMMessage)


@dataclass
class AgentTrajectory:
    """One agent's view of a run: its model-context messages, the tool schemas it had and the task."""

    id: str
    messages: list[LLMMessage]
    tools: list[ToolSchema] = field(default_factory=list)
    agent: str = "assistant"
    problem: str = ""


@dataclass(frozen=True)
class AgentBlock:
    """One action/observation turn: message indices and the text of the calls and of the results."""

    call_index: int
    result_index: int
    thought: str
    call_text: str
    result_text: str

    @property
    def work(self) -> str:
        """The block's text as the memento replaces it: the tool calls and their results."""
        return f"{self.call_text}\n{self.result_text}"


def _chat_messages(data: Sequence[Any]) -> list[Any]:
    from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, MessageFactory

    factory = MessageFactory()
    out: list[Any] = []
    for m in data:
        if isinstance(m, (BaseAgentEvent, BaseChatMessage)):
            out.append(m)
        elif isinstance(m, Mapping):
            try:
                out.append(factory.create(m))
            except (ValueError, KeyError, TypeError):
                continue  # an event type this AgentChat version does not know carries no model-context content
    return out


def messages_from_task_result(task_result: Any, agent: str | None = None) -> dict[str, list[LLMMessage]]:
    """Each tool-using agent's model-context view of a ``TaskResult`` (or its dump / its ``messages`` list).

    Args:
        task_result: a ``TaskResult``, a mapping with a ``messages`` list, or the list itself.
        agent: only this agent's view (default: every agent that made a tool call).
    """
    from autogen_agentchat.messages import (
        BaseChatMessage,
        ThoughtEvent,
        ToolCallExecutionEvent,
        ToolCallRequestEvent,
        ToolCallSummaryMessage,
    )

    raw = task_result
    if isinstance(raw, Mapping):
        raw = raw["messages"]
    elif hasattr(raw, "messages"):
        raw = raw.messages
    msgs = _chat_messages(raw)
    agents = [agent] if agent else list(dict.fromkeys(m.source for m in msgs if isinstance(m, ToolCallRequestEvent)))
    views: dict[str, list[LLMMessage]] = {}
    for name in agents:
        out: list[LLMMessage] = []
        thought: str | None = None
        for m in msgs:
            own = m.source == name
            if isinstance(m, ThoughtEvent):
                if own:
                    thought = m.content
            elif isinstance(m, ToolCallRequestEvent):
                if own:
                    out.append(AssistantMessage(content=list(m.content), thought=thought, source=name))
                    thought = None
            elif isinstance(m, ToolCallExecutionEvent):
                if own:
                    out.append(FunctionExecutionResultMessage(content=list(m.content)))
            elif isinstance(m, BaseChatMessage):
                if own:
                    if isinstance(m, ToolCallSummaryMessage):
                        continue
                    out.append(AssistantMessage(content=m.to_model_text(), thought=thought, source=name))
                    thought = None
                else:
                    out.append(m.to_model_message())
        views[name] = out
    return views


def messages_from_state(state: Mapping[str, Any], name: str = "assistant") -> dict[str, list[LLMMessage]]:
    """Each agent's model-context messages from a saved ``AssistantAgentState`` or ``TeamState`` (as dicts)."""
    views: dict[str, list[LLMMessage]] = {}
    if state.get("type") == "TeamState" or "agent_states" in state:
        for agent_name, sub in state.get("agent_states", {}).items():
            if isinstance(sub, Mapping):
                views.update(messages_from_state(sub, agent_name))
        return views
    if "agent_state" in state and isinstance(state["agent_state"], Mapping):  # ChatAgentContainerState
        return messages_from_state(state["agent_state"], name)
    ctx = state.get("llm_context")
    if isinstance(ctx, Mapping) and isinstance(ctx.get("messages"), list):
        views[name] = [_LLM_MESSAGE.validate_python(m) for m in ctx["messages"]]
    return views


def llm_messages(data: Sequence[Any] | str) -> list[LLMMessage]:
    """Validate a list of ``LLMMessage`` dumps (or objects), or its JSON string (a record's ``messages``)."""
    if isinstance(data, str):
        data = json.loads(data)
    return [_LLM_MESSAGE.validate_python(m) for m in data]


def dump_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    """JSON-ready dumps of ``LLMMessage`` s (read back with :func:`llm_messages`)."""
    return [_LLM_MESSAGE.dump_python(m, mode="json") for m in messages]


def _first_task(messages: Sequence[LLMMessage]) -> str:
    for m in messages:
        if isinstance(m, UserMessage):
            return m.content if isinstance(m.content, str) else " ".join(p for p in m.content if isinstance(p, str))
    return ""


def trajectories_from_record(record: Mapping[str, Any], default_id: str) -> list[AgentTrajectory]:
    """Agent trajectories from one input record.

    A record is a ``TaskResult`` dump (``messages`` of AgentChat messages), a saved agent/team state, or a
    mapping with ``llm_messages``; optional keys: ``id``, ``tools`` (tool schemas), ``system_message``,
    ``problem``, ``task_result``/``state`` (nesting). One trajectory per tool-using agent; ids are
    ``<id>`` for a single agent and ``<id>/<agent>`` otherwise.
    """
    rid = str(record.get("id", default_id))
    tools = list(record.get("tools", []))
    system = record.get("system_message")
    if "llm_messages" in record:
        views = {str(record.get("agent", "assistant")): llm_messages(record["llm_messages"])}
    elif "task_result" in record:
        views = messages_from_task_result(record["task_result"], record.get("agent"))
    elif "state" in record:
        views = messages_from_state(record["state"])
    elif record.get("type") in ("TeamState", "AssistantAgentState") or "llm_context" in record:
        views = messages_from_state(record)
    else:
        views = messages_from_task_result(record, record.get("agent"))
    out: list[AgentTrajectory] = []
    for name, msgs in views.items():
        if not any(isinstance(m, AssistantMessage) and not isinstance(m.content, str) for m in msgs):
            continue
        if system and not (msgs and isinstance(msgs[0], SystemMessage)):
            msgs = [SystemMessage(content=str(system)), *msgs]
        tid = rid if len(views) == 1 else f"{rid}/{name}"
        out.append(AgentTrajectory(tid, msgs, tools, name, str(record.get("problem") or _first_task(msgs))))
    return out


def load_agent_inputs(path: str | Path) -> list[AgentTrajectory]:
    """Trajectories from a ``.json`` file (one record or a list) or a ``.jsonl`` file (one record a line)."""
    p = Path(path)
    if p.suffix == ".jsonl":
        records = read_jsonl(p)
    else:
        data = json.loads(p.read_text("utf-8"))
        records = (
            data
            if isinstance(data, list)
            and data
            and isinstance(data[0], Mapping)
            and ("messages" in data[0] or "task_result" in data[0] or "state" in data[0] or "llm_messages" in data[0])
            else [data]
        )
    out: list[AgentTrajectory] = []
    for n, rec in enumerate(records):
        out.extend(trajectories_from_record(rec, f"{p.stem}-{n}"))
    return out


def agent_blocks(messages: Sequence[LLMMessage]) -> list[AgentBlock]:
    """The action/observation blocks of a message list, in order (a call with no result is not a block)."""
    out: list[AgentBlock] = []
    for i, m in enumerate(messages):
        if not (isinstance(m, AssistantMessage) and not isinstance(m.content, str)):
            continue
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if not isinstance(nxt, FunctionExecutionResultMessage):
            continue
        _, thought = split_closure(m.thought)
        calls = "\n".join(render_tool_call(c.name, c.arguments) for c in m.content)
        results = "\n".join(tool_response(escape_special(r.content)) for r in nxt.content)
        out.append(AgentBlock(i, i + 1, thought or "", calls, results))
    return out


closure_text = build_closure
"""The closure that ends an observation block with its memento (stored at the start of the next thought)."""


def apply_mementos(
    messages: Sequence[LLMMessage], blocks: Sequence[AgentBlock], mementos: Sequence[str]
) -> list[LLMMessage]:
    """A copy of ``messages`` with each block's closure at the start of the next ``AssistantMessage`` 's thought.

    Existing closures are replaced (re-annotation is idempotent). If no assistant message follows a block, an
    empty-content ``AssistantMessage`` carrying the closure is appended.
    """
    if len(blocks) != len(mementos):
        raise ValueError(f"{len(blocks)} blocks but {len(mementos)} mementos")
    out: list[LLMMessage] = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            _, rest = split_closure(m.thought)
            m = m.model_copy(update={"thought": rest})
        out.append(m)
    source = next((m.source for m in out if isinstance(m, AssistantMessage)), "assistant")
    for blk, memento in sorted(zip(blocks, mementos, strict=True), key=lambda x: -x[0].result_index):
        closure = closure_text(memento)
        j = next((k for k in range(blk.result_index + 1, len(out)) if isinstance(out[k], AssistantMessage)), None)
        if j is None:
            out.append(AssistantMessage(content="", thought=closure, source=source))
        else:
            am = out[j]
            assert isinstance(am, AssistantMessage)
            out[j] = am.model_copy(update={"thought": closure + (am.thought or "")})
    return out


def final_answer(messages: Sequence[LLMMessage]) -> str:
    """The last assistant text reply (empty if the trajectory ends with a tool call or observation)."""
    for m in reversed(messages):
        if isinstance(m, AssistantMessage):
            return m.content if isinstance(m.content, str) else ""
        if isinstance(m, FunctionExecutionResultMessage):
            return ""
    return ""
