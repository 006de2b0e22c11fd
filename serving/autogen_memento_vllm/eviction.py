"""Eviction: apply a request's ready memento evictions to its pages, token lists and prefix-cache hashes.

Representation. The ``Request`` is kept in *compacted* units: an evicted span is deleted from ``_all_token_ids``
(and from ``prompt_token_ids``/``num_prompt_tokens`` where it lies in the prompt), ``num_computed_tokens`` drops by
its length, and the KV slots after the hole are copied down into it. ``_output_token_ids`` stays logical, so
``max_tokens`` counts every generated token exactly as the transformers reference does.

Timing. An eviction whose trigger is at logical position ``t`` is applied at the start of the first ``schedule()``
after ``t`` was computed; while it is pending no step computes past :meth:`Compactor.compute_limit`. In
``restart_mode`` the eviction is applied as soon as every token before the first evicted block's memento is
computed, and ``num_computed_tokens`` is rewound to that memento (it is recomputed without its block).

Pages. Only slots are compacted; whole pages past the new length go back to the pool. Pages that will be written
and are shared (``ref_cnt > 1``, a prefix-cache hit) are copied first (copy on write); written pages of the request
that carry a prefix-cache hash lose it.

Prefix caching cannot lie. After the first eviction a request's block hashes are truncated at the first touched
block and later blocks are hashed with an extra key ``("memento", policy, digest of the evicted spans, salt)``, so
a request with the same compacted ids never hits them.

Preemption. A preempted compacted request is swapped (:mod:`~autogen_memento_vllm.swap`); when the swap buffer is
full, :meth:`Compactor.restore_logical` puts it back into logical units with a replayed tracker, so the re-prefill
evicts again at every trigger (exact: the same KV as before).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from vllm.v1.core.kv_cache_utils import get_request_block_hasher, hash_block_tokens
from vllm.v1.request import Request

from autogen_ext_memento.grammar import BlockTracker, MementoTokenIds

from ._common import PLUGIN_VERSION, MementoStepData, WorkerUpdate
from .state import MementoState, PendingEviction


class Compactor:
    """Applies evictions to one KV-cache group's pages and to the requests' token lists and hashes."""

    def __init__(self, manager: Any, pool: Any, block_size: int, hash_fn: Any) -> None:
        self.manager = manager
        self.pool = pool
        self.bs = block_size
        self.hash_fn = hash_fn

    # --- timing ----------------------------------------------------------------------------------------------------
    def compute_limit(self, state: MementoState) -> int:
        """Compacted index of the first token that must wait for the first pending eviction."""
        p = state.pending[0]
        if p.restart_from is not None:
            return state.compacted(p.restart_from)
        return state.compacted(p.trigger) + 1

    def apply_ready(self, request: Request, state: MementoState, step: MementoStepData) -> None:
        """Apply every pending eviction whose trigger is computed (none while a step of the request is in flight)."""
        while state.pending:
            p = state.pending[0]
            logical_done = request.num_computed_tokens + state.offset
            ready = logical_done >= p.restart_from if p.restart_from is not None else logical_done > p.trigger
            if not ready or request.num_in_flight_tokens:
                return
            state.pending.pop(0)
            if state.snapshot is not None and state.snapshot_pending > 0:
                state.snapshot_pending -= 1
            self._evict(request, state, p, step)

    # --- one eviction ------------------------------------------------------------------------------------------------
    def _evict(self, request: Request, state: MementoState, p: PendingEviction, step: MementoStepData) -> None:
        blocks = self.manager.req_to_blocks[request.request_id]
        moves: dict[int, int] = {}  # dst slot -> src slot, composed over the spans of this eviction
        first_touched: int | None = None
        for s, e in p.spans:
            a, b = state.compacted(s), state.compacted(e)
            if b - a <= 0:
                continue
            first_touched = a // self.bs if first_touched is None else min(first_touched, a // self.bs)
            self._evict_span(request, state, blocks, (s, e), (a, b), p.restart_from, moves)
        if p.restart_from is not None:
            request.num_computed_tokens = min(request.num_computed_tokens, state.compacted(p.restart_from))
            self._free_tail(blocks, math.ceil(request.num_computed_tokens / self.bs))
        if first_touched is not None:
            self._rehash(request, state, first_touched)
        step.copies.extend((src, dst) for dst, src in moves.items() if src != dst)
        step.updates[request.request_id] = self.worker_update(request, state)

    def _evict_span(
        self,
        request: Request,
        state: MementoState,
        blocks: list[Any],
        logical: tuple[int, int],
        span: tuple[int, int],
        restart_from: int | None,
        moves: dict[int, int],
    ) -> None:
        """Remove compacted ``span`` ``[a, b)``: plan slot moves, copy shared pages on write, free the tail."""
        bs = self.bs
        (s, e), (a, b) = logical, span
        d = b - a
        computed = request.num_computed_tokens
        # restart_mode: everything from the memento on is recomputed, so only what lies before it moves.
        keep_until = computed if restart_from is None else min(computed, state.compacted(restart_from))
        new_computed = max(a, keep_until - d) if keep_until > a else min(computed, a)
        old_slots = [blk.block_id * bs + i for blk in blocks for i in range(bs)]
        keep_blocks = math.ceil(new_computed / bs)
        for j in range(a // bs, min(keep_blocks, len(blocks))):
            blk = blocks[j]
            if blk.ref_cnt > 1:  # copy on write: a page shared with another request
                (fresh,) = self.pool.get_new_blocks(1)
                for i in range(j * bs, min(a, (j + 1) * bs)):
                    moves[fresh.block_id * bs + i % bs] = moves.get(old_slots[i], old_slots[i])
                self.pool.free_blocks([blk])
                blocks[j] = fresh
            elif blk.block_hash is not None:
                self.pool._maybe_evict_cached_block(blk)
        for i in range(b, b + max(0, new_computed - a)):
            dst = blocks[(i - d) // bs].block_id * bs + (i - d) % bs
            moves[dst] = moves.get(old_slots[i], old_slots[i])
        self._free_tail(blocks, keep_blocks)
        # Token lists: the request stays in compacted units; outputs stay logical.
        del request._all_token_ids[a:b]
        if a < request.num_prompt_tokens:
            cut = min(b, request.num_prompt_tokens) - a
            prompt = list(request.prompt_token_ids or [])
            del prompt[a : a + cut]
            request.prompt_token_ids = prompt
            request.num_prompt_tokens -= cut
        request.num_computed_tokens = new_computed
        state.offset += d
        state.record_eviction((s, e))
        state.stats.evictions += 1
        state.stats.evicted_tokens += d
        state.digest = hashlib.sha256(state.digest + repr((s, e, tuple(state.logical[s:e]))).encode()).digest()

    def _free_tail(self, blocks: list[Any], keep_blocks: int) -> None:
        tail = blocks[keep_blocks:]
        if tail:
            del blocks[keep_blocks:]
            self.pool.free_blocks(reversed(tail))

    # --- hashing -----------------------------------------------------------------------------------------------------
    def _rehash(self, request: Request, state: MementoState, first_touched: int) -> None:
        """Drop hashes from the first touched block on and hash later blocks with memento-aware keys."""
        del request.block_hashes[first_touched:]
        cached = self.manager.num_cached_block.get(request.request_id, 0)
        self.manager.num_cached_block[request.request_id] = min(cached, first_touched)
        if request._block_hasher is None:  # prefix caching is off
            return
        request._block_hasher = self.memento_hasher(state)
        request.update_block_hashes()

    def memento_hasher(self, state: MementoState) -> Any:
        """A block hasher for a compacted request: keys carry the rule, the evicted history, the salt and LoRA."""
        bs, fn = self.bs, self.hash_fn
        policy = (PLUGIN_VERSION, state.config.model_dump_json())

        def hasher(request: Request) -> list[Any]:
            out: list[Any] = []
            start = len(request.block_hashes) * bs
            parent = request.block_hashes[-1] if request.block_hashes else None
            toks = request.all_token_ids
            lora = request.lora_request.lora_name if request.lora_request is not None else None
            while start + bs <= len(toks):
                extra = ("memento", policy, state.digest, ("cache_salt", request.cache_salt), ("lora", lora))
                h = hash_block_tokens(fn, parent, toks[start : start + bs], extra)
                out.append(h)
                parent = h
                start += bs
            return out

        return hasher

    def plain_hasher(self) -> Any:
        """vLLM's own block hasher (for a request put back into logical units)."""
        return get_request_block_hasher(self.pool.hash_block_size, self.hash_fn)

    # --- worker side channel and preemption -------------------------------------------------------------------------
    def worker_update(self, request: Request, state: MementoState) -> WorkerUpdate:
        """What the worker needs to rebuild the request's cached state after a compaction or a restore."""
        blocks = self.manager.req_to_blocks.get(request.request_id, [])
        return WorkerUpdate(
            token_ids=list(request._all_token_ids),
            num_prompt_tokens=request.num_prompt_tokens,
            num_computed_tokens=request.num_computed_tokens,
            block_ids=[b.block_id for b in blocks],
            rope_offset=state.offset,
        )

    def restore_logical(self, request: Request, state: MementoState, ids: MementoTokenIds) -> MementoState:
        """Put a compacted request back into logical units (before a preemption); returns its replayed state.

        Compacted KV cannot be rebuilt from compacted ids (mementos carry their block's information): the
        re-prefill of the logical sequence evicts again at every trigger.
        """
        request._all_token_ids[:] = state.logical
        request.prompt_token_ids = list(state.prompt_logical)
        request.num_prompt_tokens = len(state.prompt_logical)
        fresh = state.fresh_copy(BlockTracker(ids, state.config))
        fresh.feed(list(state.logical))
        request.block_hashes.clear()
        if request._block_hasher is not None:
            request._block_hasher = self.plain_hasher()
            request.update_block_hashes()
        return fresh
