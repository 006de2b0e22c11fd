"""Memento-aware admission: admit a memento request only when the pool can hold its expected sawtooth peak.

vLLM admits a waiting request as soon as its next chunk fits. For a memento request that is the bottom of a
sawtooth: its open block grows, the pool overcommits, and the request is preempted and re-prefilled at its whole
*logical* length. This module wraps the scheduler's ``kv_cache_manager.allocate_slots`` (the one call both the
running and the waiting loops of ``Scheduler.schedule`` make) to:

* **admit by peak.** A waiting request whose rule evicts (``keep_last_n_blocks >= 0``) is admitted only when the
  free pages, minus the growth already promised to running memento requests, cover its expected peak::

      peak = live - open + cycle + kept_ratio * remaining     (at most live + remaining, the no-eviction bound)

  ``live`` is its KV once pending evictions are applied, ``open`` the part of it written in the open cycle,
  ``cycle`` the longest block-plus-memento cycle seen (the open block and its memento are live together),
  ``kept_ratio`` the share of generated tokens that stay (kept
  mementos and text between blocks), ``remaining`` the tokens it may still generate. ``cycle`` and ``kept_ratio``
  are learned per request from its tracker, else from the running requests, else defaults; pages carry a margin.
  When nothing runs, a request is always admitted (no deadlock). Plain requests and requests whose rule never
  evicts are admitted by vLLM's rule unchanged, and their growth is not reserved;
* **release idle sessions before preempting.** When a running request cannot get a page, idle sessions are
  released least-recently-used first before vLLM would preempt a running request.
"""

from __future__ import annotations

import math
from typing import Any

from vllm.v1.request import Request, RequestStatus

from ._common import PluginOptions
from .state import MementoState

DEFAULT_KEPT_RATIO = 0.25
"""Share of generated tokens assumed to stay in KV before any memento was seen."""


class Admission:
    """Admission by expected sawtooth peak and session release before preemption (see the module docstring)."""

    def __init__(self, scheduler: Any, options: PluginOptions) -> None:
        self.sched = scheduler
        self.enabled = options.memento_admission
        self.margin = options.admission_margin
        self.released_blocks = 0  # session pages released so that a running request kept running
        self.deferred = 0  # waiting requests held back because their peak did not fit
        self._promised: int | None = None  # pages promised to running requests' growth in this step
        self._prior_cycle = 0
        self._prior_ratio: float | None = None

    def install(self) -> None:
        """Wrap the scheduler's ``allocate_slots`` (an attribute of this scheduler's own KV-cache manager)."""
        kvm = self.sched.kv_cache_manager
        original = kvm.allocate_slots

        def allocate_slots(request: Request, num_new_tokens: int, *args: Any, **kwargs: Any) -> Any:
            waiting = request.status != RequestStatus.RUNNING
            need = self._admission_need(request) if waiting else None
            if need is not None and not self._fits(need):
                self.deferred += 1
                return None
            held = self._held(request)
            blocks = original(request, num_new_tokens, *args, **kwargs)
            while blocks is None and not waiting and self._release_one_session():
                blocks = original(request, num_new_tokens, *args, **kwargs)
            if blocks is not None and need is not None and self._promised is not None:
                self._promised += max(0, need - (self._held(request) - held))
            return blocks

        kvm.allocate_slots = allocate_slots

    def begin_step(self) -> None:
        """Forget the previous step's promises (they are recomputed at the first admission of this step)."""
        self._promised = None

    def learn(self, state: MementoState) -> None:
        """Update the engine-wide priors from a finished request."""
        self._prior_cycle = max(self._prior_cycle, state.max_cycle)
        ratio = state.kept_ratio()
        if ratio is not None:
            self._prior_ratio = ratio if self._prior_ratio is None else 0.8 * self._prior_ratio + 0.2 * ratio

    # --- estimates ---------------------------------------------------------------------------------------------------
    def peak_tokens(self, request: Request, state: MementoState) -> int:
        """Expected largest live KV (tokens) of the request over the rest of its life."""
        live = request.num_tokens - state.pending_tokens()
        logical = request.num_tokens + state.offset
        remaining = max(0, min(request.max_tokens - request.num_output_tokens, self.sched.max_model_len - logical))
        cycle = state.max_cycle or self._prior_cycle or 2 * self.sched._bs
        ratio = state.kept_ratio()
        if ratio is None:
            ratio = self._prior_ratio if self._prior_ratio is not None else DEFAULT_KEPT_RATIO
        # The open cycle's tokens are already in ``live`` and mostly go at its memento: count the cycle once.
        progress = min(state.open_cycle_progress(), cycle)
        return int(min(live + remaining, live - progress + cycle + math.ceil(ratio * remaining)))

    def peak_pages(self, request: Request, state: MementoState) -> int:
        """:meth:`peak_tokens` in pages, with the safety margin."""
        block_size = int(self.sched._bs)
        return math.ceil(self.peak_tokens(request, state) * (1.0 + self.margin) / block_size)

    def _admission_need(self, request: Request) -> int | None:
        """Pages a waiting request still needs at its peak, or ``None`` when vLLM's own rule applies."""
        state = self.sched.memento_states.get(request.request_id)
        if not self.enabled or state is None or state.config.keep_last_n_blocks < 0 or not self.sched.running:
            return None
        return max(0, self.peak_pages(request, state) - self._held(request))

    def _fits(self, need: int) -> bool:
        if self._promised is None:
            self._refresh_priors()
            self._promised = self._running_growth()
        free = int(self.sched._pool.get_num_free_blocks())
        return free - self._promised >= need

    def _running_growth(self) -> int:
        """Pages running memento requests may still add before their peaks."""
        total = 0
        for request in self.sched.running:
            state = self.sched.memento_states.get(request.request_id)
            if state is not None and state.config.keep_last_n_blocks >= 0:
                total += max(0, self.peak_pages(request, state) - self._held(request))
        return total

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
        blocks: list[Any] = self.sched._manager.req_to_blocks.get(request.request_id, [])
        return len(blocks)

    # --- sessions ------------------------------------------------------------------------------------------------------
    def _release_one_session(self) -> bool:
        """Release the least-recently-used idle session; whether one was released."""
        reg = self.sched.memento_sessions
        if not len(reg):
            return False
        self.released_blocks += reg.release_lru(1)
        return True
