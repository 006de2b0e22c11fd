"""Calling the pipeline's LLM: bounded concurrency, retries with exponential backoff, parsing, usage and cost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ParseError(ValueError):
    """The LLM's answer did not have the required shape; the message says what was wrong (fed back on retry)."""


class LLMCallError(RuntimeError):
    """Every attempt of one LLM request failed (transport errors or unparseable answers)."""


class Pricing(BaseModel):
    """Prices in currency units per million tokens, for the cost estimate."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_million: float = Field(default=0.0, ge=0)
    completion_per_million: float = Field(default=0.0, ge=0)


@dataclass
class UsageStats:
    """Token and call accounting, per purpose (``score``, ``compress``, ``judge``, ``rewrite``) and in total."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    parse_failures: int = 0
    errors: int = 0
    by_purpose: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, purpose: str, prompt: int, completion: int) -> None:
        self.calls += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        p = self.by_purpose.setdefault(purpose, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        p["calls"] += 1
        p["prompt_tokens"] += prompt
        p["completion_tokens"] += completion

    def cost(self, pricing: Pricing) -> float:
        return (
            self.prompt_tokens * pricing.prompt_per_million + self.completion_tokens * pricing.completion_per_million
        ) / 1e6

    def as_dict(self, pricing: Pricing | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "parse_failures": self.parse_failures,
            "errors": self.errors,
            "by_purpose": {k: dict(v) for k, v in self.by_purpose.items()},
        }
        if pricing is not None:
            out["cost"] = round(self.cost(pricing), 6)
        return out


class LLMRunner:
    """Sends pipeline prompts to any AutoGen :class:`ChatCompletionClient`.

    At most ``concurrency`` requests are in flight. A request is retried (up to ``max_retries`` more times) when
    the client raises or the answer does not parse; the wait before attempt ``a`` is ``backoff_base · 2^(a-1)``
    seconds (capped at ``backoff_max``, with ±25% jitter so parallel retries do not stampede). After a parse
    failure the retry prompt says what was wrong. ``asyncio.CancelledError`` and ``KeyboardInterrupt`` are never
    swallowed, so an interrupted run stops at once.
    """

    def __init__(
        self,
        client: ChatCompletionClient,
        *,
        concurrency: int = 8,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        usage: UsageStats | None = None,
        seed: int | None = 0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.client = client
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.usage = usage if usage is not None else UsageStats()
        self._sem = asyncio.Semaphore(concurrency)
        self._rng = random.Random(seed)
        self.in_flight = 0
        self.max_in_flight = 0

    def _delay(self, attempt: int) -> float:
        if self.backoff_base <= 0:
            return 0.0
        d = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return float(d * (0.75 + 0.5 * self._rng.random()))

    async def ask(
        self, system: str, user: str, parse: Callable[[str], T], *, purpose: str, also: UsageStats | None = None
    ) -> T:
        """Ask once (with retries) and return the parsed answer; raise :class:`LLMCallError` if all attempts fail.

        Usage goes to the runner's :class:`UsageStats` and, if given, to ``also`` (e.g. one sample's own stats).
        """
        last: str = ""
        note = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.usage.retries += 1
                await asyncio.sleep(self._delay(attempt))
            messages: list[LLMMessage] = [
                SystemMessage(content=system),
                UserMessage(content=user + note, source="user"),
            ]
            try:
                async with self._sem:
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                    try:
                        result = await self.client.create(messages)
                    finally:
                        self.in_flight -= 1
            except Exception as e:  # transport / server errors: back off and retry
                self.usage.errors += 1
                last = f"{type(e).__name__}: {e}"
                continue
            self.usage.add(purpose, result.usage.prompt_tokens, result.usage.completion_tokens)
            if also is not None:
                also.add(purpose, result.usage.prompt_tokens, result.usage.completion_tokens)
            text = result.content if isinstance(result.content, str) else ""
            try:
                return parse(text)
            except ParseError as e:
                self.usage.parse_failures += 1
                last = f"unparseable answer: {e}"
                note = (
                    f"\n\nYour previous answer could not be used ({e}). Answer again, exactly in the required format."
                )
        raise LLMCallError(f"{purpose}: {self.max_retries + 1} attempts failed; last: {last}")
