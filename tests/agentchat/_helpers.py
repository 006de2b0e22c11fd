"""Shared helpers for the AgentChat integration tests: role-order validation and synchronous driving."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from autogen_core.models import AssistantMessage, FunctionExecutionResultMessage, LLMMessage

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (in-memory contexts with a no-LLM writer) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("coroutine suspended; use asyncio")


def validate_role_order(messages: Sequence[LLMMessage]) -> None:
    """Raise ``AssertionError`` where an OpenAI-compatible server would reject the message list with HTTP 400.

    Rules (OpenAI chat completions, also enforced by vLLM's OpenAI server): an assistant message with
    ``tool_calls`` must be followed immediately by one ``tool`` message per call id (AutoGen sends one
    ``FunctionExecutionResultMessage`` holding them all); a ``tool`` message must answer a call of the assistant
    message right before it; call ids are unique per request.
    """
    i = 0
    seen_ids: set[str] = set()
    while i < len(messages):
        m = messages[i]
        if isinstance(m, FunctionExecutionResultMessage):
            raise AssertionError(f"message {i}: tool result not preceded by its assistant tool_calls message")
        if isinstance(m, AssistantMessage) and not isinstance(m.content, str):
            ids = [c.id for c in m.content]
            assert ids, f"message {i}: assistant tool_calls message with no calls"
            assert len(set(ids)) == len(ids), f"message {i}: duplicate call ids"
            assert not (set(ids) & seen_ids), f"message {i}: call id reused"
            seen_ids.update(ids)
            assert i + 1 < len(messages), f"message {i}: tool_calls not followed by tool results"
            nxt = messages[i + 1]
            assert isinstance(nxt, FunctionExecutionResultMessage), f"message {i}: tool_calls followed by {nxt.type}"
            answered = sorted(r.call_id for r in nxt.content)
            assert answered == sorted(ids), f"message {i + 1}: results {answered} do not answer calls {ids}"
            i += 2
            continue
        i += 1
