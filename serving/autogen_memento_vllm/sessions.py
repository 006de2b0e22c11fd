"""The session HTTP API next to the OpenAI endpoints (a ``vllm.endpoint_plugins`` entry, opt-in via ``VLLM_PLUGINS``).

Routes (JSON):

* ``POST /v1/memento/sessions/{sid}/generate`` ``{"prompt_token_ids": [...], "max_tokens": n, "temperature": 0,
  "top_p": 1, "top_k": 0, "seed": null, "stop_token_ids": [], "memento": {...} | false}``: run one turn. The caller
  sends the session's *whole logical* token sequence; when it extends the logical history the session holds, the
  compacted KV is adopted and only the new tokens are prefilled, otherwise the session is rebuilt (full logical
  prefill and re-compaction). Returns ``token_ids``, ``finish_reason``, ``prompt_tokens`` (new tokens prefilled),
  ``rebuilt``, ``evictions`` and the session's KV accounting.
* ``GET /v1/memento/sessions``: every held session (pages, KV tokens, logical tokens, idle seconds) and the pool.
* ``GET /v1/memento/sessions/{sid}``, ``DELETE /v1/memento/sessions/{sid}`` (explicit close).
* ``GET /v1/memento/config``: the engine's memento rule, token ids, ``max_model_len``, page size.

Sessions also expire after ``session_ttl_s`` idle seconds and are dropped least-recently-used first beyond the
page budget (``max_session_fraction`` of the pool) or ``max_sessions``.
"""

from __future__ import annotations

import uuid
from argparse import Namespace
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

router = APIRouter()


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


async def _rpc(request: Request, op: str, arg: str | None = None) -> Any:
    engine = request.app.state.memento_engine
    if engine is None:
        raise HTTPException(503, "no engine")
    return await engine.engine_core.call_utility_async("memento_rpc", op, arg)


@router.get("/v1/memento/config")
async def memento_config(request: Request) -> Any:
    return await _rpc(request, "config")


@router.get("/v1/memento/sessions")
async def list_sessions(request: Request) -> Any:
    return {"sessions": await _rpc(request, "list"), "memory": await _rpc(request, "memory")}


@router.get("/v1/memento/sessions/{sid}")
async def get_session(sid: str, request: Request) -> Any:
    info = await _rpc(request, "get", sid)
    if info is None:
        raise HTTPException(404, f"no session {sid!r}")
    return info


@router.delete("/v1/memento/sessions/{sid}")
async def close_session(sid: str, request: Request) -> Any:
    return {"session_id": sid, "closed": bool(await _rpc(request, "close", sid))}


@router.post("/v1/memento/sessions/{sid}/generate")
async def generate(sid: str, body: GenerateBody, request: Request) -> Any:
    from vllm import SamplingParams

    engine = request.app.state.memento_engine
    extra: dict[str, Any] = {"memento_session": sid}
    if body.memento is not None:
        extra["memento"] = body.memento
    params = SamplingParams(
        max_tokens=body.max_tokens,
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
    async for out in engine.generate({"prompt_token_ids": list(body.prompt_token_ids)}, params, request_id):
        final = out
    if final is None:
        raise HTTPException(500, "no output")
    comp = final.outputs[0]
    stats = await _rpc(request, "stats", request_id) or {}
    reason = comp.finish_reason if comp.finish_reason in ("stop", "length") else "stop"
    return {
        "token_ids": list(comp.token_ids),
        "finish_reason": reason,
        "prompt_tokens": max(0, len(body.prompt_token_ids) - int(stats.get("adopted_logical_tokens", 0))),
        "rebuilt": bool(stats.get("rebuilt", False)),
        "evictions": int(stats.get("evictions", 0)),
        "stats": stats,
        "session": await _rpc(request, "get", sid),
    }


class MementoEndpointPlugin:
    """``vllm.endpoint_plugins`` entry: attaches :data:`router`; needs the general plugin's ``memento_rpc``."""

    name = "autogen_memento"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        app.include_router(router)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        state.memento_engine = engine_client
