"""The HTTP side of the memento chat route: ``POST /v1/chat/completions``, delegation to vLLM, event streams.

See :mod:`.chat` for what the route does with a request it serves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from .chat import MementoChat

__all__ = ["SESSION_HEADER", "chat_router", "keep_vllm_chat_route", "stream_events", "unsupported_reason"]

SESSION_HEADER = "X-Session-ID"


def unsupported_reason(body: Mapping[str, Any]) -> str | None:
    """Why vLLM's own handler must serve this request (``None``: the memento route serves it)."""
    xargs = body.get("vllm_xargs") or {}
    if xargs.get("memento") is False:
        return "memento disabled for this request"
    if (body.get("n") or 1) > 1:
        return "n > 1"
    if body.get("logprobs") or body.get("top_logprobs"):
        return "log-probabilities"
    if body.get("stop"):
        return "stop strings"
    return None


async def stream_events(answer: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """A finished ``chat.completion`` as ``chat.completion.chunk`` server-sent events.

    Text and tool calls go in separate chunks: AutoGen's OpenAI client reads a chunk's tool calls only when it
    carries no content.
    """
    choice = answer["choices"][0]
    msg = choice["message"]
    first: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
    if msg.get("reasoning_content"):
        first["reasoning_content"] = msg["reasoning_content"]
    deltas = [first]
    if msg.get("tool_calls"):
        deltas.append({"tool_calls": [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]})
    base = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer["model"],
    }
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


chat_router = APIRouter()
_vllm_chat: list[Any] = []  # vLLM's own chat endpoint, found when the plugin replaces its route


def keep_vllm_chat_route(app: FastAPI) -> None:
    """Remember vLLM's ``POST /v1/chat/completions`` endpoint, which serves the requests this route does not."""
    for route in app.routes:
        if getattr(route, "path", None) == "/v1/chat/completions" and "POST" in (getattr(route, "methods", None) or ()):
            _vllm_chat[:] = [route.endpoint]


def _error(status: int, message: str) -> JSONResponse:
    kind = "BadRequestError" if status == 400 else "ServiceUnavailableError"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


async def _delegate(raw_request: Request, body: dict[str, Any]) -> Any:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    if not _vllm_chat:
        return _error(503, "vLLM's chat handler is not available")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        return _error(400, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    return await _vllm_chat[0](request, raw_request)


@chat_router.post("/v1/chat/completions")
async def chat_completions(raw_request: Request) -> Any:
    """The memento chat route (see the module docstring); other requests go to vLLM's handler."""
    try:
        body = await raw_request.json()
    except ValueError:
        return _error(400, "the request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object")
    chat: MementoChat | None = getattr(raw_request.app.state, "memento_chat", None)
    if chat is None or unsupported_reason(body) is not None:
        return await _delegate(raw_request, body)
    try:
        answer = await chat.complete(body, raw_request.headers.get(SESSION_HEADER))
    except ValueError as e:
        return _error(400, str(e))
    if body.get("stream"):
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(stream_events(answer, usage), media_type="text/event-stream")
    return JSONResponse(answer)
