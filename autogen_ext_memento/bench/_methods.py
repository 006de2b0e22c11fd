"""The compared methods: how each one builds the agent's model context and the backend's memento rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autogen_core.model_context import (
    BufferedChatCompletionContext,
    ChatCompletionContext,
    HeadAndTailChatCompletionContext,
    TokenLimitedChatCompletionContext,
    UnboundedChatCompletionContext,
)
from autogen_core.models import ChatCompletionClient

from ..grammar import MementoConfig

ContextFactory = Callable[[ChatCompletionClient], ChatCompletionContext]


@dataclass(frozen=True)
class Method:
    """One compared method: a model context for the agent and the backend's memento rule."""

    name: str
    description: str
    memento: MementoConfig
    context: ContextFactory


NO_EVICTION = MementoConfig(keep_last_n_blocks=-1)


def _observation_masking(client: ChatCompletionClient) -> ChatCompletionContext:
    from ..context import MementoChatCompletionContext, ObservationMaskingWriter

    return MementoChatCompletionContext(keep_last_n_blocks=1, writer=ObservationMaskingWriter(), model_client=client)


def methods(*, buffer_size: int = 5, token_limit: int = 600, head: int = 2, tail: int = 4) -> dict[str, Method]:
    """Every method the benchmark knows, by name (same model, same episodes for all)."""
    unbounded: ContextFactory = lambda _c: UnboundedChatCompletionContext()  # noqa: E731
    return {
        m.name: m
        for m in (
            Method("full", "full context, no eviction", NO_EVICTION, unbounded),
            Method(
                "buffered",
                f"AutoGen BufferedChatCompletionContext(buffer_size={buffer_size})",
                NO_EVICTION,
                lambda _c: BufferedChatCompletionContext(buffer_size=buffer_size),
            ),
            Method(
                "token_limited",
                f"AutoGen TokenLimitedChatCompletionContext(token_limit={token_limit})",
                NO_EVICTION,
                lambda c: TokenLimitedChatCompletionContext(c, token_limit=token_limit),
            ),
            Method(
                "head_and_tail",
                f"AutoGen HeadAndTailChatCompletionContext(head={head}, tail={tail})",
                NO_EVICTION,
                lambda _c: HeadAndTailChatCompletionContext(head_size=head, tail_size=tail),
            ),
            Method(
                "observation_masking",
                "MementoChatCompletionContext + ObservationMaskingWriter (no LLM), last block whole",
                NO_EVICTION,
                _observation_masking,
            ),
            Method(
                "llm_summary",
                "text-level summaries: the model's mementos kept as text, their KV recomputed without the block "
                "(restart mode)",
                MementoConfig(restart_mode=True),
                unbounded,
            ),
            Method("memento_kv", "memento with physical KV eviction (memento KV kept)", MementoConfig(), unbounded),
        )
    }


DEFAULT_METHODS: tuple[str, ...] = (
    "full",
    "buffered",
    "token_limited",
    "head_and_tail",
    "observation_masking",
    "llm_summary",
    "memento_kv",
)
