"""The compared methods: how each one builds the agent's model context and the backend's memento rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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
ModelKind = Literal["base", "memento"]
"""Which twin a method runs on: ``base`` (``tiny_full``, causal attention only) or ``memento`` (its fine-tune)."""


@dataclass(frozen=True)
class Method:
    """One compared method: the twin it runs on, a model context for the agent and the backend's memento rule.

    Every method runs on a model trained for its own mode: full context and the text-level contexts on the base
    twin, eviction and its ablations on the memento twin (a method is never compared against a crippled version
    of itself).
    """

    name: str
    description: str
    memento: MementoConfig
    context: ContextFactory
    model: ModelKind = "base"


NO_EVICTION = MementoConfig(keep_last_n_blocks=-1)


def _observation_masking(client: ChatCompletionClient) -> ChatCompletionContext:
    from ..context import MementoChatCompletionContext, ObservationMaskingWriter

    return MementoChatCompletionContext(keep_last_n_blocks=1, writer=ObservationMaskingWriter(), model_client=client)


def methods(*, buffer_size: int = 5, token_limit: int = 600, head: int = 2, tail: int = 4) -> dict[str, Method]:
    """Every method the benchmark and the evaluation know, by name (the same episodes for all)."""
    unbounded: ContextFactory = lambda _c: UnboundedChatCompletionContext()  # noqa: E731
    evict = MementoConfig(keep_last_n_blocks=0)
    return {
        m.name: m
        for m in (
            Method("full", "base twin, full context (the paper's base model)", NO_EVICTION, unbounded),
            Method("memento_kv", "memento twin, physical KV eviction (memento KV kept)", evict, unbounded, "memento"),
            Method(
                "restart",
                "memento twin, each memento's KV recomputed from its text without its block (restart mode)",
                evict.model_copy(update={"restart_mode": True}),
                unbounded,
                "memento",
            ),
            Method("memento_full", "memento twin, no eviction (full context)", NO_EVICTION, unbounded, "memento"),
            Method(
                "buffered",
                f"base twin, AutoGen BufferedChatCompletionContext(buffer_size={buffer_size})",
                NO_EVICTION,
                lambda _c: BufferedChatCompletionContext(buffer_size=buffer_size),
            ),
            Method(
                "token_limited",
                f"base twin, AutoGen TokenLimitedChatCompletionContext(token_limit={token_limit})",
                NO_EVICTION,
                lambda c: TokenLimitedChatCompletionContext(c, token_limit=token_limit),
            ),
            Method(
                "head_and_tail",
                f"base twin, AutoGen HeadAndTailChatCompletionContext(head={head}, tail={tail})",
                NO_EVICTION,
                lambda _c: HeadAndTailChatCompletionContext(head_size=head, tail_size=tail),
            ),
            Method(
                "observation_masking",
                "base twin, MementoChatCompletionContext + ObservationMaskingWriter (no LLM), last block whole",
                NO_EVICTION,
                _observation_masking,
            ),
        )
    }


DEFAULT_METHODS: tuple[str, ...] = (
    "full",
    "memento_kv",
    "restart",
    "memento_full",
    "buffered",
    "token_limited",
    "head_and_tail",
    "observation_masking",
)
# head_and_tail has no counterpart in the paper's table.
PAPER_MODES: tuple[str, ...] = tuple(m for m in DEFAULT_METHODS if m != "head_and_tail")
"""The evaluation's modes: the paper's base-vs-memento table plus AutoGen's text-level contexts on the base."""
