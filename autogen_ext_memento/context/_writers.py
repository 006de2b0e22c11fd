"""Memento writers: who turns a closed block into its memento at text level.

Three writers, from free to expensive:

* :class:`ObservationMaskingWriter` (no LLM): keeps each action (tool name and arguments) and replaces the
  observation with its status, size and a short preview; the strong cheap baseline.
* :class:`ClosureMementoWriter`: a memento-trained model behind
  :class:`~autogen_ext_memento.MementoChatCompletionClient` writes its own mementos (KV level); they reach the
  context in the closure at the start of the next ``AssistantMessage.thought``, and block formation attaches them
  to their block. This writer is only asked for blocks the model wrote no memento for, and masks those.
* :class:`LLMMementoWriter`: any :class:`~autogen_core.models.ChatCompletionClient` with a state-compression prompt
  and an optional judge loop; it falls back to masking on any error or empty answer, so compaction never stalls.

A writer is called at most once per block: the context caches the memento on the block (and, in the wrapping
client, by block content hash).
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod

from autogen_core import CancellationToken, Component, ComponentBase, ComponentModel
from autogen_core.models import (
    ChatCompletionClient,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel, Field
from typing_extensions import Self

from .._checks import build_config, require_type
from ..grammar import escape_special
from ._blocks import Block, function_calls, message_text

logger = logging.getLogger(__name__)

COMPRESSION_PROMPT = """You compress one block of an AI agent's work into a memento: a terse state record that \
replaces the block in the agent's context. The block itself is archived and can be recalled by id.
Rules:
- Start with the result: what was found, decided or produced.
- Keep every definition, value, number, identifier, name, path and decision exactly as written.
- Keep each tool call with its inputs and the essential part of its output; keep errors.
- Add no fact, guess or advice that is not in the block. No preamble, no markdown headings.
- At most {max_words} words."""

JUDGE_PROMPT = """You check a memento against the block it compresses.
Answer FAIL if the memento states any fact that is not in the block, or drops a value, identifier, decision \
or tool result that later work may need; otherwise answer PASS.
Reply with PASS, or with FAIL: followed by what is wrong, on one line."""


def _squash(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def mask_block(block: Block, preview_chars: int = 80, message_chars: int = 120) -> str:
    """The observation-masking memento of a block: actions kept, observations reduced to status and preview."""
    if block.kind in ("tool", "unanswered"):
        results = {}
        for m in block.messages[1:]:
            if isinstance(m, FunctionExecutionResultMessage):
                results.update({r.call_id: r for r in m.content})
        parts: list[str] = []
        for call in function_calls(block.messages[0]):
            head = f"{call.name}({_squash(call.arguments, 200)})"
            res = results.get(call.id)
            if res is None:
                parts.append(f"{head} -> no result")
                continue
            status = "error" if res.is_error else "ok"
            preview = _squash(res.content, preview_chars)
            parts.append(f"{head} -> {status}, {len(res.content)} chars" + (f": {preview}" if preview else ""))
        text = "called " + "; ".join(parts) if parts else "empty tool call"
    elif block.kind == "orphan_result":
        text = "tool result without its call: " + _squash(message_text(block.messages[0]), preview_chars)
    elif block.kind == "answer":
        text = "answered: " + _squash(message_text(block.messages[0]), message_chars)
    elif block.kind == "system":
        text = "system note: " + _squash(message_text(block.messages[0]), message_chars)
    else:
        text = f"{block.agent} said: " + _squash(message_text(block.messages[0]), message_chars)
    return escape_special(text)


class MementoWriter(ABC, ComponentBase[BaseModel]):
    """Writes the memento of a closed block (text level)."""

    component_type = "memento_writer"

    @property
    def uses_llm(self) -> bool:
        """Whether :meth:`write` calls a model (the context then writes mementos only when compaction needs them)."""
        return False

    @property
    def waits_for_model(self) -> bool:
        """Whether the newest observation block is left whole until the model's own memento arrives."""
        return False

    @abstractmethod
    async def write(self, block: Block, cancellation_token: CancellationToken | None = None) -> str:
        """The memento of ``block``; must not raise for a well-formed block."""


class ObservationMaskingWriterConfig(BaseModel):
    """Configuration of :class:`ObservationMaskingWriter`."""

    preview_chars: int = Field(default=80, ge=0)
    message_chars: int = Field(default=120, ge=0)


class ObservationMaskingWriter(MementoWriter, Component[ObservationMaskingWriterConfig]):
    """A memento writer with no LLM: keeps actions, masks observations (status, size and a short preview).

    Args:
        preview_chars: characters of each tool result kept in the memento.
        message_chars: characters kept of a plain message or answer.
    """

    component_config_schema = ObservationMaskingWriterConfig
    component_provider_override = "autogen_ext_memento.context.ObservationMaskingWriter"

    def __init__(self, preview_chars: int = 80, message_chars: int = 120) -> None:
        config = build_config(
            ObservationMaskingWriterConfig,
            "ObservationMaskingWriter",
            preview_chars=preview_chars,
            message_chars=message_chars,
        )
        self._preview = config.preview_chars
        self._message = config.message_chars

    async def write(self, block: Block, cancellation_token: CancellationToken | None = None) -> str:
        return mask_block(block, self._preview, self._message)

    def _to_config(self) -> ObservationMaskingWriterConfig:
        return ObservationMaskingWriterConfig(preview_chars=self._preview, message_chars=self._message)

    @classmethod
    def _from_config(cls, config: ObservationMaskingWriterConfig) -> Self:
        return cls(config.preview_chars, config.message_chars)


class ClosureMementoWriterConfig(BaseModel):
    """Configuration of :class:`ClosureMementoWriter`."""

    preview_chars: int = Field(default=80, ge=0)


class ClosureMementoWriter(MementoWriter, Component[ClosureMementoWriterConfig]):
    """The memento-model writer: uses the mementos the model wrote itself, masking blocks it wrote none for.

    Use it with :class:`~autogen_ext_memento.MementoChatCompletionClient` and ``trigger="tokens"``: below the
    token limit the context passes the history through unchanged (the backend evicts at KV level and its session
    keeps matching), and the model's mementos are archived with their blocks; above it the context compacts at text
    level with those same mementos.
    """

    component_config_schema = ClosureMementoWriterConfig
    component_provider_override = "autogen_ext_memento.context.ClosureMementoWriter"

    def __init__(self, preview_chars: int = 80) -> None:
        self._preview = build_config(
            ClosureMementoWriterConfig, "ClosureMementoWriter", preview_chars=preview_chars
        ).preview_chars

    @property
    def waits_for_model(self) -> bool:
        # The model writes the memento of the newest observation at its next call (the closure): masking that
        # block first would pre-empt the model's own memento.
        return True

    async def write(self, block: Block, cancellation_token: CancellationToken | None = None) -> str:
        if block.memento is not None:
            return block.memento
        return mask_block(block, self._preview)

    def _to_config(self) -> ClosureMementoWriterConfig:
        return ClosureMementoWriterConfig(preview_chars=self._preview)

    @classmethod
    def _from_config(cls, config: ClosureMementoWriterConfig) -> Self:
        return cls(config.preview_chars)


class LLMMementoWriterSettings(BaseModel):
    """The plain settings of :class:`LLMMementoWriter` and their rules (its Config adds the model clients)."""

    max_judge_rounds: int = Field(default=0, ge=0)
    max_words: int = Field(default=60, ge=1)
    max_input_chars: int = Field(default=12000, ge=1)
    system_prompt: str = COMPRESSION_PROMPT
    judge_prompt: str = JUDGE_PROMPT


class LLMMementoWriterConfig(LLMMementoWriterSettings):
    """Configuration of :class:`LLMMementoWriter`."""

    model_client: ComponentModel
    judge_client: ComponentModel | None = None


class LLMMementoWriter(MementoWriter, Component[LLMMementoWriterConfig]):
    """A memento writer that asks any chat model to compress a block with a state-compression prompt.

    Args:
        model_client: the model that writes mementos (any :class:`~autogen_core.models.ChatCompletionClient`).
        judge_client: the model that checks a memento (defaults to ``model_client`` when ``max_judge_rounds > 0``).
        max_judge_rounds: how many times a memento judged ``FAIL`` is rewritten with the judge's feedback
            (``0``: no judge). After the last round the latest memento is kept.
        max_words: the length bound given to the writer; the answer is also cut to ``8 * max_words`` characters.
        max_input_chars: the block transcript is cut to this many characters before it is sent, so compacting an
            oversized block cannot itself overflow the writer's context.
        system_prompt: the compression prompt (``{max_words}`` is filled in).
        judge_prompt: the judge prompt.

    Any exception or empty answer falls back to :func:`mask_block`, so compaction always completes.
    """

    component_config_schema = LLMMementoWriterConfig
    component_provider_override = "autogen_ext_memento.context.LLMMementoWriter"

    def __init__(
        self,
        model_client: ChatCompletionClient,
        *,
        judge_client: ChatCompletionClient | None = None,
        max_judge_rounds: int = 0,
        max_words: int = 60,
        max_input_chars: int = 12000,
        system_prompt: str = COMPRESSION_PROMPT,
        judge_prompt: str = JUDGE_PROMPT,
    ) -> None:
        owner = "LLMMementoWriter"
        settings = build_config(
            LLMMementoWriterSettings,
            owner,
            max_judge_rounds=max_judge_rounds,
            max_words=max_words,
            max_input_chars=max_input_chars,
            system_prompt=system_prompt,
            judge_prompt=judge_prompt,
        )
        require_type(model_client, ChatCompletionClient, "model_client", owner, optional=False)
        require_type(judge_client, ChatCompletionClient, "judge_client", owner)
        self._client = model_client
        self._judge = judge_client
        self._rounds = settings.max_judge_rounds
        self._max_words = settings.max_words
        self._max_input = settings.max_input_chars
        self._prompt = settings.system_prompt
        self._judge_prompt = settings.judge_prompt
        self.calls = 0
        self.judge_calls = 0
        self.fallbacks = 0

    @property
    def uses_llm(self) -> bool:
        return True

    def _transcript(self, block: Block) -> str:
        text = block.transcript()
        if len(text) > self._max_input:
            text = text[: self._max_input] + f"\n[... {len(text) - self._max_input} more characters archived]"
        return text

    async def _ask(self, client: ChatCompletionClient, messages: list[LLMMessage], ct: CancellationToken | None) -> str:
        result = await client.create(messages, cancellation_token=ct)
        return result.content.strip() if isinstance(result.content, str) else ""

    async def write(self, block: Block, cancellation_token: CancellationToken | None = None) -> str:
        transcript = self._transcript(block)
        system = SystemMessage(content=self._prompt.replace("{max_words}", str(self._max_words)))
        request: list[LLMMessage] = [system, UserMessage(content=f"BLOCK:\n{transcript}", source="user")]
        try:
            self.calls += 1
            memento = await self._ask(self._client, request, cancellation_token)
            judge = self._judge or self._client
            for _ in range(self._rounds):
                if not memento:
                    break
                self.judge_calls += 1
                verdict = await self._ask(
                    judge,
                    [
                        SystemMessage(content=self._judge_prompt),
                        UserMessage(content=f"BLOCK:\n{transcript}\n\nMEMENTO:\n{memento}", source="user"),
                    ],
                    cancellation_token,
                )
                if not verdict.upper().startswith("FAIL"):
                    break
                self.calls += 1
                memento = await self._ask(
                    self._client,
                    request
                    + [
                        UserMessage(
                            content=f"Your memento was rejected: {verdict}\nWrite a corrected memento.\n"
                            f"Previous memento: {memento}",
                            source="user",
                        )
                    ],
                    cancellation_token,
                )
        except Exception as e:  # noqa: BLE001 - a failing writer must not stall compaction
            logger.warning("memento writer failed (%s); masking block %s instead", e, block.block_id)
            memento = ""
        if not memento:
            self.fallbacks += 1
            return mask_block(block)
        return escape_special(memento[: 8 * self._max_words])

    def _to_config(self) -> LLMMementoWriterConfig:
        return LLMMementoWriterConfig(
            model_client=self._client.dump_component(),
            judge_client=self._judge.dump_component() if self._judge is not None else None,
            max_judge_rounds=self._rounds,
            max_words=self._max_words,
            max_input_chars=self._max_input,
            system_prompt=self._prompt,
            judge_prompt=self._judge_prompt,
        )

    @classmethod
    def _from_config(cls, config: LLMMementoWriterConfig) -> Self:
        return cls(
            ChatCompletionClient.load_component(config.model_client),
            judge_client=ChatCompletionClient.load_component(config.judge_client) if config.judge_client else None,
            max_judge_rounds=config.max_judge_rounds,
            max_words=config.max_words,
            max_input_chars=config.max_input_chars,
            system_prompt=config.system_prompt,
            judge_prompt=config.judge_prompt,
        )
