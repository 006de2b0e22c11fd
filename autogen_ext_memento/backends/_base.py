"""The backend contract: sessions that hold a conversation's compacted KV, driven by full logical token ids."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from autogen_core import ComponentBase
from pydantic import BaseModel

from ..grammar import MementoConfig, MementoTokenIds

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class SamplingParams:
    """How to sample one completion. ``temperature == 0`` is greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class GenerationResult:
    """One completion: the sampled ids (the stop token included), why it ended and what the call cost."""

    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    rebuilt: bool
    evictions: int
    forced_block_ends: int = 0


@dataclass
class SessionStats:
    """Live-KV accounting of one session.

    ``trace[i]`` is the number of live KV entries right after the session's ``i``-th logical token was computed
    (before an eviction that token triggers), so the trace is the sawtooth. ``peak_kv_tokens``/``auc_kv`` summarise
    it; ``full_context_kv_tokens``/``full_context_auc_kv`` are the same for a cache that never evicts (the peak and
    summed logical length); ``logical_tokens`` is the current logical length.
    """

    session_id: str
    live_kv_tokens: int = 0
    peak_kv_tokens: int = 0
    auc_kv: int = 0
    logical_tokens: int = 0
    full_context_kv_tokens: int = 0
    full_context_auc_kv: int = 0
    evictions: int = 0
    evicted_tokens: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    rebuilds: int = 0
    anomalies: int = 0
    trace: list[int] = field(default_factory=list)

    def record(self, live: int, logical: int) -> None:
        """Account one computed token: ``live`` entries in the cache, ``logical`` tokens in the sequence."""
        self.trace.append(live)
        self.auc_kv += live
        if live > self.peak_kv_tokens:
            self.peak_kv_tokens = live
        self.logical_tokens = logical
        if logical > self.full_context_kv_tokens:
            self.full_context_kv_tokens = logical
        self.full_context_auc_kv += logical

    def summary(self, with_trace: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_trace:
            d.pop("trace")
        return d


TokenCallback = Callable[[int], None]


class MementoBackend(ABC, ComponentBase[BaseModel]):
    """A model that serves memento sessions.

    A caller sends, for a session, the *whole* logical token sequence the session should hold before it samples;
    the backend appends only what is new (or rebuilds the session when the sequence no longer extends what it
    holds), evicts blocks as their mementos complete, and samples a completion. The sampled stop token is
    returned but not yet computed: it is fed with the next call's new tokens.
    """

    component_type = "memento_backend"

    @property
    @abstractmethod
    def tokenizer(self) -> Any: ...

    @property
    @abstractmethod
    def memento_ids(self) -> MementoTokenIds: ...

    @property
    @abstractmethod
    def memento_config(self) -> MementoConfig: ...

    @property
    @abstractmethod
    def max_model_len(self) -> int: ...

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    @abstractmethod
    def generate(
        self,
        session_id: str,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Bring the session to ``prompt_ids`` and sample one completion (blocking)."""

    @abstractmethod
    def stats(self, session_id: str) -> SessionStats | None:
        """The session's live-KV accounting, or ``None`` for an unknown session."""

    @abstractmethod
    def session_ids(self) -> list[str]:
        """Ids of the sessions currently held."""

    @abstractmethod
    def close_session(self, session_id: str) -> None:
        """Drop a session and free its KV."""

    def close(self) -> None:
        """Release every session."""
        for sid in self.session_ids():
            self.close_session(sid)
