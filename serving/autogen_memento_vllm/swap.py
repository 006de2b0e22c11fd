"""Preemption by swap: a preempted compacted request keeps its KV in a host buffer and resumes by a copy.

A compacted request cannot be rebuilt from its compacted token ids (each memento's KV was computed while its
block was visible), so vLLM's preemption by recompute costs a re-prefill of the request's whole *logical* history
(:meth:`~autogen_memento_vllm.eviction.Compactor.restore_logical`). Instead, when a compacted request is
preempted, :class:`Swapper` has the worker copy its computed pages to a host-side buffer in the same step, before
vLLM hands those pages to anyone else; the request stays in compacted units, waiting. Before vLLM's own
scheduling pass, swapped requests at the head of the waiting queue get pages again, through the same admission
rule as any waiting request, the worker copies the buffer back in, and the request resumes holding its KV (vLLM's
waiting-with-KV path, ``kv_holding_waiting``): resuming costs a copy of its compacted pages plus the one token
it had not computed, never a re-prefill.

Whole pages are copied, so the copy is exact whatever the attention backend's layout inside a page. When the
buffer's budget (``swap_space_gib``) would be exceeded the preemption falls back to the exact recompute path.

Why not vLLM's KV offloading (``OffloadingConnector``): it stores full pages under their prefix-cache hashes as
they are computed and loads them back as a cache hit. Compaction rewrites a request's pages in place (so stored
copies go stale), a compacted request's last page is partial (the connector would recompute it, and recomputing
a memento token without its block is not the same KV), and a KV connector changes the scheduler's admission path
that the plugin subclasses. The swap copies exactly the pages a preempted request holds, only when it is
preempted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.interface import PauseState
from vllm.v1.request import Request, RequestStatus

from ._common import MementoStepData
from .state import MementoState

GIB = 1 << 30


@dataclass
class SwapRecord:
    """A swapped-out request: computed tokens and pages held in the host buffer."""

    tokens: int
    pages: int


class Swapper:
    """Plans swap-outs at preemption and swap-ins before scheduling (see the module docstring)."""

    def __init__(self, scheduler: Any, swap_space_gib: float) -> None:
        if swap_space_gib < 0:
            raise ValueError(f"swap_space_gib must be >= 0, got {swap_space_gib}")
        self.sched = scheduler
        cfg = scheduler.kv_cache_config
        page_bytes = sum(int(t.size) for t in cfg.kv_cache_tensors) / max(int(cfg.num_blocks), 1)
        self.budget_blocks = int(swap_space_gib * GIB // page_bytes) if page_bytes > 0 else 0
        self.records: dict[str, SwapRecord] = {}
        self.used_blocks = 0
        self.swaps_out = 0
        self.swaps_in = 0
        self.fallbacks = 0  # preemptions of compacted requests that recomputed (buffer full)

    def install(self) -> None:
        """Wrap ``allocate_slots`` so vLLM never admits a swapped-out request by recomputing its compacted ids.

        A swapped-out request comes back only through :meth:`swap_in_waiting`; recomputing a compacted request
        from its compacted ids would not give its KV (the mementos were computed with their blocks visible).
        """
        kvm = self.sched.kv_cache_manager
        inner = kvm.allocate_slots

        def allocate_slots(request: Request, *args: Any, **kwargs: Any) -> Any:
            if request.request_id in self.records:
                return None
            return inner(request, *args, **kwargs)

        kvm.allocate_slots = allocate_slots

    # --- out -----------------------------------------------------------------------------------------------------
    def swap_out(self, request: Request, state: MementoState, step: MementoStepData) -> bool:
        """Plan the copy of ``request``'s computed pages to the host buffer; ``False`` when it does not fit.

        Called before vLLM frees the pages; the worker copies them at the start of this step, before the forward
        pass writes anything into pages allocated this step.
        """
        n = int(request.num_computed_tokens)
        blocks = self.sched._manager.req_to_blocks.get(request.request_id, [])
        pages = math.ceil(n / self.sched._bs)
        if n <= 0 or pages > len(blocks) or self.used_blocks + pages > self.budget_blocks:
            self.fallbacks += n > 0
            return False
        step.swap_out[request.request_id] = [b.block_id for b in blocks[:pages]]
        self.records[request.request_id] = SwapRecord(n, pages)
        self.used_blocks += pages
        self.swaps_out += 1
        state.stats.swaps += 1
        state.stats.swapped_tokens += n
        return True

    # --- in ------------------------------------------------------------------------------------------------------
    def swap_in_waiting(self, step: MementoStepData) -> None:
        """Give pages back to swapped requests at the head of the waiting queue, in order, while they are admitted.

        Pages come from the scheduler's (admission-wrapped) ``allocate_slots``, so a swap-in obeys the projected
        pool and the watermark as any admission does. A swapped-in request moves to ``kv_holding_waiting``, which
        vLLM's waiting loop drains first; it resumes from its computed tokens.
        """
        sched = self.sched
        if not self.records or sched._pause_state != PauseState.UNPAUSED:
            return
        holding = len(sched.kv_holding_waiting)
        for request in list(sched.waiting):
            rec = self.records.get(request.request_id)
            if rec is None or request.status != RequestStatus.PREEMPTED:
                break
            if len(sched.running) + holding >= sched.max_num_running_reqs:
                break
            self._drop(request.request_id)  # lets the allocation through the guard of :meth:`install`
            pages = sched.kv_cache_manager.allocate_slots(request, rec.tokens, has_scheduled_reqs=bool(sched.running))
            if pages is None:
                self.records[request.request_id] = rec
                self.used_blocks += rec.pages
                break
            blocks = sched._manager.req_to_blocks[request.request_id]
            step.swap_in[request.request_id] = [b.block_id for b in blocks[: rec.pages]]
            request.num_computed_tokens = rec.tokens
            sched.waiting.remove_request(request)
            sched.kv_holding_waiting.add_request(request)
            self.swaps_in += 1
            holding += 1

    def forget(self, request_id: str, step: MementoStepData) -> bool:
        """Drop a swapped-out request that finished while waiting, and a copy of it not sent to the worker yet
        (the worker frees a buffer it holds when the request's id comes in ``finished_req_ids``)."""
        step.swap_out.pop(request_id, None)
        return self._drop(request_id)

    def _drop(self, request_id: str) -> bool:
        rec = self.records.pop(request_id, None)
        if rec is None:
            return False
        self.used_blocks -= rec.pages
        return True

    def summary(self) -> dict[str, int]:
        """Buffer occupancy and counters (``GET /v1/memento/memory``)."""
        return {
            "swap_budget_blocks": self.budget_blocks,
            "swap_blocks": self.used_blocks,
            "swapped_requests": len(self.records),
            "swaps_out": self.swaps_out,
            "swaps_in": self.swaps_in,
            "swap_fallbacks": self.fallbacks,
        }
