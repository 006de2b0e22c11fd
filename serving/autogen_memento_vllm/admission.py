"""Memento-aware admission: admit a memento request only when the pool, projected forward in time, can hold it.

vLLM admits a waiting request as soon as its next chunk fits. For a memento request that is the bottom of a
sawtooth: its open block grows, the pool overcommits, and the request is preempted and re-prefilled at its whole
*logical* length. This module wraps the scheduler's ``kv_cache_manager.allocate_slots`` (the one call both the
running and the waiting loops of ``Scheduler.schedule`` make) to:

* **admit by projected pool occupancy.** Every running request, and the waiting candidate, gets an upper envelope
  of the KV it will hold ``k`` steps from now (one token per step)::

      tokens(k) = min(live + k,  base + open(k) + ceil(kept_ratio * (progress + k - open(k))))
      open(k)   = min(cycle, progress + k),   base = live - progress,   and 0 once k >= remaining

  ``live`` is its KV once pending evictions are applied, ``progress`` the part of it written in the open cycle,
  ``cycle`` the longest block-plus-memento cycle seen (the open block and its memento are live together),
  ``kept_ratio`` the share of generated tokens that stay (kept mementos, text between blocks), ``remaining`` the
  tokens it may still generate (``max_tokens`` and the logical ``max_model_len``). ``cycle`` and ``kept_ratio``
  are learned per request from its tracker, else from the running requests, else defaults; a request whose rule
  never evicts (plain requests, ``keep_last_n_blocks: -1``) has ``kept_ratio`` 1. The candidate is admitted when,
  at every step of the look-ahead window, the summed envelopes in pages (with ``admission_margin``) fit in the
  free pages plus the pages the projected requests already hold. The window (``admission_horizon``) is by
  default one learned cycle (``"cycle"``: every running request can finish its open block and memento, and keep
  its share, before anything is preempted; growth past it may preempt), ``"life"`` (the rest of every request's
  life: no preemption when the envelopes hold, but requests started together finish together, so the pool runs
  in waves), or a number of steps. Unlike a reservation of each request's own lifetime peak the projection counts
  the pages that finishing requests give back and the bottom of the sawtooth that young requests are in. Each
  envelope is non-decreasing until its request finishes, so the sum needs checking only at the last step of each
  request and at the window's end (exact, no sampling).
  When nothing runs, a request is always admitted (no deadlock). Plain waiting requests and waiting requests that
  never evict keep vLLM's rule (their growth is counted once they run);
* **release idle sessions before preempting.** When a running request cannot get a page, idle sessions are
  released least-recently-used first before vLLM would preempt a running request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vllm.v1.request import Request, RequestStatus

from ._common import PluginOptions
from .state import MementoState

DEFAULT_KEPT_RATIO = 0.25
"""Share of generated tokens assumed to stay in KV before any memento was seen."""


@dataclass
class Envelope:
    """The shape of one request's projected KV (tokens; see the module docstring)."""

    live: int
    progress: int
    cycle: int
    kept_ratio: float
    remaining: int


@dataclass
class _Plan:
    """This step's projected requests (running ones, then the candidates admitted so far)."""

    ids: list[str] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)


class Admission:
    """Admission by projected pool occupancy and session release before preemption (see the module docstring)."""

    def __init__(self, scheduler: Any, options: PluginOptions) -> None:
        self.sched = scheduler
        self.enabled = options.memento_admission
        self.margin = options.admission_margin
        self.horizon: int | str = options.admission_horizon
        if not (self.horizon in ("cycle", "life") or (isinstance(self.horizon, int) and self.horizon > 0)):
            raise ValueError(
                f"admission_horizon must be 'cycle', 'life' or a positive number of steps, got {self.horizon!r}"
            )
        self.released_blocks = 0  # session pages released so that a running request kept running
        self.deferred = 0  # waiting requests held back because the projected pool did not hold them
        self._plan: _Plan | None = None
        self._prior_cycle = 0
        self._prior_ratio: float | None = None

    def install(self) -> None:
        """Wrap the scheduler's ``allocate_slots`` (an attribute of this scheduler's own KV-cache manager)."""
        kvm = self.sched.kv_cache_manager
        original = kvm.allocate_slots

        def allocate_slots(request: Request, num_new_tokens: int, *args: Any, **kwargs: Any) -> Any:
            waiting = request.status != RequestStatus.RUNNING
            # A waiting request that already holds pages (a swap-in) was admitted when it got them this step.
            env = self._candidate(request) if waiting and not self._held(request) else None
            if env is not None and not self.fits(request, env):
                self.deferred += 1
                return None
            blocks = original(request, num_new_tokens, *args, **kwargs)
            while blocks is None and not waiting and self._release_one_session():
                blocks = original(request, num_new_tokens, *args, **kwargs)
            if blocks is not None and env is not None and self._plan is not None:
                self._plan.ids.append(request.request_id)
                self._plan.envelopes.append(env)
            return blocks

        kvm.allocate_slots = allocate_slots

    def begin_step(self) -> None:
        """Forget the previous step's plan (it is rebuilt at the first admission check of this step)."""
        self._plan = None

    def learn(self, state: MementoState) -> None:
        """Update the engine-wide priors from a finished request."""
        self._prior_cycle = max(self._prior_cycle, state.max_cycle)
        ratio = state.kept_ratio()
        if ratio is not None:
            self._prior_ratio = ratio if self._prior_ratio is None else 0.8 * self._prior_ratio + 0.2 * ratio

    # --- envelopes ---------------------------------------------------------------------------------------------------
    def envelope(self, request: Request) -> Envelope:
        """The request's projected KV shape (a request without a rule that evicts keeps everything)."""
        state = self.sched.memento_states.get(request.request_id)
        offset = state.offset if state is not None else 0
        logical = request.num_tokens + offset
        max_tokens = request.max_tokens if request.max_tokens is not None else self.sched.max_model_len
        remaining = max(0, min(max_tokens - request.num_output_tokens, self.sched.max_model_len - logical))
        if state is None or state.config.keep_last_n_blocks < 0:
            return Envelope(request.num_tokens, 0, 0, 1.0, remaining)
        live = request.num_tokens - state.pending_tokens()
        cycle = state.max_cycle or self._prior_cycle or 2 * self.sched._bs
        ratio = state.kept_ratio()
        if ratio is None:
            ratio = self._prior_ratio if self._prior_ratio is not None else DEFAULT_KEPT_RATIO
        progress = min(state.open_cycle_progress(), live)
        return Envelope(live, progress, max(cycle, progress), ratio, remaining)

    def projected_pages(self, envelopes: list[Envelope], steps: np.ndarray) -> np.ndarray:
        """Pages (with the margin) the requests hold together at each of ``steps`` (steps from now)."""
        if not envelopes:
            return np.zeros(len(steps))
        live = np.array([e.live for e in envelopes], dtype=np.float64)[:, None]
        prog = np.array([e.progress for e in envelopes], dtype=np.float64)[:, None]
        cycle = np.array([e.cycle for e in envelopes], dtype=np.float64)[:, None]
        ratio = np.array([e.kept_ratio for e in envelopes], dtype=np.float64)[:, None]
        remaining = np.array([e.remaining for e in envelopes], dtype=np.float64)[:, None]
        k = steps.astype(np.float64)[None, :]
        open_ = np.minimum(cycle, prog + k)
        tokens = np.minimum(live + k, live - prog + open_ + np.ceil(ratio * (prog + k - open_)))
        pages = np.ceil(tokens * (1.0 + self.margin) / self.sched._bs)
        pages[k >= remaining] = 0.0
        result: np.ndarray = pages.sum(axis=0)
        return result

    # --- admission ---------------------------------------------------------------------------------------------------
    def _candidate(self, request: Request) -> Envelope | None:
        """The waiting request's envelope when admission applies to it, else ``None`` (vLLM's own rule)."""
        state = self.sched.memento_states.get(request.request_id)
        if not self.enabled or state is None or state.config.keep_last_n_blocks < 0 or not self.sched.running:
            return None
        return self.envelope(request)

    def fits(self, request: Request, env: Envelope) -> bool:
        """Whether the pool holds the projected requests plus ``request`` at every step of the window."""
        if self._plan is None:
            self._refresh_priors()
            running = [r for r in self.sched.running if r.status == RequestStatus.RUNNING]
            self._plan = _Plan([r.request_id for r in running], [self.envelope(r) for r in running])
        plan = self._plan
        envs = [*plan.envelopes, env]
        held = sum(self._held_id(rid) for rid in plan.ids) + self._held(request)
        capacity = int(self.sched._pool.get_num_free_blocks()) + held
        ends = np.array([e.remaining - 1 for e in envs if e.remaining > 0] + [0], dtype=np.int64)
        window = self.window()
        if window is not None:
            ends = np.append(np.minimum(ends, window - 1), window - 1)
        steps = np.unique(np.maximum(ends, 0))
        return bool(self.projected_pages(envs, steps).max() <= capacity)

    def window(self) -> int | None:
        """Steps of the look-ahead window (``None``: the rest of every request's life)."""
        if self.horizon == "life":
            return None
        if self.horizon == "cycle":
            return max(self._prior_cycle or 2 * int(self.sched._bs), 1)
        return int(self.horizon)

    def _refresh_priors(self) -> None:
        ratios: list[float] = []
        for request in self.sched.running:
            state = self.sched.memento_states.get(request.request_id)
            if state is None:
                continue
            self._prior_cycle = max(self._prior_cycle, state.max_cycle)
            ratio = state.kept_ratio()
            if ratio is not None:
                ratios.append(ratio)
        if ratios:
            self._prior_ratio = sorted(ratios)[len(ratios) // 2]

    def _held(self, request: Request) -> int:
        return self._held_id(request.request_id)

    def _held_id(self, request_id: str) -> int:
        blocks: list[Any] = self.sched._manager.req_to_blocks.get(request_id, [])
        return len(blocks)

    # --- sessions ------------------------------------------------------------------------------------------------------
    def _release_one_session(self) -> bool:
        """Release the least-recently-used idle session; whether one was released."""
        reg = self.sched.memento_sessions
        if not len(reg):
            return False
        self.released_blocks += reg.release_lru(1)
        return True
