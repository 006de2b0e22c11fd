"""OpenAI chat messages ↔ AutoGen messages, so the chat route renders through ``autogen_ext_memento.chat_format``.

A stateless OpenAI client (AutoGen's ``OpenAIChatCompletionClient``, the ``openai`` SDK, ...) sends the whole
conversation each turn as OpenAI message dicts. The server turns them back into the AutoGen messages the memento
client would have seen, so one renderer (``chat_format``) produces the tokens for both paths:

* ``system``/``developer`` → :class:`SystemMessage`; ``user`` → :class:`UserMessage` (``name`` is the source);
* ``assistant`` with ``tool_calls`` → :class:`AssistantMessage` of :class:`FunctionCall` s, its ``content`` as the
  ``thought`` (that is where AutoGen's OpenAI client keeps and re-sends text that came with tool calls, and so
  where the server returns the closure of the previous observation block);
* ``assistant`` text → :class:`AssistantMessage` (``reasoning_content``, when a client re-sends it, is the
  ``thought``);
* a run of ``tool`` messages → one :class:`FunctionExecutionResultMessage` (one observation block).

Errors are one-line ``ValueError`` s naming the message index.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import ToolSchema

__all__ = ["completion_body", "to_llm_messages", "to_tool_schemas"]


def _text(content: Any, where: str) -> str:
    """The text of an OpenAI ``content`` (a string, ``None`` or a list of ``{"type": "text"}`` parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(f"{where}: only text content parts are supported, got {kind!r}")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ValueError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")


def _function_call(call: Any, where: str) -> FunctionCall:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        raise ValueError(f"{where}: a tool call needs a 'function' object")
    fn = call["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a tool call needs a function name")
    args = fn.get("arguments", "")
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return FunctionCall(id=str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"), name=name, arguments=args)


def to_llm_messages(messages: Sequence[Mapping[str, Any]]) -> list[LLMMessage]:
    """AutoGen messages for a list of OpenAI chat message dicts (see the module docstring)."""
    out: list[LLMMessage] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the results that answer it
    results: list[FunctionExecutionResult] = []

    def flush() -> None:
        if results:
            out.append(FunctionExecutionResultMessage(content=list(results)))
            results.clear()

    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role == "tool":
            call_id = str(msg.get("tool_call_id") or "")
            name = names.get(call_id, str(msg.get("name") or "tool"))
            results.append(
                FunctionExecutionResult(content=_text(msg.get("content"), where), name=name, call_id=call_id)
            )
            continue
        flush()
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_text(msg.get("content"), where)))
        elif role == "user":
            out.append(UserMessage(content=_text(msg.get("content"), where), source=str(msg.get("name") or "user")))
        elif role == "assistant":
            source = str(msg.get("name") or "assistant")
            calls = msg.get("tool_calls") or []
            text = _text(msg.get("content"), where)
            if calls:
                fcs = [_function_call(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(calls)]
                names.update({c.id: c.name for c in fcs})
                out.append(AssistantMessage(content=fcs, thought=text or None, source=source))
            else:
                reasoning = msg.get("reasoning_content") or msg.get("reasoning")
                thought = reasoning if isinstance(reasoning, str) and reasoning else None
                out.append(AssistantMessage(content=text, thought=thought, source=source))
        else:
            raise ValueError(f"{where}: unsupported role {role!r} (system, developer, user, assistant, tool)")
    flush()
    return out


def to_tool_schemas(tools: Sequence[Any] | None) -> list[ToolSchema]:
    """AutoGen tool schemas for OpenAI ``tools`` (dicts or pydantic models of ``{"type": "function", ...}``)."""
    schemas: list[ToolSchema] = []
    for i, tool in enumerate(tools or ()):
        data = tool.model_dump(exclude_none=True) if hasattr(tool, "model_dump") else tool
        fn = data.get("function") if isinstance(data, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ...}}}}")
        schema: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            schema["description"] = fn["description"]
        if fn.get("parameters") is not None:
            schema["parameters"] = fn["parameters"]
        schemas.append(schema)  # type: ignore[arg-type]
    return schemas


_FINISH = {"function_calls": "tool_calls", "stop": "stop", "length": "length"}


def completion_body(result: CreateResult, model: str, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object for a :class:`CreateResult` of the memento client.

    With tool calls the result's ``thought`` (the closure of the previous observation block, then any text before
    the calls) is the message ``content``, where AutoGen's OpenAI client keeps it and sends it back; a text answer
    carries the thought as ``reasoning_content`` instead, so the answer a user reads is only the answer.
    """
    message: dict[str, Any] = {"role": "assistant"}
    if isinstance(result.content, str):
        message["content"] = result.content
        if result.thought:
            message["reasoning_content"] = result.thought
    else:
        message["content"] = result.thought
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.content
        ]
    usage = result.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _FINISH.get(result.finish_reason, "stop")}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
        **(dict(extra) if extra else {}),
    }
