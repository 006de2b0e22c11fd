"""Shared pieces of the memento vLLM plugin: configuration lookup and the scheduler → worker side channel.

The plugin is configured once per engine through ``--additional-config '{"memento": {...}}'`` (a
:class:`~autogen_ext_memento.grammar.MementoConfig` plus plugin options) and per request through
``SamplingParams.extra_args`` (``vllm_xargs`` in the OpenAI API):

* ``memento``: ``false`` turns eviction off for the request; a dict overrides config fields for it.
* ``memento_session``: a session id; the request's compacted KV is kept after it finishes and adopted by the
  next request of the same session whose logical prompt extends it.
* ``memento_force``: ``{output_index: token_id}``, tokens forced at given output positions (scripted agents,
  tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autogen_ext_memento.grammar import MementoConfig, MementoTokenIds

PLUGIN_VERSION = "0.1.0"
SCHEDULER_CLS = "autogen_memento_vllm.scheduler.MementoScheduler"
CPU_WORKER_CLS = "autogen_memento_vllm.worker.MementoCPUWorker"
GPU_WORKER_CLS = "autogen_memento_vllm.worker.MementoGPUWorker"


_OPTION_KEYS = (
    "enabled_by_default",
    "session_ttl_s",
    "max_session_fraction",
    "max_session_blocks",
    "max_sessions",
    "memento_admission",
    "admission_margin",
    "admission_horizon",
    "swap_space_gib",
)


@dataclass(frozen=True)
class PluginOptions:
    """Engine-wide options of the plugin (from ``additional_config["memento"]``).

    Session limits: ``session_ttl_s`` (idle seconds), ``max_session_fraction`` / ``max_session_blocks`` (pages),
    ``max_sessions`` (count). Admission: ``memento_admission`` (admit memento requests only when the projected pool
    holds them), ``admission_margin`` (fraction added to every projected request) and ``admission_horizon`` (the
    look-ahead window: ``"cycle"``, one learned block-plus-memento cycle; ``"life"``, the rest of every request's
    life; or a number of steps). Preemption: ``swap_space_gib``, the host buffer that keeps preempted compacted
    requests' pages (``0``: recompute them).
    """

    memento: MementoConfig = field(default_factory=MementoConfig)
    enabled_by_default: bool = True
    token_ids: MementoTokenIds | None = None
    session_ttl_s: float = 600.0
    max_session_fraction: float = 0.5
    max_session_blocks: int | None = None
    max_sessions: int = 256
    memento_admission: bool = True
    admission_margin: float = 0.1
    admission_horizon: int | str = "cycle"
    swap_space_gib: float = 4.0

    def __post_init__(self) -> None:
        def number(name: str, ok: Any, what: str) -> None:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not ok(value)
            ):
                raise ValueError(f"memento option {name}: expected {what}, got {value!r}")

        number("session_ttl_s", lambda v: v > 0, "a positive number of seconds")
        number("max_session_fraction", lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        number("max_sessions", lambda v: v >= 0 and float(v).is_integer(), "a non-negative integer")
        number("admission_margin", lambda v: v >= 0, "a non-negative fraction")
        number("swap_space_gib", lambda v: v >= 0, "a non-negative number of GiB")
        if self.max_session_blocks is not None:
            number("max_session_blocks", lambda v: v >= 0 and float(v).is_integer(), "a non-negative integer")

    @classmethod
    def from_additional_config(cls, additional: Any) -> PluginOptions:
        """Parse ``additional_config`` (a dict, possibly empty)."""
        raw = dict(additional.get("memento", {}) or {}) if isinstance(additional, dict) else {}
        ids = raw.pop("token_ids", None)
        opts: dict[str, Any] = {}
        for key in _OPTION_KEYS:
            if key in raw:
                opts[key] = raw.pop(key)
        token_ids = MementoTokenIds(*ids) if ids is not None else None
        return cls(memento=MementoConfig(**raw), token_ids=token_ids, **opts)


def request_memento_config(options: PluginOptions, extra_args: dict[str, Any] | None) -> MementoConfig | None:
    """The memento rule for one request, or ``None`` when eviction is off for it."""
    val = (extra_args or {}).get("memento", None)
    if val is False or (val is None and not options.enabled_by_default):
        return None
    if isinstance(val, dict) and val:
        merged = options.memento.model_dump()
        merged.update(val)
        return MementoConfig(**merged)
    return options.memento


@dataclass
class WorkerUpdate:
    """Everything the worker needs to rebuild one request's state after its KV was compacted (or restored)."""

    token_ids: list[int]
    num_prompt_tokens: int
    num_computed_tokens: int
    block_ids: list[int]
    rope_offset: int


@dataclass
class MementoStepData:
    """Side channel attached to ``SchedulerOutput`` as ``scheduler_output.memento`` (pickled to workers).

    ``copies`` are ``(src_slot, dst_slot)`` pairs over the whole KV pool, composed so that every source is read
    before any destination is written; the worker runs them first in the step, before zeroing new blocks and
    before the forward pass. ``swap_out`` (pages to copy to the host buffer of a preempted request) runs after
    them, ``swap_in`` (the pages a swapped request resumes into) after that.
    """

    copies: list[tuple[int, int]] = field(default_factory=list)
    swap_out: dict[str, list[int]] = field(default_factory=dict)
    swap_in: dict[str, list[int]] = field(default_factory=dict)
    updates: dict[str, WorkerUpdate] = field(default_factory=dict)
    rope_offsets: dict[str, int] = field(default_factory=dict)
    forced: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.copies or self.swap_out or self.swap_in or self.updates or self.rope_offsets or self.forced)
