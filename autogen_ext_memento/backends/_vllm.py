"""A memento backend speaking to an ``autogen-memento serve`` vLLM server over its session HTTP API."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from autogen_core import Component
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

from ..grammar import MementoConfig, MementoTokenIds
from ._base import (
    FinishReason,
    GenerationResult,
    MementoBackend,
    SamplingParams,
    SessionStats,
    TokenCallback,
    build_config,
    portable_model_name,
    resolve_model_path,
)
from ._vllm_turn import RETRY_ERRORS, RETRY_STATUSES, SESSION_HEADER, Cancelled, Retryable, SessionTurn

_T = TypeVar("_T")


class VLLMBackendConfig(BaseModel):
    """Configuration of :class:`VLLMBackend`."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Server (or router) root, e.g. http://127.0.0.1:8000 (no /v1).")
    tokenizer: str = Field(
        description="Local directory, hub name or shipped name (tiny) of the served model's tokenizer."
    )
    model_name: str | None = None
    timeout_s: float = Field(default=600.0, gt=0, description="Longest wait for a response or a streamed chunk.")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait to open a connection.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries per server on connection errors/502/503/504.")
    retry_backoff_s: float = Field(default=0.25, ge=0, description="First retry delay; doubled per retry.")
    retry_backoff_max_s: float = Field(default=8.0, ge=0, description="Cap on one retry delay.")
    fallback_urls: list[str] = Field(
        default_factory=list, description="Servers tried in order once base_url stays unreachable after its retries."
    )
    stream: bool = Field(default=True, description="Ask for streamed turns when a caller wants tokens as they come.")
    max_connections: int = Field(default=64, ge=1, description="Size of the keep-alive connection pool.")
    trust_remote_code: bool = False
    cache_salt: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The tenant's secret: its sessions are invisible to, and not adoptable by, other salts.",
    )


def record_server_turn(st: SessionStats, out: Mapping[str, Any], prompt_len: int, generated: int, lost: bool) -> None:
    """Add one answer of the session API (``/v1/memento/sessions/{id}/generate``) to a session's accounting."""
    stats = out.get("stats") or {}
    sess = out.get("session") or {}
    st.prefill_tokens += int(out.get("prompt_tokens", prompt_len))
    st.generated_tokens += generated
    st.evictions += int(stats.get("evictions", 0))
    st.evicted_tokens += int(stats.get("evicted_tokens", 0))
    st.rebuilds += int(bool(stats.get("rebuilt", False)) or lost)
    st.anomalies += int(stats.get("anomalies", 0))
    st.live_kv_tokens = int(sess.get("kv_tokens", 0))
    st.peak_kv_tokens = max(st.peak_kv_tokens, int(stats.get("peak_live_tokens", 0)))
    st.logical_tokens = int(sess.get("logical_tokens", prompt_len + generated - 1))
    st.full_context_kv_tokens = st.logical_tokens


class VLLMBackend(MementoBackend, Component[VLLMBackendConfig]):
    """Memento sessions served by vLLM with the memento plugin (``autogen-memento serve``).

    Each :meth:`generate` posts the session's whole logical token sequence to
    ``/v1/memento/sessions/{id}/generate``; the server adopts the session's compacted KV when the sequence extends
    it and prefills only the new tokens, or rebuilds it otherwise. The memento rule, token ids and ``max_model_len``
    are read from the server (``/v1/memento/config``), so client and server cannot disagree.

    **Transport.** One pooled keep-alive ``httpx`` client serves every call (thread-safe; the chat client runs turns
    in worker threads). Every request about a session carries its id in the ``X-Session-ID`` header, so a router with
    session affinity (vllm-router ``--policy consistent_hash``) keeps each session on the replica that holds its KV.
    Connection errors and 502/503/504 are retried with exponential backoff, then the next of ``fallback_urls`` is
    tried; an interrupted streamed turn resumes from the tokens already received.

    **Streaming.** When ``on_token`` is given (``create_stream``), the turn is requested with ``"stream": true`` and
    an SSE or NDJSON answer is read chunk by chunk: each event ``{"token_ids": [...]}`` carries new tokens, the last
    one also ``finish_reason`` and the fields of the non-streamed answer. A server that answers plain JSON is read as
    before (tokens reported once the turn is complete). ``cancel`` is checked between chunks; closing the stream
    aborts the request on the server.

    **Lost sessions.** A turn that a replica answers without adopting any KV of a session this backend has driven
    before (the replica restarted, the session expired, or the turn went to another replica), or that is answered
    404 (unknown session; the turn is re-sent once with ``"rebuild": true``), is a rebuild: the whole logical
    history is in every request, so nothing is lost; ``GenerationResult.rebuilt`` is set (the chat client logs a
    ``MementoSessionRebuildEvent``) and the session's ``rebuilds`` counter grows.

    Args:
        base_url: the server or router root (``http://host:port``).
        tokenizer: the served model's tokenizer (a path or name, or a loaded tokenizer).
        model_name: a display name (default: the tokenizer path).
        timeout_s: longest wait for a response or for the next streamed chunk.
        connect_timeout_s: longest wait to open a connection.
        max_retries: retries per server on connection errors and 502/503/504.
        retry_backoff_s: first retry delay (doubled per retry, capped at ``retry_backoff_max_s``).
        fallback_urls: servers tried in order once the current one stays unreachable.
        stream: request streamed turns when tokens are wanted as they come.
        max_connections: size of the connection pool.
        cache_salt: the tenant's secret (vLLM's ``cache_salt``): sent with every turn and read/close call, so
            this backend sees and adopts only its own sessions.

    Example:

    .. code-block:: python

        from autogen_ext_memento.backends import VLLMBackend

        backend = VLLMBackend("http://127.0.0.1:8000", "path/to/memento-model")
    """

    component_type = "memento_backend"
    component_config_schema = VLLMBackendConfig
    component_provider_override = "autogen_ext_memento.backends.VLLMBackend"

    def __init__(
        self,
        base_url: str,
        tokenizer: str | Any,
        *,
        model_name: str | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        retry_backoff_s: float = 0.25,
        retry_backoff_max_s: float = 8.0,
        fallback_urls: Sequence[str] = (),
        stream: bool = True,
        max_connections: int = 64,
        trust_remote_code: bool = False,
        cache_salt: str | None = None,
    ) -> None:
        cfg = build_config(
            VLLMBackendConfig,
            "VLLMBackend",
            base_url=base_url,
            tokenizer=os.fspath(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else "<in-memory tokenizer>",
            model_name=model_name,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            retry_backoff_max_s=retry_backoff_max_s,
            fallback_urls=list(fallback_urls),
            stream=stream,
            max_connections=max_connections,
            trust_remote_code=trust_remote_code,
            cache_salt=cache_salt,
        )
        for url in [cfg.base_url, *cfg.fallback_urls]:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"server urls must start with http:// or https://, got {url!r}")
        self._cfg = cfg
        self._bases = [u.rstrip("/") for u in [cfg.base_url, *cfg.fallback_urls]]
        self._active = 0
        self._http_client: httpx.Client | None = None
        self._http_lock = threading.Lock()
        by_path = isinstance(tokenizer, (str, os.PathLike))
        self._tokenizer_path = portable_model_name(cfg.tokenizer) if by_path else None
        if by_path:
            from transformers import AutoTokenizer

            src = resolve_model_path(cfg.tokenizer, kind="tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code)
        self._tok = tokenizer
        self._name = cfg.model_name or self._tokenizer_path or "vllm"
        server = self._request("GET", "/v1/memento/config")
        if not isinstance(server, dict):
            raise RuntimeError(f"{self._bases[0]} has no memento session API (GET /v1/memento/config: 404)")
        self._memento = MementoConfig(**server["memento"])
        self._ids = MementoTokenIds(*server["token_ids"])
        if MementoTokenIds.from_tokenizer(self._tok) != self._ids:
            raise ValueError("the tokenizer's memento token ids differ from the server's")
        self._max_len = int(server["max_model_len"])
        self._stats: dict[str, SessionStats] = {}
        self._lock = threading.Lock()

    # --- HTTP ------------------------------------------------------------------------------------------------------
    @property
    def _http(self) -> httpx.Client:
        """The pooled keep-alive client (created on first use, again after :meth:`close`)."""
        with self._http_lock:
            if self._http_client is None or self._http_client.is_closed:
                cfg = self._cfg
                self._http_client = httpx.Client(
                    timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
                    limits=httpx.Limits(
                        max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
                    ),
                    headers={"Content-Type": "application/json"},
                )
            return self._http_client

    @staticmethod
    def _headers(session_id: str | None) -> dict[str, str]:
        return {SESSION_HEADER: session_id} if session_id is not None else {}

    def _with_retries(self, attempt: Callable[[str], _T], what: str, cancel: threading.Event | None = None) -> _T:
        """Run ``attempt(base_url)`` until it succeeds: retried with backoff per server, then on the next server."""
        cfg = self._cfg
        last: Exception | None = None
        start = self._active
        for k in range(len(self._bases)):
            idx = (start + k) % len(self._bases)
            for retry in range(cfg.max_retries + 1):
                if retry:
                    delay = min(cfg.retry_backoff_max_s, cfg.retry_backoff_s * 2 ** (retry - 1))
                    if cancel is not None and cancel.wait(delay):
                        raise Cancelled()
                    if cancel is None:
                        time.sleep(delay)
                try:
                    out = attempt(self._bases[idx])
                except RETRY_ERRORS as e:
                    last = e
                    continue
                self._active = idx
                return out
        tried = ", ".join(self._bases)
        raise RuntimeError(f"{what}: no server answered after {cfg.max_retries + 1} tries each ({tried}): {last}")

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one JSON request with retries; the decoded answer, or ``None`` on 404."""

        def attempt(base: str) -> Any:
            resp = self._http.request(method, base + path, json=body, headers=self._headers(session))
            if resp.status_code in RETRY_STATUSES:
                raise Retryable(f"HTTP {resp.status_code}")
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status_code}: {resp.text}")
            return json.loads(resp.text or "null")

        return self._with_retries(attempt, f"{method} {path}")

    @staticmethod
    def _sid(session_id: str) -> str:
        return urllib.parse.quote(session_id, safe="")

    # --- MementoBackend ----------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._name

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
        turn = SessionTurn(
            self._http,
            f"/v1/memento/sessions/{self._sid(session_id)}/generate",
            self._headers(session_id),
            stream=self._cfg.stream,
            max_len=self._max_len,
            cache_salt=self._cfg.cache_salt,
            session_id=session_id,
            prompt=[int(t) for t in prompt_ids],
            params=params,
            on_token=on_token,
            cancel=cancel,
        )
        with self._lock:
            turn.held = session_id in self._stats
        try:
            out = self._with_retries(turn.attempt, f"session {session_id!r} turn", cancel)
        except Cancelled:
            return GenerationResult(list(turn.got), "cancelled", 0, False, 0)
        tokens = list(turn.got)
        lost = turn.lost_session(out)
        stats = out.get("stats") or {}
        reason: FinishReason = "stop" if out.get("finish_reason") == "stop" else "length"
        self._record(session_id, out, len(prompt_ids), len(tokens), lost)
        return GenerationResult(
            tokens,
            reason,
            int(out.get("prompt_tokens", turn.sent_len)),
            bool(out.get("rebuilt", False)) or lost,
            int(out.get("evictions", 0)),
            int(stats.get("forced_block_ends", 0)),
        )

    def _record(self, session_id: str, out: dict[str, Any], prompt_len: int, generated: int, lost: bool) -> None:
        with self._lock:
            st = self._stats.setdefault(session_id, SessionStats(session_id))
            record_server_turn(st, out, prompt_len, generated, lost)

    def stats(self, session_id: str) -> SessionStats | None:
        with self._lock:
            return self._stats.get(session_id)

    def _tenant_request(self, what: str, session_id: str | None = None) -> Any:
        """A read or close request of this backend's tenant: the salted POST form when a salt is set (a router may
        drop query strings), else the plain GET/DELETE."""
        salt = self._cfg.cache_salt
        base = "/v1/memento/sessions" + (f"/{self._sid(session_id)}" if session_id is not None else "")
        if salt is not None:
            return self._request("POST", f"{base}/{what}", {"cache_salt": salt}, session=session_id)
        return self._request("DELETE" if what == "close" else "GET", base, session=session_id)

    def session_info(self, session_id: str) -> dict[str, Any] | None:
        """The server's accounting of one session (pages, KV tokens, logical tokens, idle seconds)."""
        info = self._tenant_request("info", session_id)
        return info if isinstance(info, dict) else None

    def session_ids(self) -> list[str]:
        """The sessions of this backend's tenant the server holds (through a router: one replica's)."""
        out = self._tenant_request("list") or {}
        return [str(s["session_id"]) for s in out.get("sessions", [])]

    def close_session(self, session_id: str) -> None:
        self._tenant_request("close", session_id)
        with self._lock:
            self._stats.pop(session_id, None)

    def close(self) -> None:
        """Release the sessions this backend drove and the connection pool (a later call opens a new pool).

        Other clients' sessions on the same server (``session_ids`` lists every session of the namespace) are left
        alone: closing one backend must not cut another process's agents off their KV.
        """
        try:
            with self._lock:
                mine = list(self._stats)
            for sid in mine:
                self.close_session(sid)
        finally:
            with self._http_lock:
                if self._http_client is not None:
                    self._http_client.close()

    # --- component ---------------------------------------------------------------------------------------------------
    def _to_config(self) -> VLLMBackendConfig:
        if self._tokenizer_path is None:
            raise ValueError("a backend built with a tokenizer object cannot be serialised; pass its path")
        return self._cfg.model_copy(update={"tokenizer": self._tokenizer_path, "model_name": self._name})

    @classmethod
    def _from_config(cls, config: VLLMBackendConfig) -> Self:
        rest = {k: v for k, v in config if k not in ("base_url", "tokenizer")}  # the keywords are the fields
        return cls(config.base_url, config.tokenizer, **rest)
