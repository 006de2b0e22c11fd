"""``MementoChatCompletionClient``: an AutoGen model client that drives a memento backend, one session per agent."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, MessageHandlerContext
from autogen_core.logging import LLMCallEvent
from autogen_core.models import (
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
    validate_model_info,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ValidationError
from typing_extensions import Self

from .._checks import build_config, validation_message
from .._local_client import LocalChatCompletionClient
from ..backends import MementoBackend, SamplingParams, SessionStats
from ..chat_format import render
from ..grammar import kept_positions
from ._options import (
    DEFAULT_MODEL_INFO,
    SAMPLING_KEYS,
    ClientOptions,
    MementoChatCompletionClientConfig,
    SamplingOptions,
    call_sampling,
)
from ._sessions import ClientSession, MementoChatCompletionClientState, SavedSession, adoptable_session
from ._turn import Outcome, TextCallback, TurnRequest, TurnRunner

logger = logging.getLogger(__name__)
event_logger = logging.getLogger(EVENT_LOGGER_NAME)


class MementoChatCompletionClient(LocalChatCompletionClient, Component[MementoChatCompletionClientConfig]):
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
            ClientOptions,
            "invalid MementoChatCompletionClient arguments",
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
        self._sampling_options = SamplingOptions.model_validate(opts.model_dump(include=set(SAMPLING_KEYS)))
        self._params = SamplingParams(**self._sampling_options.model_dump())
        self._max_memento_tokens = opts.max_memento_tokens
        super().__init__(model_info or DEFAULT_MODEL_INFO)
        validate_model_info(self._model_info)
        self._turns = TurnRunner(backend, opts.max_memento_tokens)
        self._encoder = self._turns.encoder
        self._sessions: dict[str, ClientSession] = {}
        # Sessions restored by load_state and not used since: a new session id may take one over (see _adopt).
        self._adoptable: set[str] = set()
        self._lock = threading.Lock()
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
        return call_sampling(self._sampling_options, extra, self._turns.stops)

    # --- the call --------------------------------------------------------------------------------------------
    def _run(self, req: TurnRequest) -> Outcome:
        with self._lock:
            state = self._sessions.get(req.session_id)
            if state is None:
                state = self._adopt(req) or ClientSession()
                self._sessions[req.session_id] = state
            self._adoptable.discard(req.session_id)
        with state.lock:
            return self._turns.run(state, req)

    def _adopt(self, req: TurnRequest) -> ClientSession | None:
        """Give a new session id the restored session whose turns its history holds (:func:`adoptable_session`)."""
        best = adoptable_session(self._sessions, self._adoptable, req.messages, req.tools)
        if best is None:
            return None
        self._adoptable.discard(best)
        logger.debug("session %s continues restored session %s", req.session_id, best)
        return self._sessions.pop(best)

    def _finish(self, result: CreateResult, messages: Sequence[LLMMessage], tools: Sequence[Any]) -> None:
        self.call_count += 1
        self._account(result.usage)
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
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra: Mapping[str, Any],
        on_text: TextCallback | None = None,
    ) -> TurnRequest:
        """Validate a call's arguments against the model info; pick its session and sampling parameters."""
        if json_output not in (None, False) and not self._model_info["json_output"]:
            raise ValueError("json_output requested but model_info['json_output'] is False")
        if tools and not self._model_info["function_calling"]:
            raise ValueError("tools given but model_info['function_calling'] is False")
        sid = self._resolve_session(extra)
        self.last_session_id = sid
        params = self._sampling(extra)
        return TurnRequest(sid, messages, tools, tool_choice, json_output, params, threading.Event(), on_text)

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
        outcome = self._run(self._prepare(messages, tools, tool_choice, json_output, extra_create_args))
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
        req = self._prepare(messages, tools, tool_choice, json_output, extra_create_args)
        cancel = req.cancel
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._run, req)
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
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        req = self._prepare(messages, tools, tool_choice, json_output, extra_create_args, on_text)
        cancel = req.cancel

        def work() -> Outcome:
            try:
                return self._run(req)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        def on_done(f: asyncio.Future[Outcome]) -> None:
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

    def _snapshot(self) -> dict[str, SavedSession]:
        with self._lock:
            sessions = dict(self._sessions)
        return {sid: session.save() for sid, session in sessions.items()}

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
        sessions = {sid: ClientSession.restore(s) for sid, s in loaded.sessions.items()}
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
        """Release the backend sessions this client drove; other clients sharing the backend keep theirs."""
        with self._lock:
            mine = list(self._sessions)
            self._sessions.clear()
            self._adoptable.clear()
        for sid in mine:
            await asyncio.to_thread(self._backend.close_session, sid)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Logical prompt tokens of ``messages`` with the real tokenizer (including the generation prompt)."""
        return len(self._encoder.encode(render(messages, tools, add_generation_prompt=True)))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The model length minus the tokens that stay *live* after the rendered history's blocks are evicted."""
        ids = self._encoder.encode(render(messages, tools, add_generation_prompt=True))
        kept = len(kept_positions(ids, self._backend.memento_ids, self._backend.memento_config))
        return max(0, self._backend.max_model_len - kept)

    # --- component -------------------------------------------------------------------------------------------
    def _to_config(self) -> MementoChatCompletionClientConfig:
        return MementoChatCompletionClientConfig(
            backend=self._backend.dump_component(),
            session_id=self._session_id,
            max_memento_tokens=self._max_memento_tokens,
            model_info=self._model_info,
            **self._sampling_options.model_dump(),
        )

    @classmethod
    def _from_config(cls, config: MementoChatCompletionClientConfig) -> Self:
        rest = {k: v for k, v in config if k != "backend"}  # the keywords are the fields
        return cls(MementoBackend.load_component(config.backend), **rest)
