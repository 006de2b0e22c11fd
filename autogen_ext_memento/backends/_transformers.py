"""In-process transformers backend with physical KV eviction and logical RoPE positions."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from autogen_core import Component
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import Self

from .._tokens import add_memento_tokens
from ..grammar import BlockTracker, MementoConfig, MementoTokenIds, SlotMap
from ._base import (
    FinishReason,
    GenerationResult,
    MementoBackend,
    SamplingParams,
    SessionStats,
    TokenCallback,
    build_config,
    check_torch_device,
    portable_model_name,
    resolve_model_path,
)
from ._kv_cache import KVRunner, KVSession
from ._sampling import sample_token

DType = Literal["float32", "bfloat16", "float16", "auto"]
LogitsProcessor = Callable[[str, list[int], Any], Any]


class TransformersBackendConfig(BaseModel):
    """Configuration of :class:`TransformersBackend`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="Local directory, hub name (org/name) or shipped name (tiny) of a causal LM and its tokenizer."
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer path or name if not the model's.")
    device: str = "cpu"
    dtype: DType = "float32"
    memento: MementoConfig = Field(default_factory=MementoConfig)
    max_model_len: int | None = Field(default=None, ge=8)
    max_sessions: int = Field(default=64, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    trust_remote_code: bool = False

    @field_validator("device")
    @classmethod
    def _device_is_available(cls, value: str) -> str:
        return check_torch_device(value)


# Stands in for the model name while an already loaded model's arguments are validated.
_IN_MEMORY = "<in-memory model>"


class TransformersBackend(MementoBackend, Component[TransformersBackendConfig]):
    """An in-process memento backend on any transformers causal LM (CPU or GPU).

    Each session keeps a ``DynamicCache``. New tokens are computed at their *logical* positions (explicit
    ``position_ids``); when the :class:`~autogen_ext_memento.grammar.BlockTracker` reports a completed memento,
    the block's entries are cut out of every layer's keys and values, so the cache shrinks while RoPE phases of
    everything kept stay as computed. Prompts are prefilled in segments that end at each eviction trigger, which
    makes prefill of blocks that arrive inside a prompt exactly equal to the stage-2 training mask.

    Args:
        model: a local directory, a hub name (``org/name``), ``"tiny"`` (the shipped tiny memento model), or an
            already loaded ``PreTrainedModel``.
        tokenizer: a tokenizer (or its path); defaults to the model's.
        memento: the memento rule (a :class:`~autogen_ext_memento.grammar.MementoConfig` or its fields as a dict).
        device: torch device; checked against what this torch build has.
        dtype: weights dtype (``float32`` is exact on CPU).
        max_model_len: logical length limit; default the model's ``max_position_embeddings``.
        max_sessions: sessions kept; the least recently used is dropped beyond it.
        num_threads: torch intra-op threads (measure: on a busy 2-core machine 1 can beat 2).
        logits_processor: optional ``(session_id, generated_ids, logits) -> logits`` hook applied before sampling
            (constrained decoding, scripted tests); not serialised.

    Example:

    .. code-block:: python

        from autogen_ext_memento import TransformersBackend, MementoConfig

        backend = TransformersBackend("path/to/memento-model", memento=MementoConfig(keep_last_n_blocks=0))
    """

    component_type = "memento_backend"
    component_config_schema = TransformersBackendConfig
    component_provider_override = "autogen_ext_memento.TransformersBackend"

    def __init__(
        self,
        model: str | Any,
        tokenizer: str | Any | None = None,
        *,
        memento: MementoConfig | Mapping[str, Any] | None = None,
        device: str = "cpu",
        dtype: DType = "float32",
        max_model_len: int | None = None,
        max_sessions: int = 64,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        logits_processor: LogitsProcessor | None = None,
    ) -> None:
        import torch

        cfg = build_config(
            TransformersBackendConfig,
            "TransformersBackend",
            model=model if isinstance(model, str) else _IN_MEMORY,
            tokenizer=tokenizer if isinstance(tokenizer, str) else None,
            device=device,
            dtype=dtype,
            memento=memento if memento is not None else MementoConfig(),
            max_model_len=max_model_len,
            max_sessions=max_sessions,
            num_threads=num_threads,
            trust_remote_code=trust_remote_code,
        )
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        self._torch = torch
        name = cfg.model if isinstance(model, str) else getattr(model, "name_or_path", None)
        self._model_path = portable_model_name(name) if name else None
        self._tokenizer_path = portable_model_name(cfg.tokenizer) if cfg.tokenizer else None
        self._tok: Any = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else None
        self._model = self._load(model, cfg)
        add_memento_tokens(self._tok, self._model)
        self._model.to(cfg.device)
        self._model.eval()
        self._device = torch.device(cfg.device)
        self._ids = MementoTokenIds.from_tokenizer(cast(Any, self._tok))
        self._memento = cfg.memento
        cfg_len = getattr(self._model.config, "max_position_embeddings", None) or 4096
        self._max_len = int(cfg.max_model_len or cfg_len)
        self._max_sessions = cfg.max_sessions
        self._num_threads = cfg.num_threads
        self._dtype: DType = cfg.dtype
        self._trust = cfg.trust_remote_code
        self.logits_processor = logits_processor
        self._sessions: OrderedDict[str, KVSession] = OrderedDict()
        # Live KV entries of all sessions together after every forward pass and eviction (pool occupancy).
        self.pool_trace: list[int] = []
        self._lock = threading.RLock()
        self._check_full_attention()
        self._runner = KVRunner(self._model, self._device, self._memento, self._record_pool)

    def _load(self, model: str | Any, cfg: TransformersBackendConfig) -> Any:
        """Load the tokenizer (unless given) and the model (unless given), checking local paths first."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = self._torch
        if self._tok is None:
            if cfg.tokenizer is None and not isinstance(model, str):
                raise ValueError("pass a tokenizer when the model is an object")
            src = resolve_model_path(cfg.tokenizer, kind="tokenizer") if cfg.tokenizer else None
            if isinstance(model, str):
                model = resolve_model_path(cfg.model, tokenizer=src is None)
            self._tok = AutoTokenizer.from_pretrained(src or model, trust_remote_code=cfg.trust_remote_code)
        elif isinstance(model, str):
            model = resolve_model_path(cfg.model, tokenizer=False)
        if isinstance(model, str):
            torch_dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
            model = AutoModelForCausalLM.from_pretrained(
                model, dtype=torch_dtype, trust_remote_code=cfg.trust_remote_code
            )
        return model

    def _check_full_attention(self) -> None:
        cfg = self._model.config
        types = getattr(cfg, "layer_types", None)
        if types and any(t != "full_attention" for t in types):
            raise ValueError(
                f"memento eviction needs full-attention layers; this model has {sorted(set(types))} "
                "(sliding-window layers keep counters that break under eviction)"
            )

    # --- MementoBackend --------------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The underlying ``PreTrainedModel``."""
        return self._model

    @property
    def model_name(self) -> str:
        return str(self._model_path or type(self._model).__name__)

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def stats(self, session_id: str) -> SessionStats | None:
        s = self._sessions.get(session_id)
        return s.stats if s is not None else None

    def close_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    @property
    def pool_live_tokens(self) -> int:
        """Live KV entries held by all sessions together."""
        return sum(s.slots.live for s in self._sessions.values())

    def _record_pool(self) -> None:
        self.pool_trace.append(self.pool_live_tokens)

    def session_tokens(self, session_id: str) -> tuple[list[int], list[int]]:
        """``(logical ids incl. pending, live slot positions)`` of a session, for inspection and tests."""
        s = self._sessions[session_id]
        return s.ids + s.pending, s.slots.kept()

    def next_token_logits(self, session_id: str, prompt_ids: Sequence[int]) -> Any:
        """Bring the session to ``prompt_ids`` and return the next-token logits (a float32 tensor), sampling nothing.

        Teacher-forced scoring and the mask-equivalence test use this.
        """
        with self._lock, self._torch.inference_mode():
            sess = self._session(session_id)
            self._sync(sess, prompt_ids)
            return sess.logits.clone()

    def generate(
        self,
        session_id: str,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        with self._lock, self._torch.inference_mode():
            sess = self._session(session_id)
            ev_before = sess.stats.evictions
            prefilled, rebuilt = self._sync(sess, prompt_ids)
            if len(prompt_ids) >= self._max_len:
                return GenerationResult([], "length", prefilled, rebuilt, sess.stats.evictions - ev_before)
            gen = self._torch.Generator(device="cpu")
            if params.seed is not None:
                gen.manual_seed(params.seed)
            else:
                gen.seed()
            stops = set(params.stop_token_ids)
            out: list[int] = []
            forced = 0
            finish: FinishReason = "length"
            while True:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if sess.tracker.must_close_block:
                    tok = self._ids.block_end
                    forced += 1
                else:
                    logits = sess.logits
                    if self.logits_processor is not None:
                        logits = self.logits_processor(session_id, out, logits)
                    tok = sample_token(logits, params.temperature, params.top_k, params.top_p, gen)
                out.append(tok)
                sess.stats.generated_tokens += 1
                if on_token is not None:
                    on_token(tok)
                if tok in stops:
                    finish = "stop"
                    sess.pending = [tok]
                    break
                if len(out) >= params.max_new_tokens or len(sess.ids) + 1 >= self._max_len:
                    sess.pending = [tok]
                    break
                self._runner.compute(sess, [tok])
            return GenerationResult(out, finish, prefilled, rebuilt, sess.stats.evictions - ev_before, forced)

    # --- sessions --------------------------------------------------------------------------------------------
    def _session(self, sid: str) -> KVSession:
        s = self._sessions.get(sid)
        if s is None:
            s = self._new_session(sid)
            self._sessions[sid] = s
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(sid)
        return s

    def _new_session(self, sid: str, stats: SessionStats | None = None) -> KVSession:
        from transformers import DynamicCache

        return KVSession(
            sid,
            BlockTracker(self._ids, self._memento),
            stats or SessionStats(sid),
            DynamicCache(config=self._model.config),
        )

    def _sync(self, sess: KVSession, prompt_ids: Sequence[int]) -> tuple[int, bool]:
        held = sess.ids + sess.pending
        n = len(held)
        if len(prompt_ids) >= n and list(prompt_ids[:n]) == held:
            new = sess.pending + list(prompt_ids[n:])
            rebuilt = False
        else:
            stats = sess.stats
            stats.rebuilds += 1
            fresh = self._new_session(sess.sid)
            sess.tracker, sess.cache, sess.ids, sess.slots, sess.logits = (
                fresh.tracker,
                fresh.cache,
                [],
                SlotMap(),
                None,
            )
            stats.live_kv_tokens = 0
            new = list(prompt_ids)
            rebuilt = True
        sess.pending = []
        if new:
            self._runner.compute(sess, new)
            sess.stats.prefill_tokens += len(new)
        elif sess.logits is None:
            raise ValueError("empty prompt: nothing to condition on")
        return len(new), rebuilt

    # --- component ---------------------------------------------------------------------------------------------
    def _to_config(self) -> TransformersBackendConfig:
        if not self._model_path:
            raise ValueError("a backend built from an in-memory model cannot be serialised; load it from a path")
        return TransformersBackendConfig(
            model=self._model_path,
            tokenizer=self._tokenizer_path,
            device=str(self._device),
            dtype=self._dtype,
            memento=self._memento,
            max_model_len=self._max_len,
            max_sessions=self._max_sessions,
            num_threads=self._num_threads,
            trust_remote_code=self._trust,
        )

    @classmethod
    def _from_config(cls, config: TransformersBackendConfig) -> Self:
        rest = {k: v for k, v in config if k not in ("model", "tokenizer")}  # the keywords are the fields
        return cls(config.model, config.tokenizer, **rest)
