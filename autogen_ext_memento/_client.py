"""``MementoChatCompletionClient``: an AutoGen model client that drives a memento backend, one session per agent."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, ComponentModel, MessageHandlerContext
from autogen_core.logging import LLMCallEvent
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    validate_model_info,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self

from ._completion import CallCost, log_call, read_completion, validate_json
from ._events import MementoMalformedOutputEvent
from .backends import MementoBackend, SamplingParams, SessionStats
from .backends._base import build_config, validation_message
from .chat_format import (
    CLOSURE_PREFIX,
    IM_END,
    IncrementalRenderer,
    RenderedHistory,
    TurnEncoder,
    assistant_body,
    render,
)
from .grammar import kept_positions

logger = logging.getLogger(__name__)
event_logger = logging.getLogger(EVENT_LOGGER_NAME)

DEFAULT_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=True,
    family=ModelFamily.UNKNOWN,
    structured_output=True,
    multiple_system_messages=True,
)


class _SamplingOptions(BaseModel):
    """Sampling rules shared by the constructor, the component config and ``extra_create_args``."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    top_k: int = Field(default=0, ge=0)
    seed: int | None = None


class _ClientOptions(_SamplingOptions):
    """Everything the constructor validates (the backend is checked by its own Config)."""

    session_id: str | None = None
    max_memento_tokens: int = Field(default=128, ge=1)
    model_info: ModelInfo | None = None


class MementoChatCompletionClientConfig(_ClientOptions):
    """Configuration of :class:`MementoChatCompletionClient` (the backend is a nested component)."""

    backend: ComponentModel


_SAMPLING_KEYS = frozenset(_SamplingOptions.model_fields)
STATE_VERSION = 1


class _SessionState(BaseModel):
    """One client session in saved state: each generated turn body and the token ids sampled for it."""

    model_config = ConfigDict(extra="forbid")

    overrides: list[tuple[str, list[int]]] = Field(default_factory=list)


class MementoChatCompletionClientState(BaseModel):
    """Saved state of :class:`MementoChatCompletionClient` (what :meth:`~MementoChatCompletionClient.save_state` returns).

    The sampled token ids of every generated turn still in a session's history are kept: a client loaded from
    this state renders the same history to the very same prompt tokens as the client that saved it.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["MementoChatCompletionClientState"] = "MementoChatCompletionClientState"
    version: Literal[1] = 1
    sessions: dict[str, _SessionState] = Field(default_factory=dict)
    last_session_id: str | None = None
    call_count: int = Field(default=0, ge=0)
    total_prompt_tokens: int = Field(default=0, ge=0)
    total_completion_tokens: int = Field(default=0, ge=0)


@dataclass
class _ClientSession:
    # Generated turn bodies tokenized exactly as sampled, keyed by their canonical rendering.
    overrides: dict[str, list[int]] = field(default_factory=dict)
    # A call is two backend generations (closure, then answer); another call must not slip in between.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The history rendered by the last call, so the next one encodes only its new messages.
    renderer: IncrementalRenderer | None = None


class _TextStream:
    """Turns sampled token ids into text deltas, holding back incomplete multi-byte characters."""

    def __init__(self, client: MementoChatCompletionClient, on_text: Callable[[str], None] | None) -> None:
        self._client = client
        self._on_text = on_text
        self._ids: list[int] = []
        self._sent = 0

    def push(self, token: int) -> None:
        if self._on_text is None or token in self._client._stops:  # noqa: SLF001 - the client's own helper
            return
        self._ids.append(token)
        text = self._client._decode(self._ids)  # noqa: SLF001
        if text.endswith("\ufffd") or len(text) <= self._sent:
            return
        self._on_text(text[self._sent :])
        self._sent = len(text)


@dataclass
class _Outcome:
    result: CreateResult
    stats: SessionStats | None


class MementoChatCompletionClient(ChatCompletionClient, Component[MementoChatCompletionClientConfig]):
    """An AutoGen ``ChatCompletionClient`` for memento models: blocks are evicted from the KV cache as mementos complete.

    Every call renders the message history in the agent chat format (:mod:`autogen_ext_memento.chat_format`) and
    hands the token ids to the backend session of the calling agent, which appends only what is new. When the
    history ends with a tool observation, the model first writes that block's memento (the *closure*), the block
    is evicted, and only then does the model act again; the closure is returned at the start of
    ``CreateResult.thought`` so a saved history re-renders to the same tokens.

    Sessions: inside an AutoGen runtime (any team) the session is the calling agent's ``AgentId``; otherwise
    ``session_id`` (or ``extra_create_args["session_id"]``), else ``"default"``. If the history no longer extends
    what the session holds (another context truncated it, state was loaded elsewhere), the backend rebuilds the
    session from the text and a :class:`~autogen_ext_memento.MementoSessionRebuildEvent` is logged.

    ``usage.prompt_tokens`` counts the tokens actually prefilled by the call (what the KV reuse saves shows there);
    :meth:`session_stats` has logical, live, peak and area-under-curve KV numbers.

    :meth:`save_state`/:meth:`load_state` keep the token ids sampled in every session, so a client restarted from
    saved state (next to the agents' or team's own state) renders the same history to the same prompt tokens. A
    cancelled ``CancellationToken`` stops the decode loop at its next token, in ``create`` and ``create_stream``;
    the session rebuilds from the history on its next call.

    Args:
        backend: a :class:`~autogen_ext_memento.backends.MementoBackend`, e.g. a ``TransformersBackend``.
        session_id: session to use outside a runtime.
        max_new_tokens: budget of one completion.
        max_memento_tokens: budget of one closure memento; a memento cut by it is closed with a forced
            ``<|summary_end|>`` (logged as malformed output).
        temperature, top_p, top_k, seed: sampling (``temperature=0`` is greedy).
        model_info: overrides the default model info (function calling, JSON output and structured output on).

    Example:

    .. code-block:: python

        import asyncio

        from autogen_core.models import UserMessage
        from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend


        async def main() -> None:
            client = MementoChatCompletionClient(TransformersBackend("tiny"))  # the shipped tiny memento model
            result = await client.create([UserMessage(content="hello", source="user")])
            print(result.content, client.session_stats())


        asyncio.run(main())
    """

    component_type = "model"
    component_config_schema = MementoChatCompletionClientConfig
    component_provider_override = "autogen_ext_memento.MementoChatCompletionClient"

    def __init__(
        self,
        backend: MementoBackend,
        *,
        session_id: str | None = None,
        max_new_tokens: int = 256,
        max_memento_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        model_info: ModelInfo | None = None,
    ) -> None:
        opts = build_config(
            _ClientOptions,
            "MementoChatCompletionClient",
            session_id=session_id,
            max_new_tokens=max_new_tokens,
            max_memento_tokens=max_memento_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            model_info=model_info,
        )
        self._backend = backend
        self._session_id = opts.session_id
        self._sampling_options = _SamplingOptions.model_validate(opts.model_dump(include=set(_SAMPLING_KEYS)))
        self._params = SamplingParams(**self._sampling_options.model_dump())
        self._max_memento_tokens = opts.max_memento_tokens
        self._model_info: ModelInfo = model_info or DEFAULT_MODEL_INFO
        validate_model_info(self._model_info)
        tok = backend.tokenizer
        self._tok = tok
        self._encoder = TurnEncoder(tok)
        ids = backend.memento_ids
        self._summary_end = ids.summary_end
        self._im_end = int(tok.convert_tokens_to_ids(IM_END))
        eos = getattr(tok, "eos_token_id", None)
        self._stops = tuple(t for t in (self._im_end, eos) if isinstance(t, int))
        self._closure_prefix = self._encoder.encode_text(CLOSURE_PREFIX)
        self._sessions: dict[str, _ClientSession] = {}
        # Sessions restored by load_state and not used since: a new session id may take one over (see _adopt).
        self._adoptable: set[str] = set()
        self._lock = threading.Lock()
        self._cur_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.last_session_id: str | None = None
        self.call_count = 0

    @classmethod
    def from_model(cls, model: str, *, backend_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> Self:
        """Build a client on a :class:`~autogen_ext_memento.TransformersBackend` loading ``model`` (path or name)."""
        from .backends import TransformersBackend

        return cls(TransformersBackend(model, **dict(backend_kwargs or {})), **kwargs)

    # --- public helpers --------------------------------------------------------------------------------------
    @property
    def backend(self) -> MementoBackend:
        """The backend this client drives."""
        return self._backend

    def session_stats(self, session_id: str | None = None) -> SessionStats | None:
        """Live/peak/AUC KV accounting of a session (default: the last one used)."""
        sid = session_id or self.last_session_id
        return self._backend.stats(sid) if sid is not None else None

    def session_ids(self) -> list[str]:
        """Sessions the backend currently holds."""
        return self._backend.session_ids()

    def _resolve_session(self, extra: Mapping[str, Any]) -> str:
        explicit = extra.get("session_id")
        if explicit is not None:
            return str(explicit)
        try:
            return str(MessageHandlerContext.agent_id())
        except RuntimeError:
            return self._session_id or "default"

    def _sampling(self, extra: Mapping[str, Any]) -> SamplingParams:
        """The call's sampling parameters: the client's, overridden by ``extra_create_args`` under the same rules."""
        unknown = set(extra) - _SAMPLING_KEYS - {"session_id"}
        if unknown:
            raise ValueError(f"unsupported extra_create_args: {sorted(unknown)}")
        values = {**self._sampling_options.model_dump(), **{k: v for k, v in extra.items() if k in _SAMPLING_KEYS}}
        try:
            opts = _SamplingOptions.model_validate(values)
        except ValidationError as e:
            raise ValueError(f"invalid extra_create_args: {validation_message(e)}") from None
        return SamplingParams(**opts.model_dump(), stop_token_ids=self._stops)

    # --- the call --------------------------------------------------------------------------------------------
    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def _run(
        self,
        sid: str,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        params: SamplingParams,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None,
    ) -> _Outcome:
        with self._lock:
            state = self._sessions.get(sid)
            if state is None:
                state = self._adopt(sid, messages, tools) or _ClientSession()
                self._sessions[sid] = state
            self._adoptable.discard(sid)
        with state.lock:
            return self._run_locked(state, sid, messages, tools, tool_choice, json_output, params, cancel, on_text)

    def _adopt(
        self, sid: str, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> _ClientSession | None:
        """Hand a restored session to a new session id when the history is that session's own.

        Inside a team the session id is the agent's ``AgentId``, which holds the team's random id: a team restarted
        from saved state has new ids. The restored session whose generated turns the history contains is the one
        this agent had (other agents' turns arrive as user messages), so its sampled tokens apply.
        """
        if not self._adoptable:
            return None
        bodies = {t.body for t in render(messages, tools).turns if t.generated}
        if not bodies:
            return None
        overlap = {old: len(bodies & self._sessions[old].overrides.keys()) for old in self._adoptable}
        best = max(overlap, key=lambda k: overlap[k])
        if overlap[best] == 0:
            return None
        self._adoptable.discard(best)
        logger.debug("session %s continues restored session %s", sid, best)
        return self._sessions.pop(best)

    def _run_locked(
        self,
        state: _ClientSession,
        sid: str,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        params: SamplingParams,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None,
    ) -> _Outcome:
        if state.renderer is None:
            state.renderer = IncrementalRenderer(self._encoder)
        history = state.renderer.render(messages, tools, state.overrides)
        rendering = history.rendering
        cost = CallCost()
        closure_text = ""
        if rendering.pending_closure is not None:
            closure_text = self._write_closure(state, sid, history, params, cancel, on_text, cost)
            rendering = rendering.with_closure(closure_text)
        ids = history.prompt_ids(self._encoder, state.overrides, closure_text or None)
        stream = _TextStream(self, on_text)
        res = self._backend.generate(sid, ids, params, on_token=stream.push if on_text else None, cancel=cancel)
        if res.finish_reason == "cancelled":
            raise asyncio.CancelledError()
        cost.add(res)
        gen = list(res.token_ids)
        stop = gen[-1] if gen and gen[-1] in self._stops and res.finish_reason == "stop" else None
        body = gen[:-1] if stop is not None else gen
        read = read_completion(self._decode(body), res.finish_reason, tool_choice, sid)
        content, thought_rest = read.content, read.thought
        # Remember the exact sampled ids under the body the next render will produce for this message, and forget
        # bodies the history no longer holds.
        canonical = assistant_body(thought_rest, content)
        state.overrides[canonical] = body + ([stop] if stop is not None and stop != self._im_end else [])
        used = {t.body for t in rendering.turns if t.generated} | {closure_text, canonical}
        for key in [k for k in state.overrides if k not in used]:
            del state.overrides[key]

        if json_output is not None and json_output is not False and isinstance(content, str):
            validate_json(content, json_output)
        thought = (closure_text + (thought_rest or "")) or None
        usage = RequestUsage(prompt_tokens=cost.prompt_tokens, completion_tokens=cost.completion_tokens)
        result = CreateResult(finish_reason=read.finish, content=content, usage=usage, cached=False, thought=thought)
        stats = self._backend.stats(sid)
        log_call(sid, cost, closure=bool(closure_text), stats=stats)
        return _Outcome(result, stats)

    def _write_closure(
        self,
        state: _ClientSession,
        sid: str,
        history: RenderedHistory,
        params: SamplingParams,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None,
        cost: CallCost,
    ) -> str:
        """Let the model write the memento of the open observation block; return the closure body text."""
        enc = self._encoder
        ids = history.upto_closure_ids() + enc.header("assistant") + self._closure_prefix
        stream = _TextStream(self, on_text)
        if on_text is not None:
            on_text(CLOSURE_PREFIX)
        memento_params = SamplingParams(
            max_new_tokens=self._max_memento_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            stop_token_ids=(self._summary_end, *self._stops),
        )
        res = self._backend.generate(sid, ids, memento_params, on_token=stream.push if on_text else None, cancel=cancel)
        if res.finish_reason == "cancelled":
            raise asyncio.CancelledError()
        cost.add(res)
        body_ids = self._closure_prefix + res.token_ids
        if not res.token_ids or res.token_ids[-1] != self._summary_end:
            # Documented forced closure: a memento cut by its budget (or by a stray stop token) is terminated here.
            body_ids = body_ids + [self._summary_end]
            event_logger.info(
                MementoMalformedOutputEvent(session_id=sid, problem="memento not terminated", forced=True)
            )
            if on_text is not None:
                on_text(self._decode([self._summary_end]))
        closure_text = self._decode(body_ids)
        state.overrides[closure_text] = body_ids
        return closure_text

    def _finish(self, result: CreateResult, messages: Sequence[LLMMessage], tools: Sequence[Any]) -> None:
        self.call_count += 1
        self._cur_usage = result.usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + result.usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + result.usage.completion_tokens,
        )
        if not event_logger.isEnabledFor(logging.INFO):
            return  # dumping every message costs milliseconds on a long history; nobody would read it
        event_logger.info(
            LLMCallEvent(
                messages=[m.model_dump() for m in messages],
                response=result.model_dump(),
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                tools=[t if isinstance(t, dict) else t.schema for t in tools],
            )
        )

    def _prepare(
        self,
        json_output: bool | type[BaseModel] | None,
        tools: Sequence[Tool | ToolSchema],
        extra: Mapping[str, Any],
    ) -> tuple[str, SamplingParams]:
        """Validate a call's arguments against the model info; pick its session and sampling parameters."""
        if json_output not in (None, False) and not self._model_info["json_output"]:
            raise ValueError("json_output requested but model_info['json_output'] is False")
        if tools and not self._model_info["function_calling"]:
            raise ValueError("tools given but model_info['function_calling'] is False")
        sid = self._resolve_session(extra)
        self.last_session_id = sid
        return sid, self._sampling(extra)

    def create_blocking(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
    ) -> CreateResult:
        """:meth:`create` without an event loop, for evaluation loops and scripts (blocks the calling thread)."""
        sid, params = self._prepare(json_output, tools, extra_create_args)
        outcome = self._run(sid, messages, tools, tool_choice, json_output, params, threading.Event(), None)
        self._finish(outcome.result, messages, tools)
        return outcome.result

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Generate one completion for the calling agent's session (blocking work runs in a thread)."""
        sid, params = self._prepare(json_output, tools, extra_create_args)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            None, self._run, sid, messages, tools, tool_choice, json_output, params, cancel, None
        )
        fut.add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
        if cancellation_token is not None:
            cancellation_token.link_future(fut)
        try:
            outcome = await fut
        except asyncio.CancelledError:
            cancel.set()
            raise
        self._finish(outcome.result, messages, tools)
        return outcome.result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream string deltas (closure memento, reasoning, answer or tool call text), then one ``CreateResult``."""
        sid, params = self._prepare(json_output, tools, extra_create_args)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        def work() -> _Outcome:
            try:
                return self._run(sid, messages, tools, tool_choice, json_output, params, cancel, on_text)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        def on_done(f: asyncio.Future[_Outcome]) -> None:
            if f.cancelled():
                # The token cancelled the call: stop the decode loop at its next token and wake the consumer now
                # rather than when the worker thread returns.
                cancel.set()
                queue.put_nowait(None)

        fut = loop.run_in_executor(None, work)
        fut.add_done_callback(on_done)
        if cancellation_token is not None:
            cancellation_token.link_future(fut)
        try:
            while True:
                delta = await queue.get()
                if delta is None or fut.cancelled():
                    break
                yield delta
            outcome = await fut
        finally:
            if not fut.done() or fut.cancelled():
                cancel.set()  # the consumer stopped early or was cancelled: let the worker thread return
        self._finish(outcome.result, messages, tools)
        yield outcome.result

    # --- state -----------------------------------------------------------------------------------------------
    async def save_state(self) -> Mapping[str, Any]:
        """Save the client's sessions (the token ids sampled for every generated turn still in use) and usage.

        The backend's KV is not saved: a client loaded from this state prefills each session's history once, from
        the very same prompt tokens, and then continues exactly as the saving client would have.
        """
        saved = await asyncio.to_thread(self._snapshot)
        state = MementoChatCompletionClientState(
            sessions=saved,
            last_session_id=self.last_session_id,
            call_count=self.call_count,
            total_prompt_tokens=self._total_usage.prompt_tokens,
            total_completion_tokens=self._total_usage.completion_tokens,
        )
        return state.model_dump(mode="json")

    def _snapshot(self) -> dict[str, _SessionState]:
        with self._lock:
            sessions = dict(self._sessions)
        saved: dict[str, _SessionState] = {}
        for sid, session in sessions.items():
            with session.lock:  # not while a call of this session is between its two generations
                saved[sid] = _SessionState(overrides=[(k, list(v)) for k, v in session.overrides.items()])
        return saved

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`save_state` saved, replacing this client's sessions.

        A restored session serves its saved session id; a call under a new id (an agent of a team restarted from
        saved state gets a new ``AgentId``) takes over the restored session whose generated turns its history holds.

        Raises:
            ValueError: ``state`` is not a saved state of this client (or of a version this release cannot read).
        """
        try:
            loaded = MementoChatCompletionClientState.model_validate(dict(state))
        except ValidationError as e:
            raise ValueError(f"not a MementoChatCompletionClient state: {validation_message(e)}") from None
        sessions = {
            sid: _ClientSession(overrides={body: list(ids) for body, ids in s.overrides})
            for sid, s in loaded.sessions.items()
        }
        with self._lock:
            self._sessions = sessions
            self._adoptable = set(sessions)
        self.last_session_id = loaded.last_session_id
        self.call_count = loaded.call_count
        self._total_usage = RequestUsage(
            prompt_tokens=loaded.total_prompt_tokens, completion_tokens=loaded.total_completion_tokens
        )

    # --- accounting ------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Release the backend's sessions."""
        self._backend.close()

    def actual_usage(self) -> RequestUsage:
        return self._cur_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Logical prompt tokens of ``messages`` with the real tokenizer (including the generation prompt)."""
        return len(self._encoder.encode(render(messages, tools, add_generation_prompt=True)))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The model length minus the tokens that stay *live* after the rendered history's blocks are evicted."""
        ids = self._encoder.encode(render(messages, tools, add_generation_prompt=True))
        kept = len(kept_positions(ids, self._backend.memento_ids, self._backend.memento_config))
        return max(0, self._backend.max_model_len - kept)

    @property
    def capabilities(self) -> ModelCapabilities:
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    # --- component -------------------------------------------------------------------------------------------
    def _to_config(self) -> MementoChatCompletionClientConfig:
        p = self._params
        return MementoChatCompletionClientConfig(
            backend=self._backend.dump_component(),
            session_id=self._session_id,
            max_new_tokens=p.max_new_tokens,
            max_memento_tokens=self._max_memento_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            seed=p.seed,
            model_info=self._model_info,
        )

    @classmethod
    def _from_config(cls, config: MementoChatCompletionClientConfig) -> Self:
        backend = MementoBackend.load_component(config.backend)
        return cls(
            backend,
            session_id=config.session_id,
            max_new_tokens=config.max_new_tokens,
            max_memento_tokens=config.max_memento_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            seed=config.seed,
            model_info=config.model_info,
        )
