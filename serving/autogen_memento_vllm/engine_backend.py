"""A :class:`~autogen_ext_memento.backends.MementoBackend` over the engine of the API server it runs in.

The server's chat route drives a :class:`~autogen_ext_memento.MementoChatCompletionClient` (the same renderer and
closure protocol as a client-side agent) whose backend is this one: each :meth:`EngineBackend.generate` runs the
session API's turn (:func:`~autogen_memento_vllm.sessions.run_turn`) on the server's event loop, in process, with
the tenant's ``cache_salt``. The chat client calls it from a worker thread, so the loop stays free while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence
from typing import Any

from autogen_ext_memento.backends import (
    GenerationResult,
    MementoBackend,
    SamplingParams,
    SessionStats,
    TokenCallback,
    record_server_turn,
)
from autogen_ext_memento.grammar import MementoConfig, MementoTokenIds

from .turns import GenerateBody, rpc, run_turn

__all__ = ["EngineBackend"]


class EngineBackend(MementoBackend):
    """Memento sessions of the in-process engine, for one tenant (``cache_salt``).

    Args:
        engine: the API server's engine client.
        loop: the event loop the engine client runs on.
        tokenizer: the served model's (Hugging Face) tokenizer.
        server_config: the scheduler's ``config`` answer (memento rule, token ids, ``max_model_len``).
        model_name: the served model name.
        cache_salt: the tenant's salt (``None``: the default namespace).
        memento: per-request overrides of the memento rule (``vllm_xargs.memento``), e.g.
            ``{"keep_last_n_blocks": -1}`` for full attention on the same rendering.
    """

    def __init__(
        self,
        engine: Any,
        loop: asyncio.AbstractEventLoop,
        tokenizer: Any,
        server_config: dict[str, Any],
        model_name: str,
        cache_salt: str | None = None,
        memento: dict[str, Any] | None = None,
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._tok = tokenizer
        self._memento = MementoConfig(**server_config["memento"])
        self._ids = MementoTokenIds(*server_config["token_ids"])
        if MementoTokenIds.from_tokenizer(tokenizer) != self._ids:
            raise ValueError("the tokenizer's memento token ids differ from the engine's")
        self._max_len = int(server_config["max_model_len"])
        self._name = model_name
        self._salt = cache_salt
        self._overrides = memento
        self._stats: dict[str, SessionStats] = {}
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._name

    def _run(self, coro: Any, cancel: threading.Event | None = None) -> Any:
        """Run ``coro`` on the server's loop and wait for it (cancelled, and aborted in the engine, on ``cancel``)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        while True:
            try:
                return fut.result(timeout=0.05 if cancel is not None else None)
            except concurrent.futures.TimeoutError:
                if cancel is not None and cancel.is_set():
                    fut.cancel()
                    raise concurrent.futures.CancelledError() from None

    def generate(
        self,
        session_id: str,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        early = self._not_started(prompt_ids, cancel)
        if early is not None:
            return early
        body = GenerateBody(
            prompt_token_ids=[int(t) for t in prompt_ids],
            max_tokens=min(params.max_new_tokens, self._max_len - len(prompt_ids)),
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            stop_token_ids=[int(t) for t in params.stop_token_ids],
            cache_salt=self._salt,
            memento=self._overrides,
        )
        try:
            out = self._run(run_turn(self._engine, session_id, body), cancel)
        except concurrent.futures.CancelledError:
            return GenerationResult([], "cancelled", 0, False, 0)
        tokens = [int(t) for t in out["token_ids"]]
        if on_token is not None:
            for t in tokens:
                on_token(t)
        with self._lock:
            st = self._stats.setdefault(session_id, SessionStats(session_id))
            record_server_turn(st, out, len(prompt_ids), len(tokens), False)
        stats = out.get("stats") or {}
        return GenerationResult(
            tokens,
            "stop" if out["finish_reason"] == "stop" else "length",
            int(out["prompt_tokens"]),
            bool(out["rebuilt"]),
            int(out["evictions"]),
            int(stats.get("forced_block_ends", 0)),
        )

    def stats(self, session_id: str) -> SessionStats | None:
        with self._lock:
            return self._stats.get(session_id)

    def session_ids(self) -> list[str]:
        return [str(s["session_id"]) for s in self._run(rpc(self._engine, "list", None, self._salt)) or []]

    def close_session(self, session_id: str) -> None:
        self._run(rpc(self._engine, "close", session_id, self._salt))
        with self._lock:
            self._stats.pop(session_id, None)
