"""``POST /v1/chat/completions`` for any OpenAI client: the agent chat format, the closure protocol, implicit sessions.

The endpoint plugin replaces vLLM's chat route with :func:`chat_completions`. A request is served the way
:class:`~autogen_ext_memento.MementoChatCompletionClient` serves an agent, because it *is* that client, running in
the server over the engine (:class:`~autogen_memento_vllm.engine_backend.EngineBackend`):

* messages and tools are converted back to AutoGen messages (:mod:`.openai_messages`) and rendered by
  ``chat_format`` (one renderer for both paths, token for token);
* after a tool result the model first writes the block's memento (the closure), then acts; the closure comes back
  in the answer where AutoGen's OpenAI client keeps it (``content`` next to tool calls, ``reasoning_content`` next
  to a text answer) and is kept server-side too (:mod:`.conversations`), so a client that drops it loses nothing;
* the conversation finds the session holding its compacted KV by the digest of its rendered prefix and the
  tenant's ``cache_salt`` (no session id needed; ``X-Session-ID`` or ``vllm_xargs.memento_session`` pin one), so
  a stateless client prefills only its new turns.

Requests this route does not serve go to vLLM's own handler unchanged: ``vllm_xargs: {"memento": false}``,
``n > 1``, log-probabilities, stop strings. Streaming is answered as one event stream of the finished turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from autogen_core.models import AssistantMessage, LLMMessage
from autogen_core.tools import ToolSchema
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from autogen_ext_memento import MementoChatCompletionClient
from autogen_ext_memento.chat_format import render, split_closure

from .conversations import ConversationIndex
from .engine_backend import EngineBackend
from .openai_messages import completion_body, to_llm_messages, to_tool_schemas

__all__ = ["MementoChat", "SESSION_HEADER", "chat_router", "keep_vllm_chat_route", "unsupported_reason"]

logger = logging.getLogger(__name__)
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


def _tool_choice(body: Mapping[str, Any], tools: Sequence[ToolSchema]) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto" if tools else "none"
    if choice in ("auto", "none", "required"):
        return choice
    raise ValueError(f"tool_choice {choice!r} is not supported by the memento chat route (auto, none, required)")


class MementoChat:
    """The memento chat route's state: a memento client per tenant and the conversation index.

    Args:
        engine: the API server's engine client.
        loop: its event loop.
        tokenizer: the served model's tokenizer.
        server_config: the scheduler's ``config`` answer.
        model_name: the served model name (echoed in answers).
        default_temperature: the temperature of a request that sets none (the model's generation config, else 1).
        max_tenants: tenants (``cache_salt`` values) with a client at once (least recently used dropped).
        max_client_sessions: conversations one tenant's client keeps rendering state for; beyond that its client
            is renewed (older conversations render afresh: correct, at most one rebuild each).
    """

    def __init__(
        self,
        engine: Any,
        loop: asyncio.AbstractEventLoop,
        tokenizer: Any,
        server_config: dict[str, Any],
        model_name: str,
        *,
        default_temperature: float = 1.0,
        max_tenants: int = 64,
        max_client_sessions: int = 4096,
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._tok = tokenizer
        self._config = server_config
        self.model_name = model_name
        self._default_temperature = default_temperature
        self._max_tenants = max_tenants
        self._max_sessions = max_client_sessions
        self._clients: OrderedDict[str | None, tuple[MementoChatCompletionClient, set[str]]] = OrderedDict()
        self._lock = threading.Lock()
        self.index = ConversationIndex()

    def _client(self, salt: str | None, sid: str) -> MementoChatCompletionClient:
        with self._lock:
            entry = self._clients.get(salt)
            if entry is None or (sid not in entry[1] and len(entry[1]) >= self._max_sessions):
                backend = EngineBackend(self._engine, self._loop, self._tok, self._config, self.model_name, salt)
                entry = (MementoChatCompletionClient(backend), set())
                self._clients[salt] = entry
            self._clients.move_to_end(salt)
            while len(self._clients) > self._max_tenants:
                self._clients.popitem(last=False)
            entry[1].add(sid)
            return entry[0]

    def _restore_closures(
        self, messages: list[LLMMessage], tools: Sequence[ToolSchema], salt: str | None
    ) -> list[LLMMessage]:
        """Put back closures a client dropped (AutoGen does not re-send the reasoning of a text answer)."""
        out = list(messages)
        after_observation = False
        for k, msg in enumerate(out):
            if not isinstance(msg, AssistantMessage):
                after_observation = after_observation or type(msg).__name__ == "FunctionExecutionResultMessage"
                continue
            if after_observation and split_closure(msg.thought)[0] is None:
                before = render(out[:k], tools)
                if before.pending_closure is not None:
                    closure = self.index.closure_for(before.turns[: before.pending_closure], salt)
                    if closure is not None:
                        out[k] = msg.model_copy(update={"thought": closure + (msg.thought or "")})
            after_observation = False
        return out

    def _sampling(self, body: Mapping[str, Any]) -> dict[str, Any]:
        temperature = body.get("temperature")
        args: dict[str, Any] = {
            "temperature": self._default_temperature if temperature is None else float(temperature),
            "top_p": float(body.get("top_p") or 1.0),
            "top_k": max(0, int(body.get("top_k") or 0)),
            "seed": body.get("seed"),
        }
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None:
            args["max_new_tokens"] = int(max_tokens)
        return args

    async def complete(self, body: Mapping[str, Any], session_key: str | None = None) -> dict[str, Any]:
        """Serve one chat request (an OpenAI request body) and return the ``chat.completion`` object."""
        salt = body.get("cache_salt")
        messages = to_llm_messages(body.get("messages") or [])
        if not messages:
            raise ValueError("messages must not be empty")
        tools = to_tool_schemas(body.get("tools"))
        tool_choice = _tool_choice(body, tools)
        messages = self._restore_closures(messages, tools, salt)
        rendering = render(messages, tools)
        xargs = body.get("vllm_xargs") or {}
        key = session_key or xargs.get("memento_session")
        sid = str(key) if key else (self.index.session_for(rendering.turns, salt) or f"chat-{uuid.uuid4().hex}")
        client = self._client(salt, sid)
        fmt = body.get("response_format") or {}
        json_output = True if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema") else None
        result = await client.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args={"session_id": sid, **self._sampling(body)},
        )
        closure, _ = split_closure(result.thought)
        if closure is not None and rendering.pending_closure is not None:
            self.index.remember_closure(rendering.turns[: rendering.pending_closure], salt, closure)
        done = AssistantMessage(content=result.content, thought=result.thought, source="assistant")
        self.index.remember_session(render([*messages, done], tools).turns, salt, sid)
        stats = client.backend.stats(sid)
        info = {
            "session": sid,
            "evictions": stats.evictions if stats else 0,
            "rebuilds": stats.rebuilds if stats else 0,
        }
        return completion_body(result, self.model_name, extra={"memento": info})


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
