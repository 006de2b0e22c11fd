"""Preemption by swap: a preempted compacted request keeps its KV in a host buffer and resumes by a copy.

A compacted request cannot be rebuilt from its compacted token ids (each memento's KV was computed while its
block was visible), so vLLM's preemption by recompute costs a re-prefill of the request's whole *logical* history
(:meth:`~autogen_memento_vllm.eviction.Compactor.restore_logical`). Instead, when a compacted request is
preempted, :class:`Swapper` has the worker copy its computed pages to a host-side buffer in the same step, before
vLLM hands those pages to anyone else; the request stays in compacted units, waiting. When vLLM's waiting loop
reaches it (after the running requests were served, and only in a step that preempted nothing, as for any waiting
request), its local "prefix-cache hit" is its swapped tokens: pages are allocated for them through the same
admission rule as any waiting request, the worker copies the buffer back before the forward, and the request
resumes from its computed tokens in that step. Resuming costs a copy of its compacted pages plus the one token it
had not computed, never a re-prefill. A swapped request holds pages only while it runs: when the rest of its
admission fails the pages go back (no reservation, so waiting requests can never hold the pool between them).

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

from vllm.v1.request import Request

from ._common import MementoStepData
from .memory import GIB
from .state import MementoState


@dataclass
class SwapRecord:
    """A swapped-out request: computed tokens and pages held in the host buffer."""

    tokens: int
    pages: int


class Swapper:
    """Plans swap-outs at preemption and swap-ins in vLLM's waiting loop (see the module docstring)."""

    def __init__(self, scheduler: Any, swap_space_gib: float) -> None:
        self.sched = scheduler
        cfg = scheduler.kv_cache_config
        page_bytes = sum(int(t.size) for t in cfg.kv_cache_tensors) / max(int(cfg.num_blocks), 1)
        self.budget_blocks = int(swap_space_gib * GIB // page_bytes) if page_bytes > 0 else 0
        self.records: dict[str, SwapRecord] = {}
        self._resuming: dict[str, SwapRecord] = {}  # pages allocated this step, admission not finished yet
        self._step_in: dict[str, list[int]] = {}  # swap-ins admitted this step (pages to fill, in order)
        self.used_blocks = 0
        self.swaps_out = 0
        self.swaps_in = 0
        self.fallbacks = 0  # preemptions of compacted requests that recomputed (buffer full)

    def install(self) -> None:
        """Wrap ``allocate_slots``: vLLM never admits a swapped-out request by recomputing its compacted ids (the
        mementos were computed with their blocks visible), and a swap-in whose admission fails gives its pages back.
        """
        kvm = self.sched.kv_cache_manager
        inner = kvm.allocate_slots

        def allocate_slots(request: Request, *args: Any, **kwargs: Any) -> Any:
            rid = request.request_id
            if rid in self.records and rid not in self._resuming:
                return None
            blocks = inner(request, *args, **kwargs)
            if rid in self._resuming:
                self._finish_swap_in(request, ok=blocks is not None)
            return blocks

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

    # --- in -------------------------------------------------------------------------------------------------------
    def local_hit(self, request: Request) -> tuple[Any, int, int, bool] | None:
        """For a swapped-out request reached by vLLM's waiting loop: its swapped tokens as the local hit.

        Pages for them are allocated now (admission-checked, not hashed until the request is admitted); the
        allocation vLLM makes next for the rest of the request completes the swap-in, or undoes it when it fails.
        ``None`` for a request that is not swapped out.
        """
        rec = self.records.get(request.request_id)
        if rec is None:
            return None
        kvm = self.sched.kv_cache_manager
        empty = kvm.empty_kv_cache_blocks
        del self.records[request.request_id]  # lets the allocation through the guard of :meth:`install`
        blocks = kvm.allocate_slots(
            request, rec.tokens, delay_cache_blocks=True, has_scheduled_reqs=bool(self.sched.running)
        )
        self.records[request.request_id] = rec
        if blocks is None:
            return empty, 0, 0, False
        self._resuming[request.request_id] = rec
        return empty, rec.tokens, 0, False

    def _finish_swap_in(self, request: Request, ok: bool) -> None:
        rid = request.request_id
        rec = self._resuming.pop(rid)
        if not ok:  # give the pages back; the request stays swapped out
            self.sched.kv_cache_manager.free(request)
            return
        blocks = self.sched._manager.req_to_blocks[rid]
        self._step_in[rid] = [b.block_id for b in blocks[: rec.pages]]
        self._drop(rid)
        self.swaps_in += 1

    def end_step(self, step: MementoStepData) -> None:
        """Hand this step's swap-ins to the worker; undo any whose request vLLM did not go on to admit."""
        for rid in list(self._resuming):
            request = self.sched.requests.get(rid)
            if request is not None:
                self._finish_swap_in(request, ok=False)
            else:
                self._resuming.pop(rid)
        step.swap_in.update(self._step_in)
        self._step_in.clear()

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
