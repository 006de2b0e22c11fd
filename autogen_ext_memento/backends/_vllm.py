"""A memento backend speaking to an ``autogen-memento serve`` vLLM server over its session HTTP API."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

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


class VLLMBackendConfig(BaseModel):
    """Configuration of :class:`VLLMBackend`."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Server root, e.g. http://127.0.0.1:8000 (no /v1).")
    tokenizer: str = Field(
        description="Local directory, hub name or shipped name (tiny) of the served model's tokenizer."
    )
    model_name: str | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    trust_remote_code: bool = False


class VLLMBackend(MementoBackend, Component[VLLMBackendConfig]):
    """Memento sessions served by vLLM with the memento plugin (``autogen-memento serve``).

    Each :meth:`generate` posts the session's whole logical token sequence to
    ``/v1/memento/sessions/{id}/generate``; the server adopts the session's compacted KV when the sequence extends
    it and prefills only the new tokens, or rebuilds it otherwise. The memento rule, token ids and ``max_model_len``
    are read from the server (``/v1/memento/config``), so client and server cannot disagree.

    Streaming is not used: ``on_token`` is called for each token once the turn is complete, and ``cancel`` is only
    checked before the request is sent.

    Args:
        base_url: the server root (``http://host:port``).
        tokenizer: the served model's tokenizer (a path or name, or a loaded tokenizer).
        model_name: a display name (default: the tokenizer path).
        timeout_s: HTTP timeout of one turn.

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
        trust_remote_code: bool = False,
    ) -> None:
        cfg = build_config(
            VLLMBackendConfig,
            "VLLMBackend",
            base_url=base_url,
            tokenizer=tokenizer if isinstance(tokenizer, str) else "<in-memory tokenizer>",
            model_name=model_name,
            timeout_s=timeout_s,
            trust_remote_code=trust_remote_code,
        )
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {cfg.base_url!r}")
        self._base = cfg.base_url.rstrip("/")
        self._timeout = cfg.timeout_s
        self._trust = cfg.trust_remote_code
        self._tokenizer_path = portable_model_name(cfg.tokenizer) if isinstance(tokenizer, str) else None
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            src = resolve_model_path(cfg.tokenizer, kind="tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code)
        self._tok = tokenizer
        self._name = cfg.model_name or self._tokenizer_path or "vllm"
        cfg = self._request("GET", "/v1/memento/config")
        self._memento = MementoConfig(**cfg["memento"])
        self._ids = MementoTokenIds(*cfg["token_ids"])
        if MementoTokenIds.from_tokenizer(self._tok) != self._ids:
            raise ValueError("the tokenizer's memento token ids differ from the server's")
        self._max_len = int(cfg["max_model_len"])
        self._stats: dict[str, SessionStats] = {}
        self._lock = threading.Lock()

    # --- HTTP ------------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self._base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return json.loads(resp.read().decode() or "null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    @staticmethod
    def _sid(session_id: str) -> str:
        return urllib.parse.quote(session_id, safe="")

    # --- MementoBackend ----------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self._tok

    @property
    def memento_ids(self) -> MementoTokenIds:
        return self._ids

    @property
    def memento_config(self) -> MementoConfig:
        return self._memento

    @property
    def max_model_len(self) -> int:
        return self._max_len

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
        if cancel is not None and cancel.is_set():
            return GenerationResult([], "cancelled", 0, False, 0)
        if not prompt_ids:
            raise ValueError("empty prompt: nothing to condition on")
        if len(prompt_ids) >= self._max_len:
            return GenerationResult([], "length", 0, False, 0)
        body = {
            "prompt_token_ids": [int(t) for t in prompt_ids],
            "max_tokens": min(params.max_new_tokens, self._max_len - len(prompt_ids)),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "seed": params.seed,
            "stop_token_ids": [int(t) for t in params.stop_token_ids],
        }
        out = self._request("POST", f"/v1/memento/sessions/{self._sid(session_id)}/generate", body)
        tokens = [int(t) for t in out["token_ids"]]
        if on_token is not None:
            for t in tokens:
                on_token(t)
        reason: FinishReason = "stop" if out["finish_reason"] == "stop" else "length"
        stats = out.get("stats") or {}
        self._record(session_id, out, len(prompt_ids), len(tokens))
        return GenerationResult(
            tokens,
            reason,
            int(out.get("prompt_tokens", len(prompt_ids))),
            bool(out.get("rebuilt", False)),
            int(out.get("evictions", 0)),
            int(stats.get("forced_block_ends", 0)),
        )

    def _record(self, session_id: str, out: dict[str, Any], prompt_len: int, generated: int) -> None:
        stats = out.get("stats") or {}
        sess = out.get("session") or {}
        with self._lock:
            st = self._stats.setdefault(session_id, SessionStats(session_id))
            st.prefill_tokens += int(out.get("prompt_tokens", prompt_len))
            st.generated_tokens += generated
            st.evictions += int(stats.get("evictions", 0))
            st.evicted_tokens += int(stats.get("evicted_tokens", 0))
            st.rebuilds += int(bool(stats.get("rebuilt", False)))
            st.anomalies += int(stats.get("anomalies", 0))
            st.live_kv_tokens = int(sess.get("kv_tokens", 0))
            st.peak_kv_tokens = max(st.peak_kv_tokens, int(stats.get("peak_live_tokens", 0)))
            st.logical_tokens = int(sess.get("logical_tokens", prompt_len + generated - 1))
            st.full_context_kv_tokens = st.logical_tokens

    def stats(self, session_id: str) -> SessionStats | None:
        with self._lock:
            return self._stats.get(session_id)

    def session_info(self, session_id: str) -> dict[str, Any] | None:
        """The server's accounting of one session (pages, KV tokens, logical tokens, idle seconds)."""
        info = self._request("GET", f"/v1/memento/sessions/{self._sid(session_id)}")
        return info if isinstance(info, dict) else None

    def session_ids(self) -> list[str]:
        out = self._request("GET", "/v1/memento/sessions") or {}
        return [str(s["session_id"]) for s in out.get("sessions", [])]

    def close_session(self, session_id: str) -> None:
        self._request("DELETE", f"/v1/memento/sessions/{self._sid(session_id)}")
        with self._lock:
            self._stats.pop(session_id, None)

    # --- component ---------------------------------------------------------------------------------------------------
    def _to_config(self) -> VLLMBackendConfig:
        if self._tokenizer_path is None:
            raise ValueError("a backend built with a tokenizer object cannot be serialised; pass its path")
        return VLLMBackendConfig(
            base_url=self._base,
            tokenizer=self._tokenizer_path,
            model_name=self._name,
            timeout_s=self._timeout,
            trust_remote_code=self._trust,
        )

    @classmethod
    def _from_config(cls, config: VLLMBackendConfig) -> Self:
        return cls(
            config.base_url,
            config.tokenizer,
            model_name=config.model_name,
            timeout_s=config.timeout_s,
            trust_remote_code=config.trust_remote_code,
        )
