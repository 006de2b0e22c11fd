"""Run the compared methods on the same model and the same held-out episodes, in one process."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._methods import Method, ModelKind

Models = Mapping[ModelKind, tuple[Any, Any]]
"""The twins as ``{"base": (model, tokenizer), "memento": (model, tokenizer)}``."""


@dataclass
class EpisodeRun:
    """One episode under one method."""

    method: str
    pages: int
    correct: bool
    per_key: float
    answer: str
    peak_kv_tokens: int
    full_context_kv_tokens: int
    auc_kv: int
    prompt_tokens: int
    completion_tokens: int
    model_calls: int
    seconds: float
    rebuilds: int
    evictions: int
    trace: list[int] = field(default_factory=list, repr=False)


@dataclass
class MethodSummary:
    """A method's numbers averaged over episodes (``peak_kv_tokens`` is the mean per-episode peak).

    ``full_context_kv_tokens`` is the peak the *same* tokens would hold without eviction: methods whose agent stops
    early process fewer tokens, so compare each method's peak with its own full-context peak too.
    """

    accuracy: float
    per_key_accuracy: float
    peak_kv_tokens: float
    full_context_kv_tokens: float
    max_peak_kv_tokens: int
    auc_kv: float
    prompt_tokens: float
    completion_tokens: float
    latency_per_call_s: float
    rebuilds: float
    evictions: float
    episodes: int
    capacity_at_budget: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(runs: Sequence[EpisodeRun], kv_budget: int) -> MethodSummary:
    """Average the runs; ``capacity_at_budget`` is how many sessions of mean peak size fit in ``kv_budget``."""
    n = max(1, len(runs))
    peak = statistics.fmean(r.peak_kv_tokens for r in runs) if runs else 0.0
    calls = sum(r.model_calls for r in runs)
    return MethodSummary(
        accuracy=sum(r.correct for r in runs) / n,
        per_key_accuracy=sum(r.per_key for r in runs) / n,
        peak_kv_tokens=peak,
        full_context_kv_tokens=statistics.fmean(r.full_context_kv_tokens for r in runs) if runs else 0.0,
        max_peak_kv_tokens=max((r.peak_kv_tokens for r in runs), default=0),
        auc_kv=statistics.fmean(r.auc_kv for r in runs) if runs else 0.0,
        prompt_tokens=statistics.fmean(r.prompt_tokens for r in runs) if runs else 0.0,
        completion_tokens=statistics.fmean(r.completion_tokens for r in runs) if runs else 0.0,
        latency_per_call_s=sum(r.seconds for r in runs) / max(1, calls),
        rebuilds=statistics.fmean(r.rebuilds for r in runs) if runs else 0.0,
        evictions=statistics.fmean(r.evictions for r in runs) if runs else 0.0,
        episodes=len(runs),
        capacity_at_budget=kv_budget / peak if peak else 0.0,
    )


async def run_episode(backend: Any, method: Method, episode: Any, session_id: str, max_new_tokens: int) -> EpisodeRun:
    """Play one fact-tracker episode with an ``AssistantAgent`` whose context is the method's."""
    from ..client import MementoChatCompletionClient
    from ..tasks import play_tracker, score_answer

    client = MementoChatCompletionClient(backend, session_id=session_id, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    answer = await play_tracker(episode, client, model_context=method.context(client))
    seconds = time.perf_counter() - t0
    correct, per_key = score_answer(episode, answer)
    stats = backend.stats(session_id)
    backend.close_session(session_id)
    usage = client.total_usage()
    return EpisodeRun(
        method=method.name,
        pages=len(episode.pages),
        correct=correct,
        per_key=per_key,
        answer=answer,
        peak_kv_tokens=stats.peak_kv_tokens,
        full_context_kv_tokens=stats.full_context_kv_tokens,
        auc_kv=stats.auc_kv,
        prompt_tokens=stats.prefill_tokens,
        completion_tokens=usage.completion_tokens,
        model_calls=client.call_count,
        seconds=seconds,
        rebuilds=stats.rebuilds,
        evictions=stats.evictions,
        trace=list(stats.trace),
    )


def _backend(models: Models, method: Method) -> Any:
    from ..backends import TransformersBackend

    if method.model not in models:
        raise ValueError(f"method {method.name!r} runs on the {method.model} twin, which was not given")
    model, tokenizer = models[method.model]
    return TransformersBackend(model, tokenizer, memento=method.memento, max_model_len=1 << 20)


def run_method(
    models: Models,
    method: Method,
    episodes: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    tag: str = "",
    on_episode: Callable[[EpisodeRun], None] | None = None,
) -> list[EpisodeRun]:
    """Every episode under one method, each in a fresh session of one backend on the method's twin."""
    backend = _backend(models, method)

    async def go() -> list[EpisodeRun]:
        out = []
        for i, ep in enumerate(episodes):
            run = await run_episode(backend, method, ep, f"{method.name}{tag}-{i}", max_new_tokens)
            if on_episode is not None:
                on_episode(run)
            out.append(run)
        return out

    return asyncio.run(go())


@dataclass
class ConcurrentRun:
    """Several agents, each on its own episode, sharing one backend at the same time (a serving workload)."""

    method: str
    agents: int
    accuracy: float
    pool_peak_kv_tokens: int
    seconds: float
    completion_tokens: int
    prompt_tokens: int
    tokens_per_s: float
    pool_trace: list[int] = field(default_factory=list, repr=False)

    def as_dict(self, with_trace: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_trace:
            d.pop("pool_trace")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def run_concurrent(
    models: Models, method: Method, episodes: Sequence[Any], *, max_new_tokens: int = 64
) -> ConcurrentRun:
    """Run one agent per episode concurrently on one backend; record the pool's live KV over time."""
    backend = _backend(models, method)

    async def go() -> list[EpisodeRun]:
        jobs = [
            run_episode(backend, method, ep, f"{method.name}-c{i}", max_new_tokens) for i, ep in enumerate(episodes)
        ]
        return list(await asyncio.gather(*jobs))

    t0 = time.perf_counter()
    runs = asyncio.run(go())
    seconds = time.perf_counter() - t0
    completion = sum(r.completion_tokens for r in runs)
    return ConcurrentRun(
        method=method.name,
        agents=len(runs),
        accuracy=sum(r.correct for r in runs) / max(1, len(runs)),
        pool_peak_kv_tokens=max(backend.pool_trace, default=0),
        seconds=seconds,
        completion_tokens=completion,
        prompt_tokens=sum(r.prompt_tokens for r in runs),
        tokens_per_s=completion / seconds if seconds else 0.0,
        pool_trace=list(backend.pool_trace),
    )
