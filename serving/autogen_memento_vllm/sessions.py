"""The session HTTP API next to the OpenAI endpoints (a ``vllm.endpoint_plugins`` entry, opt-in via ``VLLM_PLUGINS``).

Routes (JSON):

* ``POST /v1/memento/sessions/{sid}/generate`` ``{"prompt_token_ids": [...], "max_tokens": n, "temperature": 0,
  "top_p": 1, "top_k": 0, "seed": null, "stop_token_ids": [], "memento": {...} | false, "cache_salt": null}``: run
  one turn. The caller sends the session's *whole logical* token sequence; when it extends the logical history the
  session holds, the compacted KV is adopted and only the new tokens are prefilled, otherwise the session is rebuilt
  (full logical prefill and re-compaction). ``max_tokens`` is clamped so that the logical length stays within
  ``max_model_len`` (a prompt that already reaches it is refused with 400). Returns ``token_ids``,
  ``finish_reason`` (``length`` at ``max_tokens`` or at ``max_model_len``), ``max_tokens`` (after clamping),
  ``prompt_tokens`` (new tokens prefilled), ``rebuilt``, ``evictions`` and the session's KV accounting.
* ``GET /v1/memento/sessions[?cache_salt=...]``: the caller's sessions (pages, KV tokens, logical tokens, idle
  seconds), the pool and the session limits (TTL, page budget, count).
* ``GET /v1/memento/sessions/{sid}``, ``DELETE /v1/memento/sessions/{sid}`` (explicit close), same ``cache_salt``.
* ``GET /v1/memento/config``: the engine's memento rule, token ids, ``max_model_len``, page size, session limits.

Tenancy: sessions are namespaced by ``cache_salt`` (vLLM's per-tenant secret): a caller sees, adopts and closes only
the sessions created with its own salt (none: the default namespace). Sessions expire after ``session_ttl_s`` idle
seconds (a sweep timer in the API server asks the engine to expire them even while no request runs) and are dropped
least-recently-used first beyond the page budget or the session count.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from argparse import Namespace
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

router = APIRouter()
logger = logging.getLogger(__name__)
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


async def _call(engine: Any, op: str, arg: str | None = None, salt: Salt = None) -> Any:
    return await engine.engine_core.call_utility_async("memento_rpc", op, arg, [salt, None])


async def _rpc(request: Request, op: str, arg: str | None = None, salt: Salt = None) -> Any:
    engine = request.app.state.memento_engine
    if engine is None:
        raise HTTPException(503, "no engine")
    return await _call(engine, op, arg, salt)


def clamp_max_tokens(prompt_len: int, max_tokens: int, max_model_len: int) -> int:
    """``max_tokens`` limited so the logical length stays within ``max_model_len``; 400 when nothing fits."""
    if prompt_len >= max_model_len:
        raise HTTPException(
            400,
            f"the logical prompt has {prompt_len} tokens; max_model_len is {max_model_len} "
            "(compaction does not extend it: evicted tokens still count)",
        )
    return min(max_tokens, max_model_len - prompt_len)


@router.get("/v1/memento/config")
async def memento_config(request: Request) -> Any:
    return await _rpc(request, "config")


@router.get("/v1/memento/sessions")
async def list_sessions(request: Request, cache_salt: Salt = None) -> Any:
    return {
        "sessions": await _rpc(request, "list", None, cache_salt),
        "memory": await _rpc(request, "memory"),
        "limits": await _rpc(request, "limits"),
    }


@router.get("/v1/memento/sessions/{sid}")
async def get_session(sid: str, request: Request, cache_salt: Salt = None) -> Any:
    info = await _rpc(request, "get", sid, cache_salt)
    if info is None:
        raise HTTPException(404, f"no session {sid!r}")
    return info


@router.delete("/v1/memento/sessions/{sid}")
async def close_session(sid: str, request: Request, cache_salt: Salt = None) -> Any:
    return {"session_id": sid, "closed": bool(await _rpc(request, "close", sid, cache_salt))}


@router.post("/v1/memento/sessions/{sid}/generate")
async def generate(sid: str, body: GenerateBody, request: Request) -> Any:
    from vllm import SamplingParams

    engine = request.app.state.memento_engine
    if engine is None:
        raise HTTPException(503, "no engine")
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
    prompt: dict[str, Any] = {"prompt_token_ids": list(body.prompt_token_ids)}
    if body.cache_salt is not None:
        prompt["cache_salt"] = body.cache_salt
    async for out in engine.generate(prompt, params, request_id):
        final = out
    if final is None:
        raise HTTPException(500, "no output")
    comp = final.outputs[0]
    stats = await _rpc(request, "stats", request_id) or {}
    reason = comp.finish_reason if comp.finish_reason in ("stop", "length") else "stop"
    return {
        "token_ids": list(comp.token_ids),
        "finish_reason": reason,
        "max_tokens": max_tokens,
        "prompt_tokens": max(0, len(body.prompt_token_ids) - int(stats.get("adopted_logical_tokens", 0))),
        "rebuilt": bool(stats.get("rebuilt", False)),
        "evictions": int(stats.get("evictions", 0)),
        "stats": stats,
        "session": await _rpc(request, "get", sid, body.cache_salt),
    }


class MementoEndpointPlugin:
    """``vllm.endpoint_plugins`` entry: attaches :data:`router`; needs the general plugin's ``memento_rpc``."""

    name = "autogen_memento"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        app.include_router(router)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        state.memento_engine = engine_client
        if engine_client is None:
            return
        try:
            limits = (await _call(engine_client, "limits")) or {}
        except Exception as exc:  # e.g. the memento scheduler is not active: the routes will say so
            logger.warning("memento session API: no session sweep timer (%s)", exc)
            return
        period = sweep_period(float(limits.get("session_ttl_s", 600.0)))
        state.memento_sweeper = asyncio.get_running_loop().create_task(_sweep(engine_client, period))


def sweep_period(ttl_s: float) -> float:
    """Seconds between TTL sweeps: a quarter of the TTL, between 0.5 s and 30 s."""
    return min(30.0, max(0.5, ttl_s / 4))


async def _sweep(engine: Any, period: float) -> None:
    """The session TTL timer: expire idle sessions even while no request makes the scheduler run."""
    while True:
        await asyncio.sleep(period)
        try:
            await _call(engine, "expire")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine restarting or shutting down: try again next period
            logger.debug("memento session sweep failed: %s", exc)
