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
  With ``"stream": true`` the answer is NDJSON: ``{"token_ids": [...]}`` events as the engine makes tokens, then the
  final event (empty ``token_ids``, the fields above); ``VLLMBackend`` reads it for ``create_stream``.
* ``GET /v1/memento/sessions[?cache_salt=...]``: the caller's sessions (pages, KV tokens, logical tokens, idle
  seconds), the pool and the session limits (TTL, page budget, count).
* ``GET /v1/memento/sessions/{sid}``, ``DELETE /v1/memento/sessions/{sid}`` (explicit close), same ``cache_salt``.
* ``POST /v1/memento/sessions/list``, ``POST /v1/memento/sessions/{sid}/info``, ``POST /v1/memento/sessions/{sid}/close``
  with ``{"cache_salt": ...}``: the same three with the salt in the body (routers such as vllm-router drop query
  strings; ``VLLMBackend(cache_salt=...)`` uses these).
* ``GET /v1/memento/config``: the engine's memento rule, token ids, ``max_model_len``, page size, session limits.

Tenancy: sessions are namespaced by ``cache_salt`` (vLLM's per-tenant secret): a caller sees, adopts and closes only
the sessions created with its own salt (none: the default namespace). Sessions expire after ``session_ttl_s`` idle
seconds (a sweep timer in the API server asks the engine to expire them even while no request runs) and are dropped
least-recently-used first beyond the page budget or the session count.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from argparse import Namespace
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from .turns import GenerateBody, Salt, clamp_max_tokens, rpc, run_turn, turn_events

router = APIRouter()
logger = logging.getLogger(__name__)


async def _rpc(request: Request, op: str, arg: str | None = None, salt: Salt = None) -> Any:
    engine = request.app.state.memento_engine
    if engine is None:
        raise HTTPException(503, "no engine")
    return await rpc(engine, op, arg, salt)


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


class TenantBody(BaseModel):
    """The body of the POST forms of the read/close routes (a router may drop query strings, never the body)."""

    cache_salt: str | None = Field(default=None, min_length=1, max_length=128)


@router.post("/v1/memento/sessions/list")
async def list_sessions_post(body: TenantBody, request: Request) -> Any:
    return await list_sessions(request, body.cache_salt)


@router.post("/v1/memento/sessions/{sid}/info")
async def get_session_post(sid: str, body: TenantBody, request: Request) -> Any:
    return await get_session(sid, request, body.cache_salt)


@router.post("/v1/memento/sessions/{sid}/close")
async def close_session_post(sid: str, body: TenantBody, request: Request) -> Any:
    return await close_session(sid, request, body.cache_salt)


@router.post("/v1/memento/sessions/{sid}/generate")
async def generate(sid: str, body: GenerateBody, request: Request) -> Any:
    engine = request.app.state.memento_engine
    if engine is None:
        raise HTTPException(503, "no engine")
    if not body.stream:
        return await run_turn(engine, sid, body)
    # Refuse a prompt that fills max_model_len before the stream starts (a 400, not an error event).
    clamp_max_tokens(len(body.prompt_token_ids), body.max_tokens, int(engine.model_config.max_model_len))

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in turn_events(engine, sid, body):
                yield json.dumps(event) + "\n"
        except HTTPException as e:
            yield json.dumps({"error": e.detail}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class MementoEndpointPlugin:
    """``vllm.endpoint_plugins`` entry: attaches :data:`router`; needs the general plugin's ``memento_rpc``."""

    name = "autogen_memento"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        from .chat_route import chat_router, keep_vllm_chat_route

        keep_vllm_chat_route(app)
        app.include_router(router)
        app.include_router(chat_router)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        state.memento_engine = engine_client
        if engine_client is None:
            return
        try:
            limits = (await rpc(engine_client, "limits")) or {}
        except Exception as exc:  # e.g. the memento scheduler is not active: the routes will say so
            logger.warning("memento session API: no session sweep timer (%s)", exc)
            return
        period = sweep_period(float(limits.get("session_ttl_s", 600.0)))
        state.memento_sweeper = asyncio.get_running_loop().create_task(_sweep(engine_client, period))
        state.memento_chat = await _chat_state(engine_client, args)


async def _chat_state(engine: Any, args: Namespace) -> Any:
    """The memento chat route's state (``None``, and vLLM's chat handler serves everything, if it cannot start)."""
    from transformers import AutoTokenizer

    from .chat import MementoChat
    from .engine_backend import EngineBackend

    try:
        config = await rpc(engine, "config")
        tokenizer = AutoTokenizer.from_pretrained(
            getattr(args, "tokenizer", None) or args.model,
            trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
        )
        names = getattr(args, "served_model_name", None) or [args.model]
        # Each chat request waits in an executor thread while its turn runs on this loop; the default executor
        # (cores + 4 threads) would cap concurrent chat requests far below the engine's batch.
        seqs = int(getattr(args, "max_num_seqs", None) or 256)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=max(32, 2 * seqs)))
        defaults = engine.model_config.get_diff_sampling_param() or {}
        loop, name = asyncio.get_running_loop(), str(names[0])
        return MementoChat(
            functools.partial(EngineBackend, engine, loop, tokenizer, config, name),
            name,
            default_temperature=float(defaults.get("temperature", 1.0)),
        )
    except Exception as exc:  # a model without memento tokens: the stock chat route still serves it
        logger.warning("memento chat route off, vLLM's chat handler serves every request: %s", exc)
        return None


def sweep_period(ttl_s: float) -> float:
    """Seconds between TTL sweeps: a quarter of the TTL, between 0.5 s and 30 s."""
    return min(30.0, max(0.5, ttl_s / 4))


async def _sweep(engine: Any, period: float) -> None:
    """The session TTL timer: expire idle sessions even while no request makes the scheduler run."""
    while True:
        await asyncio.sleep(period)
        try:
            await rpc(engine, "expire")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine restarting or shutting down: try again next period
            logger.debug("memento session sweep failed: %s", exc)
