"""The backend contract: sessions that hold a conversation's compacted KV, driven by full logical token ids."""

from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from autogen_core import ComponentBase
from pydantic import BaseModel

from .._checks import build_config as checked_config
from ..grammar import MementoConfig, MementoTokenIds

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class SamplingParams:
    """How to sample one completion. ``temperature == 0`` is greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:  # NaN fails this comparison too
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")


@dataclass
class GenerationResult:
    """One completion: the sampled ids (the stop token included), why it ended and what the call cost."""

    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    rebuilt: bool
    evictions: int
    forced_block_ends: int = 0


@dataclass
class SessionStats:
    """Live-KV accounting of one session.

    ``trace[i]`` is the number of live KV entries right after the session's ``i``-th logical token was computed
    (before an eviction that token triggers), so the trace is the sawtooth. ``peak_kv_tokens``/``auc_kv`` summarise
    it; ``full_context_kv_tokens``/``full_context_auc_kv`` are the same for a cache that never evicts (the peak and
    summed logical length); ``logical_tokens`` is the current logical length.
    """

    session_id: str
    live_kv_tokens: int = 0
    peak_kv_tokens: int = 0
    auc_kv: int = 0
    logical_tokens: int = 0
    full_context_kv_tokens: int = 0
    full_context_auc_kv: int = 0
    evictions: int = 0
    evicted_tokens: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    rebuilds: int = 0
    anomalies: int = 0
    trace: list[int] = field(default_factory=list)

    def record(self, live: int, logical: int) -> None:
        """Account one computed token: ``live`` entries in the cache, ``logical`` tokens in the sequence."""
        self.trace.append(live)
        self.auc_kv += live
        if live > self.peak_kv_tokens:
            self.peak_kv_tokens = live
        self.logical_tokens = logical
        if logical > self.full_context_kv_tokens:
            self.full_context_kv_tokens = logical
        self.full_context_auc_kv += logical

    def summary(self, with_trace: bool = False) -> dict[str, Any]:
        """The counters as a dict (and a copy of the trace if asked: it grows with the session, so not by default)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "trace"}
        if with_trace:
            d["trace"] = list(self.trace)
        return d


TokenCallback = Callable[[int], None]

_C = TypeVar("_C", bound=BaseModel)


def build_config(config_cls: type[_C], what: str, /, **values: Any) -> _C:
    """Validate a backend's constructor arguments by building its Config, as a one-line ``ValueError``."""
    return checked_config(config_cls, f"invalid {what} arguments", **values)


# --- torch devices -----------------------------------------------------------------------------------------------
def available_torch_devices() -> list[str]:
    """The devices this torch build can use right now, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    import torch

    out = ["cpu"]
    out += [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        out += [f"xpu:{i}" for i in range(xpu.device_count())]
    return out


def check_torch_device(device: str) -> str:
    """Return ``device`` if this torch build can use it, else raise a ValueError naming what torch has."""
    import torch

    have = available_torch_devices()
    build = "" if torch.backends.cuda.is_built() else ", built without CUDA"  # type: ignore[no-untyped-call]
    why = f"this torch ({torch.__version__}{build}) can use: {', '.join(have)}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; {why}") from None
    if dev.type == "cpu":
        return device
    usable = {d.split(":")[0] for d in have}
    if dev.type not in usable:
        raise ValueError(f"device {device!r} is not available: {why}")
    indexed = [d for d in have if d.startswith(f"{dev.type}:")]
    if dev.index is not None and indexed and f"{dev.type}:{dev.index}" not in indexed:
        raise ValueError(f"device {device!r} is not available: {why}")
    return device


# --- model names and paths ---------------------------------------------------------------------------------------
# Portable names of the models shipped in ``autogen_ext_memento.assets`` -> the function that returns their path.
_SHIPPED = {"tiny": "tiny_model_path", "tiny-memento": "tiny_model_path", "tiny-full": "tiny_full_model_path"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _shipped_path(name: str) -> Path | None:
    from .. import assets

    fn = getattr(assets, _SHIPPED[name], None)
    if fn is None:
        return None
    return Path(fn())


def shipped_model_names() -> list[str]:
    """The portable names this installation resolves (``tiny``, ``tiny-memento`` and, when shipped, ``tiny-full``)."""
    from .. import assets

    return [n for n, fn in _SHIPPED.items() if hasattr(assets, fn)]


def resolve_model_path(name: str, *, kind: Literal["model", "tokenizer"] = "model", tokenizer: bool = True) -> str:
    """Turn a model name into what ``from_pretrained`` loads, checking local paths first.

    ``tiny``/``tiny-memento`` (and ``tiny-full`` where shipped) are the package's own models; an existing directory
    must hold ``config.json`` (for a model) and tokenizer files (unless ``tokenizer=False``); a string that is not a
    path and looks like ``org/name`` is a hub name and is returned unchanged.

    Raises:
        FileNotFoundError: the path does not exist and is not a hub name.
        ValueError: the path exists but is not a model (or tokenizer) directory.
    """
    if name in shipped_model_names():
        path = _shipped_path(name)
        assert path is not None
        return str(path)
    p = Path(name).expanduser()
    if not p.exists():
        if _HUB_NAME.match(name) and ".." not in name.split("/"):
            return name
        raise FileNotFoundError(
            f"{kind} path {name!r} does not exist: expected a local directory with "
            f"{'config.json' if kind == 'model' else 'tokenizer files'} or a hub name (org/name)"
        )
    need = ["config.json"] if kind == "model" else []
    need += [f"tokenizer files ({' or '.join(_TOKENIZER_FILES)})"] if tokenizer else []
    has_config = kind == "tokenizer" or (p / "config.json").is_file()
    has_tok = not tokenizer or any((p / f).is_file() for f in _TOKENIZER_FILES)
    if not p.is_dir() or not (has_config and has_tok):
        raise ValueError(f"{kind} path {name!r} is not a {kind} directory: expected {' and '.join(need)} in it")
    return str(p)


def portable_model_name(name: str) -> str:
    """``tiny`` (or another shipped name) when ``name`` is one of the package's models, else ``name`` unchanged.

    Component configs store this, so a saved config does not carry this machine's install path.
    """
    if name in _SHIPPED:
        return "tiny" if _SHIPPED[name] == "tiny_model_path" else name
    try:
        here = Path(name).expanduser().resolve()
    except (OSError, RuntimeError):
        return name
    for alias in ("tiny", "tiny-full"):
        try:
            path = _shipped_path(alias) if alias in shipped_model_names() else None
        except FileNotFoundError:
            path = None
        if path is not None and path.resolve() == here:
            return alias
    return name


class MementoBackend(ABC, ComponentBase[BaseModel]):
    """A model that serves memento sessions.

    A caller sends, for a session, the *whole* logical token sequence the session should hold before it samples;
    the backend appends only what is new (or rebuilds the session when the sequence no longer extends what it
    holds), evicts blocks as their mementos complete, and samples a completion. The sampled stop token is
    returned but not yet computed: it is fed with the next call's new tokens.
    """

    component_type = "memento_backend"

    # Set by every backend's constructor; the properties below expose them read-only.
    _tok: Any
    _ids: MementoTokenIds
    _memento: MementoConfig
    _max_len: int

    @property
    def tokenizer(self) -> Any:
        """The tokenizer whose ids the sessions hold."""
        return self._tok

    @property
    def memento_ids(self) -> MementoTokenIds:
        """The ids of the four memento tokens in :attr:`tokenizer`."""
        return self._ids

    @property
    def memento_config(self) -> MementoConfig:
        """The eviction rule every session follows."""
        return self._memento

    @property
    def max_model_len(self) -> int:
        """The longest logical sequence a session may hold."""
        return self._max_len

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    @abstractmethod
    def generate(
        self,
        session_id: str,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Bring the session to ``prompt_ids`` and sample one completion (blocking)."""

    def _not_started(self, prompt_ids: Sequence[int], cancel: threading.Event | None) -> GenerationResult | None:
        """The result of a remote call that cannot start (cancelled, or the prompt already at ``max_model_len``).

        An empty prompt raises: there is nothing to condition on.
        """
        if cancel is not None and cancel.is_set():
            return GenerationResult([], "cancelled", 0, False, 0)
        if not prompt_ids:
            raise ValueError("empty prompt: nothing to condition on")
        if len(prompt_ids) >= self._max_len:
            return GenerationResult([], "length", 0, False, 0)
        return None

    @abstractmethod
    def stats(self, session_id: str) -> SessionStats | None:
        """The session's live-KV accounting, or ``None`` for an unknown session."""

    @abstractmethod
    def session_ids(self) -> list[str]:
        """Ids of the sessions currently held."""

    @abstractmethod
    def close_session(self, session_id: str) -> None:
        """Drop a session and free its KV."""

    def close(self) -> None:
        """Release every session."""
        for sid in self.session_ids():
            self.close_session(sid)
