"""One session turn on the engine: the body of ``POST /v1/memento/sessions/{id}/generate`` and its work.

Used by the session route (:mod:`.sessions`) and, in process, by the chat route's backend
(:mod:`.engine_backend`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, Field

__all__ = ["GenerateBody", "Salt", "clamp_max_tokens", "rpc", "run_turn", "turn_events"]

Salt = str | None


class GenerateBody(BaseModel):
    """One session turn."""

    prompt_token_ids: list[int] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    seed: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    memento: dict[str, Any] | bool | None = None
    cache_salt: str | None = Field(default=None, min_length=1, max_length=128)
    stream: bool = False  # answer as NDJSON events: new token ids as the engine makes them, then the final event


async def rpc(engine: Any, op: str, arg: str | None = None, salt: Salt = None) -> Any:
    """Call the scheduler's ``memento_rpc`` (``op`` on ``arg``, in the tenant ``salt``) through the engine core."""
    return await engine.engine_core.call_utility_async("memento_rpc", op, arg, [salt, None])


def clamp_max_tokens(prompt_len: int, max_tokens: int, max_model_len: int) -> int:
    """``max_tokens`` limited so the logical length stays within ``max_model_len``; 400 when nothing fits."""
    if prompt_len >= max_model_len:
        raise HTTPException(
            400,
            f"the logical prompt has {prompt_len} tokens; max_model_len is {max_model_len} "
            "(compaction does not extend it: evicted tokens still count)",
        )
    return min(max_tokens, max_model_len - prompt_len)


async def turn_events(engine: Any, sid: str, body: GenerateBody) -> AsyncIterator[dict[str, Any]]:
    """One session turn on ``engine`` as events: ``{"token_ids": [new ids]}`` as the engine makes them, then the
    final event (``token_ids`` empty, ``finish_reason`` and the turn's accounting)."""
    from vllm import SamplingParams

    max_len = int(engine.model_config.max_model_len)
    max_tokens = clamp_max_tokens(len(body.prompt_token_ids), body.max_tokens, max_len)
    extra: dict[str, Any] = {"memento_session": sid}
    if body.memento is not None:
        extra["memento"] = body.memento
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k if body.top_k > 0 else 0,
        seed=body.seed,
        stop_token_ids=list(body.stop_token_ids),
        ignore_eos=True,  # the caller decides what stops a turn (stop_token_ids)
        skip_special_tokens=False,
        extra_args=extra,
    )
    request_id = f"memento-{sid}-{uuid.uuid4().hex[:8]}"
    final = None
    sent = 0
    prompt: dict[str, Any] = {"prompt_token_ids": list(body.prompt_token_ids)}
    if body.cache_salt is not None:
        prompt["cache_salt"] = body.cache_salt
    async for out in engine.generate(prompt, params, request_id):
        final = out
        ids = out.outputs[0].token_ids
        if len(ids) > sent:
            yield {"token_ids": list(ids[sent:])}
            sent = len(ids)
    if final is None:
        raise HTTPException(500, "no output")
    comp = final.outputs[0]
    stats = await rpc(engine, "stats", request_id) or {}
    reason = comp.finish_reason if comp.finish_reason in ("stop", "length") else "stop"
    yield {
        "token_ids": [],
        "finish_reason": reason,
        "max_tokens": max_tokens,
        "prompt_tokens": max(0, len(body.prompt_token_ids) - int(stats.get("adopted_logical_tokens", 0))),
        "rebuilt": bool(stats.get("rebuilt", False)),
        "evictions": int(stats.get("evictions", 0)),
        "stats": stats,
        "session": await rpc(engine, "get", sid, body.cache_salt),
    }


async def run_turn(engine: Any, sid: str, body: GenerateBody) -> dict[str, Any]:
    """One session turn on ``engine``, answered whole (``token_ids`` holds every generated id)."""
    tokens: list[int] = []
    last: dict[str, Any] = {}
    async for event in turn_events(engine, sid, body):
        tokens += event["token_ids"]
        last = event
    return {**last, "token_ids": tokens}
