"""A deterministic, offline ``ChatCompletionClient`` answering the pipeline's bundled prompts with the heuristic roles.

It lets ``autogen-memento annotate`` run on the bundled samples with no model and gives tests a realistic stand-in
for a chat model behind :class:`~autogen_ext_memento.pipeline.LLMRoles`. It is the one place that reads a prompt
back: it tells the role by the persona line of the bundled system prompt, reads the blocks and units out of the
user prompt, and answers in the format the prompt asks for. To annotate by rules without prompts, give the
pipeline :class:`~autogen_ext_memento.pipeline.HeuristicRoles` instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, Component
from autogen_core.models import (
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from typing_extensions import Self

from .._local_client import LocalChatCompletionClient
from ._heuristic_rules import HeuristicClientConfig, HeuristicRoles, judge_memento
from ._split import regex_token_count

_REWRITE_MARK = "with this feedback:"


def _prompt_blocks(user: str) -> dict[int, str]:
    return {
        int(m.group(1)): m.group(2).strip() for m in re.finditer(r"BEGIN BLOCK (\d+)\n(.*?)\nEND BLOCK \1", user, re.S)
    }


def _section(user: str, name: str) -> str:
    m = re.search(rf"BEGIN {name}\n(.*?)\nEND {name}", user, re.S)
    return m.group(1) if m else ""


class HeuristicChatCompletionClient(LocalChatCompletionClient, Component[HeuristicClientConfig]):
    """A deterministic rule-based client for the annotation pipeline's prompts (offline runs and tests).

    Args:
        budget: first-draft memento size as a fraction of the block's tokens.
        rewrite_budget: memento size allowed when rewriting with judge feedback.
        min_memento_tokens: floor on the memento budget for short blocks.
    """

    component_type = "model"
    component_config_schema = HeuristicClientConfig
    component_provider_override = "autogen_ext_memento.pipeline.HeuristicChatCompletionClient"

    def __init__(self, budget: float = 0.15, rewrite_budget: float = 0.15, min_memento_tokens: int = 12) -> None:
        self._config = HeuristicClientConfig(
            budget=budget, rewrite_budget=rewrite_budget, min_memento_tokens=min_memento_tokens
        )
        self._roles = HeuristicRoles(self._config)
        super().__init__(
            ModelInfo(
                vision=False,
                function_calling=False,
                json_output=False,
                family=ModelFamily.UNKNOWN,
                structured_output=False,
            )
        )

    # --- rules -------------------------------------------------------------------------------------------------
    def answer(self, system: str, user: str) -> str:
        """The rule-based answer to one of the pipeline's bundled prompts."""
        if "BOUNDARY-SCORER" in system:
            units = {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\[(\d+)\] (.*)$", user, re.M)}
            wanted = [int(x) for x in re.findall(r"B(\d+)", user.rsplit("Score these boundaries:", 1)[-1])]
            scores = self._roles.scores(units, wanted)
            return "\n".join(f"B{i}: {scores[i]:g}" for i in wanted)
        if "JUDGE" in system:
            verdict = judge_memento(_section(user, "BLOCK"), _section(user, "MEMENTO"))
            return f"SCORE: {verdict.score:g}/10\nFEEDBACK: {verdict.feedback}"
        if "STATE-COMPRESSOR" in system:
            blocks = _prompt_blocks(user)
            if _REWRITE_MARK in user:
                i, block = next(iter(blocks.items()))
                return f"Summary {i}: {self._roles.rewritten(block, user.split(_REWRITE_MARK, 1)[-1])}"
            return "\n".join(f"Summary {i}: {m}" for i, m in self._roles.mementos(blocks).items())
        return "I can only answer the memento pipeline's prompts."

    # --- ChatCompletionClient ----------------------------------------------------------------------------------
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        system = "\n".join(m.content for m in messages if isinstance(m, SystemMessage))
        user = "\n".join(
            m.content if isinstance(m.content, str) else " ".join(p for p in m.content if isinstance(p, str))
            for m in messages
            if isinstance(m, UserMessage)
        )
        text = self.answer(system, user)
        usage = RequestUsage(prompt_tokens=self.count_tokens(messages), completion_tokens=regex_token_count(text))
        self._account(usage)
        return CreateResult(finish_reason="stop", content=text, usage=usage, cached=False)

    async def create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream one :meth:`create` (called with the same arguments): its text, then the result."""
        result = await self.create(messages, **kwargs)
        if isinstance(result.content, str):
            yield result.content
        yield result

    async def close(self) -> None:
        pass

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        n = 0
        for m in messages:
            c = getattr(m, "content", "")
            n += regex_token_count(c if isinstance(c, str) else str(c)) + 4
        return n

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return max(0, 1_000_000 - self.count_tokens(messages))

    def _to_config(self) -> HeuristicClientConfig:
        return self._config.model_copy()

    @classmethod
    def _from_config(cls, config: HeuristicClientConfig) -> Self:
        return cls(**config.model_dump())
