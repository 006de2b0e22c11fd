"""Scripted offline clients for the pipeline tests (answer by prompt content, count calls, inject faults)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage
from autogen_core.tools import Tool, ToolSchema

from autogen_ext_memento.pipeline import HeuristicChatCompletionClient


def kind_of(system: str, user: str) -> str:
    if "BOUNDARY-SCORER" in system:
        return "score"
    if "JUDGE" in system:
        return "judge"
    return "rewrite" if "The judge scored it" in user else "compress"


class ScriptedClient(HeuristicChatCompletionClient):
    """The heuristic client with per-kind overrides, call recording, an optional delay and fault injection.

    ``handlers[kind](system, user)`` returns the answer text or an exception to raise; kinds without a handler
    get the heuristic answer.
    """

    def __init__(
        self,
        handlers: Mapping[str, Callable[[str, str], str | BaseException]] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.handlers = dict(handlers or {})
        self.delay = delay
        self.calls: list[tuple[str, str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        system = "\n".join(m.content for m in messages if isinstance(m, SystemMessage))
        user = "\n".join(m.content for m in messages if isinstance(m, UserMessage) and isinstance(m.content, str))
        kind = kind_of(system, user)
        self.calls.append((kind, system, user))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            h = self.handlers.get(kind)
            if h is not None:
                out = h(system, user)
                if isinstance(out, BaseException):
                    raise out
                text = out
            else:
                text = self.answer(system, user)
        finally:
            self.in_flight -= 1
        from autogen_core.models import RequestUsage

        return CreateResult(
            finish_reason="stop",
            content=text,
            usage=RequestUsage(prompt_tokens=len(user.split()), completion_tokens=len(text.split())),
            cached=False,
        )

    def count(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.calls if k == kind)
