"""``POST /v1/chat/completions`` for any OpenAI client: the agent chat format, the closure protocol, implicit sessions.

The endpoint plugin replaces vLLM's chat route with :func:`.chat_route.chat_completions`. A request is served the way
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
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_core.models import AssistantMessage, CreateResult, FunctionExecutionResultMessage, LLMMessage
from autogen_core.tools import ToolSchema

from autogen_ext_memento import MementoChatCompletionClient
from autogen_ext_memento.backends import MementoBackend
from autogen_ext_memento.chat_format import Rendering, render, split_closure

from .conversations import ConversationIndex, turns_after
from .openai_messages import completion_body, to_llm_messages, to_tool_schemas

__all__ = ["MementoChat"]


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
        backend_for: makes the backend of one tenant and rule override, ``backend_for(cache_salt, memento)`` (the
            server passes :class:`~autogen_memento_vllm.engine_backend.EngineBackend` bound to its engine).
        model_name: the served model name (echoed in answers).
        default_temperature: the temperature of a request that sets none (the model's generation config, else 1).
        max_tenants: tenants (``cache_salt`` values) with a client at once (least recently used dropped).
        max_client_sessions: conversations one tenant's client keeps rendering state for; beyond that its client
            is renewed (older conversations render afresh: correct, at most one rebuild each).
    """

    def __init__(
        self,
        backend_for: Callable[[str | None, dict[str, Any] | None], MementoBackend],
        model_name: str,
        *,
        default_temperature: float = 1.0,
        max_tenants: int = 64,
        max_client_sessions: int = 4096,
    ) -> None:
        self._backend_for = backend_for
        self.model_name = model_name
        self._default_temperature = default_temperature
        self._max_tenants = max_tenants
        self._max_sessions = max_client_sessions
        self._clients: OrderedDict[tuple[str | None, str], tuple[MementoChatCompletionClient, set[str]]] = OrderedDict()
        self._lock = threading.Lock()
        self.index = ConversationIndex()

    def _client(self, salt: str | None, sid: str, memento: dict[str, Any] | None) -> MementoChatCompletionClient:
        key = (salt, json.dumps(memento, sort_keys=True))
        with self._lock:
            entry = self._clients.get(key)
            if entry is None or (sid not in entry[1] and len(entry[1]) >= self._max_sessions):
                entry = (MementoChatCompletionClient(self._backend_for(salt, memento)), set())
                self._clients[key] = entry
            self._clients.move_to_end(key)
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
                after_observation = after_observation or isinstance(msg, FunctionExecutionResultMessage)
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

    def _prepare(self, body: Mapping[str, Any], session_key: str | None) -> _Call:
        """Parse, restore closures, render and pick the session (CPU work: run off the event loop)."""
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
        overrides = xargs.get("memento")
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError("vllm_xargs.memento must be false or an object of memento rule fields")
        fmt = body.get("response_format") or {}
        return _Call(
            salt=salt,
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=True
            if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")
            else None,
            session_id=sid,
            overrides=overrides,
            rendering=rendering,
            sampling=self._sampling(body),
        )

    def _record(self, call: _Call, client: MementoChatCompletionClient, result: CreateResult) -> dict[str, Any]:
        """Index the conversation (and its new closure) and build the answer (CPU work: off the event loop)."""
        closure, _ = split_closure(result.thought)
        pending = call.rendering.pending_closure
        if closure is not None and pending is not None:
            self.index.remember_closure(call.rendering.turns[:pending], call.salt, closure)
        after = turns_after(call.rendering, result.thought, result.content)
        self.index.remember_session(after, call.salt, call.session_id)
        stats = client.backend.stats(call.session_id)
        info = {
            "session": call.session_id,
            "evictions": stats.evictions if stats else 0,
            "rebuilds": stats.rebuilds if stats else 0,
        }
        return completion_body(result, self.model_name, extra={"memento": info})

    async def complete(self, body: Mapping[str, Any], session_key: str | None = None) -> dict[str, Any]:
        """Serve one chat request (an OpenAI request body) and return the ``chat.completion`` object."""
        call = await asyncio.to_thread(self._prepare, body, session_key)
        client = self._client(call.salt, call.session_id, call.overrides)
        result = await client.create(
            call.messages,
            tools=call.tools,
            tool_choice=call.tool_choice,
            json_output=call.json_output,
            extra_create_args={"session_id": call.session_id, **call.sampling},
        )
        return await asyncio.to_thread(self._record, call, client, result)


@dataclass
class _Call:
    """One chat request, parsed and rendered."""

    salt: str | None
    messages: list[LLMMessage]
    tools: list[ToolSchema]
    tool_choice: Any
    json_output: bool | None
    session_id: str
    overrides: dict[str, Any] | None
    rendering: Rendering  # the request's history, rendered (its pending closure is what this turn writes)
    sampling: dict[str, Any]
