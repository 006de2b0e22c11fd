"""The control plane of the memento plugin: a ``Scheduler`` subclass that evicts closed blocks' KV at mementos.

Every memento request carries a :class:`MementoState`: a :class:`~autogen_ext_memento.grammar.BlockTracker` fed
with the request's *logical* tokens (prompt and outputs, at logical positions), the evictions it reported that are
not applied yet, and the request's RoPE offset (tokens evicted so far).

Representation. The ``Request`` is kept in *compacted* units: an evicted span is deleted from ``_all_token_ids``
(and from ``prompt_token_ids``/``num_prompt_tokens`` where it lies in the prompt), ``num_computed_tokens`` drops by
its length, and the KV slots after the hole are copied down into it. ``_output_token_ids`` stays logical, so
``max_tokens`` counts every generated token exactly as the transformers reference does. The worker adds the RoPE
offset to each new token's position (the KV index stays compact), so attention kernels are unmodified and kept
keys keep the phases they were computed with.

Timing (the grammar module's rule). An eviction whose trigger is at logical position ``t`` is applied at the start
of the first ``schedule()`` after ``t`` was computed, and no step may compute past ``t`` while it is pending: prompt
chunks are cut at ``t + 1`` (``_reserve_prefill_lookahead`` is the hook every scheduled request passes through) and
prefix-cache hits of memento requests are truncated there. In ``restart_mode`` the eviction is applied as soon as
every token before the first evicted block's memento is computed, and ``num_computed_tokens`` is rewound to that
memento, so the memento (and everything after it) is recomputed without its block, as in the reference.

Pages. Only slots are compacted; whole pages past the new length go back to the pool at once. Pages that will be
written by the compaction and are shared (``ref_cnt > 1``, a prefix-cache hit) are copied first (copy on write);
pages of the request that carry a prefix-cache hash lose it.

Prefix caching cannot lie. After the first eviction a request's block hashes are truncated at the first touched
block and later blocks are hashed with an extra key ``("memento", policy, digest of the evicted spans)``, so a
request with the same compacted ids never hits them. A memento request never reads a plain prefix-cache hit past
its first pending trigger (KV past it must be computed after the eviction).

Preemption. A preempted memento request is restored to its logical token list and re-prefilled from scratch; the
tracker is replayed, so prompt-style chunking re-applies every eviction (exact: same KV as before).

Sessions. A finished request with ``extra_args["memento_session"]`` keeps its pages in a session table (idle TTL,
page budget, LRU); the next request of that session whose logical prompt extends the session's logical history
adopts them and only its new tokens are prefilled. Any mismatch drops the session (a full logical prefill with
re-compaction follows, which is correct, only slower).

Requires ``--no-async-scheduling``: compaction happens between ``update_from_output`` and the next ``schedule``,
which is only safe when no step of the request is in flight (validated by the general plugin).
"""

from __future__ import annotations

import hashlib
import math
import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from vllm.logger import init_logger
from vllm.v1.core.kv_cache_utils import hash_block_tokens
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.request import Request, RequestStatus

from autogen_ext_memento.grammar import BlockTracker, EventKind, MementoConfig, MementoTokenIds, Span

from ._common import PLUGIN_VERSION, MementoStepData, PluginOptions, WorkerUpdate, request_memento_config

logger = init_logger(__name__)


@dataclass
class PendingEviction:
    """An eviction reported by the tracker and not applied yet (all positions logical)."""

    spans: tuple[Span, ...]
    trigger: int
    restart_from: int | None


@dataclass
class MementoStats:
    """Per-request accounting (what the session API and the tests report)."""

    evictions: int = 0
    evicted_tokens: int = 0
    computed_tokens: int = 0
    peak_live_tokens: int = 0
    anomalies: int = 0
    forced_block_ends: int = 0
    adopted_tokens: int = 0
    adopted_logical_tokens: int = 0
    preemptions: int = 0
    rebuilt: bool = False


@dataclass
class MementoState:
    """Memento bookkeeping of one request."""

    config: MementoConfig
    tracker: BlockTracker
    logical: list[int]
    prompt_logical: list[int]
    session: str | None = None
    offset: int = 0
    evicted: list[Span] = field(default_factory=list)
    pending: list[PendingEviction] = field(default_factory=list)
    digest: bytes = b""
    force: dict[int, int] = field(default_factory=dict)
    stats: MementoStats = field(default_factory=MementoStats)
    snapshot: BlockTracker | None = None  # tracker before the newest (uncomputed) output token
    snapshot_pending: int = 0
    # (logical computed tokens, live KV tokens, blocks held) after each step, for tests and benchmarks.
    trace: list[tuple[int, int, int]] = field(default_factory=list)

    def compacted(self, logical_pos: int) -> int:
        """Compacted index of a logical position that is not inside an evicted span."""
        before = 0
        for s, e in self.evicted:
            if e <= logical_pos:
                before += e - s
        return logical_pos - before


@dataclass
class Session:
    """A finished turn's compacted KV, kept for the next turn of the same conversation."""

    sid: str
    blocks: list[Any]
    compacted: list[int]
    logical: list[int]
    tracker: BlockTracker
    pending: list[PendingEviction]
    offset: int
    evicted: list[Span]
    digest: bytes
    block_hashes: list[Any]
    num_cached_blocks: int
    config: MementoConfig
    last_used: float
    turns: int = 1

    def summary(self, block_size: int) -> dict[str, Any]:
        return {
            "session_id": self.sid,
            "blocks": len(self.blocks),
            "kv_tokens": len(self.compacted),
            "kv_slots": len(self.blocks) * block_size,
            "logical_tokens": len(self.logical),
            "evicted_tokens": self.offset,
            "turns": self.turns,
            "idle_s": round(time.monotonic() - self.last_used, 3),
        }


class MementoScheduler(Scheduler):
    """``Scheduler`` that applies memento evictions, keeps sessions and forces tokens (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from . import register, validate_config

        validate_config(self.vllm_config)
        register()
        self.memento_options = PluginOptions.from_additional_config(self.vllm_config.additional_config)
        self.memento_ids = self.memento_options.token_ids or _load_token_ids(self.vllm_config)
        self.memento_states: dict[str, MementoState] = {}
        self.memento_sessions: OrderedDict[str, Session] = OrderedDict()
        self.memento_finished: OrderedDict[str, MementoStats] = OrderedDict()
        self.memento_traces: OrderedDict[str, list[tuple[int, int, int]]] = OrderedDict()
        self._step = MementoStepData()
        managers = self.kv_cache_manager.coordinator.single_type_managers
        if len(managers) != 1:
            raise ValueError(f"memento eviction needs exactly one KV-cache group, got {len(managers)}")
        self._manager = managers[0]
        if type(self._manager) is not FullAttentionManager:
            raise ValueError(
                f"memento eviction needs one full-attention KV-cache group, got {type(self._manager).__name__} "
                "(sliding-window, hybrid and state-space layers are not supported)"
            )
        self._pool = self.kv_cache_manager.block_pool
        self._bs = int(self._manager.block_size)
        self._hash_fn = _hash_fn(self.vllm_config)
        if self._pool.hash_block_size != self._bs:
            raise ValueError(f"memento: hash block size {self._pool.hash_block_size} != block size {self._bs}")
        num_blocks = self.kv_cache_config.num_blocks
        self._session_budget = int(num_blocks * self.memento_options.max_session_fraction)
        self.memento_pool_trace: list[tuple[int, int]] = []  # (step, used blocks)

    # --- requests ------------------------------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        cfg = None
        if request.sampling_params is not None and request.request_id not in self.requests:
            cfg = request_memento_config(self.memento_options, request.sampling_params.extra_args)
        if cfg is not None:
            extra = request.sampling_params.extra_args or {} if request.sampling_params else {}
            sid = extra.get("memento_session")
            force = {int(k): int(v) for k, v in (extra.get("memento_force") or {}).items()}
            prompt = list(request.prompt_token_ids or [])
            state = MementoState(cfg, BlockTracker(self.memento_ids, cfg), [], prompt, session=sid, force=force)
            self.memento_states[request.request_id] = state
            adopted = sid is not None and self._adopt_session(request, state, str(sid))
            if not adopted:
                if sid is not None and sid in self.memento_sessions:
                    state.stats.rebuilt = True
                    self._drop_session(str(sid))
                self._feed(request, state, prompt)
            state.snapshot = None
        super().add_request(request)

    def _feed(self, request: Request, state: MementoState, tokens: list[int]) -> None:
        """Feed logical tokens to the tracker and queue the evictions they cause."""
        base = len(state.logical)
        state.logical.extend(tokens)
        for i, tok in enumerate(tokens):
            for ev in state.tracker.feed(tok, base + i):
                if ev.kind is EventKind.ANOMALY:
                    state.stats.anomalies += 1
                elif ev.kind is EventKind.MEMENTO_COMPLETED and ev.evict and ev.trigger is not None:
                    restart = None
                    if state.config.restart_mode and ev.evicted_blocks:
                        restart = min(state.tracker.blocks[b].summary_start or 0 for b in ev.evicted_blocks)
                    state.pending.append(PendingEviction(tuple(ev.evict), ev.trigger, restart))

    def _update_request_with_output(
        self, request: Request, new_token_ids: list[int], is_stale: bool = False
    ) -> tuple[list[int], bool]:
        new_token_ids, stopped = super()._update_request_with_output(request, new_token_ids, is_stale)
        state = self.memento_states.get(request.request_id)
        if state is not None and new_token_ids:
            if state.tracker.must_close_block and new_token_ids[0] == self.memento_ids.block_end:
                state.stats.forced_block_ends += 1
            # Keep the tracker as it was before the newest token: that token is not computed yet, and a session
            # stored at the end of this turn must not have seen it (the next turn re-sends it).
            head, last = list(new_token_ids[:-1]), int(new_token_ids[-1])
            if head:
                self._feed(request, state, head)
            if state.session is not None:  # only sessions are stored; a copy per step is O(blocks)
                state.snapshot = state.tracker.copy()
                state.snapshot_pending = len(state.pending)
            self._feed(request, state, [last])
        return new_token_ids, stopped

    # --- scheduling --------------------------------------------------------------------------------------------------
    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        self._expire_sessions()
        for request in list(self.running):
            state = self.memento_states.get(request.request_id)
            if state is not None and state.pending:
                self._apply_ready(request, state)
        out = super().schedule(throttle_prefills)
        step = self._step
        self._step = MementoStepData()
        for req_id in out.num_scheduled_tokens:
            state = self.memento_states.get(req_id)
            if state is None:
                continue
            if state.offset:
                step.rope_offsets[req_id] = state.offset
            request = self.requests[req_id]
            tok = self._forced_token(request, state)
            if tok is not None:
                step.forced[req_id] = tok
        out.memento = step if step else None  # type: ignore[attr-defined]
        return out

    def _forced_token(self, request: Request, state: MementoState) -> int | None:
        idx = request.num_output_tokens
        if idx in state.force:
            return state.force[idx]
        if state.tracker.must_close_block:
            return self.memento_ids.block_end
        return None

    def _reserve_prefill_lookahead(self, request: Request, num_computed_tokens: int, num_new_tokens: int) -> int:
        n = int(super()._reserve_prefill_lookahead(request, num_computed_tokens, num_new_tokens))
        state = self.memento_states.get(request.request_id)
        if state is None or not state.pending:
            return n
        limit = self._compute_limit(state)  # compacted index of the first token that must wait
        return max(0, min(n, limit - num_computed_tokens))

    def _compute_limit(self, state: MementoState) -> int:
        p = state.pending[0]
        if p.restart_from is not None:
            return state.compacted(p.restart_from)
        return state.compacted(p.trigger) + 1

    def _get_local_prefix_cache_hit(self, request: Request) -> tuple[Any, int, int, bool]:
        blocks, num_local, boundary, diverged = super()._get_local_prefix_cache_hit(request)
        state = self.memento_states.get(request.request_id)
        if state is not None and state.pending and num_local > 0:
            # KV past the first trigger must be computed after that eviction; a plain hit computed it before.
            limit = self._compute_limit(state)
            if num_local > limit:
                aligned = limit // self._bs * self._bs
                blocks = self.kv_cache_manager.truncate_computed_blocks(blocks, aligned)
                num_local = aligned
                boundary = min(boundary, aligned)
        return blocks, num_local, boundary, diverged

    # --- eviction --------------------------------------------------------------------------------------------------
    def _apply_ready(self, request: Request, state: MementoState) -> None:
        while state.pending:
            p = state.pending[0]
            logical_done = request.num_computed_tokens + state.offset
            if p.restart_from is not None:
                ready = logical_done >= p.restart_from
            else:
                ready = logical_done > p.trigger
            if not ready or request.num_in_flight_tokens:
                return
            state.pending.pop(0)
            if state.snapshot is not None and state.snapshot_pending > 0:
                state.snapshot_pending -= 1
            self._evict(request, state, p)

    def _evict(self, request: Request, state: MementoState, p: PendingEviction) -> None:
        bs = self._bs
        blocks = self._manager.req_to_blocks[request.request_id]
        computed = request.num_computed_tokens
        moves: dict[int, int] = {}  # dst slot -> src slot, composed over the spans of this eviction
        first_touched: int | None = None
        for s, e in p.spans:
            a, b = state.compacted(s), state.compacted(e)
            d = b - a
            if d <= 0:
                continue
            if p.restart_from is not None:
                # Everything from the memento on is recomputed: move only what lies before it.
                keep_until = min(computed, state.compacted(p.restart_from))
            else:
                keep_until = computed
            new_computed = max(a, keep_until - d) if keep_until > a else min(computed, a)
            first_touched = a // bs if first_touched is None else min(first_touched, a // bs)
            old_slots = [blk.block_id * bs + i for blk in blocks for i in range(bs)]
            keep_blocks = math.ceil(new_computed / bs)
            # Copy on write: pages that will be written and are shared with another request.
            for j in range(a // bs, min(keep_blocks, len(blocks))):
                blk = blocks[j]
                if blk.ref_cnt > 1:
                    (fresh,) = self._pool.get_new_blocks(1)
                    for i in range(j * bs, min(a, (j + 1) * bs)):
                        moves[fresh.block_id * bs + i % bs] = moves.get(old_slots[i], old_slots[i])
                    self._pool.free_blocks([blk])
                    blocks[j] = fresh
                elif blk.block_hash is not None:
                    self._pool._maybe_evict_cached_block(blk)
            for i in range(b, b + max(0, new_computed - a)):
                dst_blk = blocks[(i - d) // bs]
                dst = dst_blk.block_id * bs + (i - d) % bs
                moves[dst] = moves.get(old_slots[i], old_slots[i])
            tail = blocks[keep_blocks:]
            if tail:
                del blocks[keep_blocks:]
                self._pool.free_blocks(reversed(tail))
            # Token lists (the request stays in compacted units; outputs stay logical).
            del request._all_token_ids[a:b]
            if a < request.num_prompt_tokens:
                cut = min(b, request.num_prompt_tokens) - a
                prompt = list(request.prompt_token_ids or [])
                del prompt[a : a + cut]
                request.prompt_token_ids = prompt
                request.num_prompt_tokens -= cut
            request.num_computed_tokens = new_computed
            computed = new_computed
            state.offset += d
            state.evicted.append((s, e))
            state.evicted.sort()
            state.stats.evictions += 1
            state.stats.evicted_tokens += d
            state.digest = hashlib.sha256(
                state.digest + repr((s, e, tuple(state.logical[s:e]))).encode()
            ).digest()
        if p.restart_from is not None:
            request.num_computed_tokens = min(request.num_computed_tokens, state.compacted(p.restart_from))
            keep_blocks = math.ceil(request.num_computed_tokens / bs)
            tail = blocks[keep_blocks:]
            if tail:
                del blocks[keep_blocks:]
                self._pool.free_blocks(reversed(tail))
        if first_touched is not None:
            self._rehash(request, state, first_touched)
        self._step.copies.extend((src, dst) for dst, src in moves.items() if src != dst)
        self._push_update(request, state)

    def _rehash(self, request: Request, state: MementoState, first_touched: int) -> None:
        """Drop hashes from the first touched block on and hash later blocks with memento-aware keys."""
        del request.block_hashes[first_touched:]
        cached = self._manager.num_cached_block.get(request.request_id, 0)
        self._manager.num_cached_block[request.request_id] = min(cached, first_touched)
        if request._block_hasher is None:  # prefix caching is off
            return
        request._block_hasher = self._memento_hasher(state)
        request.update_block_hashes()

    def _memento_hasher(self, state: MementoState) -> Any:
        bs, fn = self._bs, self._hash_fn
        policy = (PLUGIN_VERSION, state.config.model_dump_json())

        def hasher(request: Request) -> list[Any]:
            out: list[Any] = []
            start = len(request.block_hashes) * bs
            parent = request.block_hashes[-1] if request.block_hashes else None
            toks = request.all_token_ids
            while start + bs <= len(toks):
                extra = ("memento", policy, state.digest, ("cache_salt", request.cache_salt))
                h = hash_block_tokens(fn, parent, toks[start : start + bs], extra)
                out.append(h)
                parent = h
                start += bs
            return out

        return hasher

    def _push_update(self, request: Request, state: MementoState) -> None:
        toks = list(request._all_token_ids)
        blocks = self._manager.req_to_blocks.get(request.request_id, [])
        self._step.updates[request.request_id] = WorkerUpdate(
            token_ids=toks,
            num_prompt_tokens=request.num_prompt_tokens,
            num_computed_tokens=request.num_computed_tokens,
            block_ids=[b.block_id for b in blocks],
            rope_offset=state.offset,
        )

    # --- preemption ----------------------------------------------------------------------------------------------
    def _preempt_request(self, request: Request, timestamp: float, drop_stale_output: bool = False) -> None:
        state = self.memento_states.get(request.request_id)
        if state is not None:
            state.stats.preemptions += 1
        if state is not None and (state.offset or state.evicted):
            # Compacted KV cannot be rebuilt from compacted ids (mementos carry their block's information):
            # restore the logical sequence and let the re-prefill evict again at every trigger.
            request._all_token_ids[:] = state.logical
            request.prompt_token_ids = list(state.prompt_logical)
            request.num_prompt_tokens = len(state.prompt_logical)
            fresh = MementoState(
                state.config,
                BlockTracker(self.memento_ids, state.config),
                [],
                state.prompt_logical,
                session=state.session,
                force=state.force,
                stats=state.stats,
            )
            self.memento_states[request.request_id] = fresh
            self._feed(request, fresh, list(state.logical))
            request.block_hashes.clear()
            if request._block_hasher is not None:
                request._block_hasher = self._plain_hasher
                request.update_block_hashes()
            super()._preempt_request(request, timestamp, drop_stale_output)
            self._push_update(request, fresh)
            return
        super()._preempt_request(request, timestamp, drop_stale_output)

    @property
    def _plain_hasher(self) -> Any:
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher

        return get_request_block_hasher(self._pool.hash_block_size, self._hash_fn)

    # --- accounting ------------------------------------------------------------------------------------------------
    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output: Any) -> Any:
        for req_id, n in scheduler_output.num_scheduled_tokens.items():
            st = self.memento_states.get(req_id)
            if st is not None:
                st.stats.computed_tokens += n
        out = super().update_from_output(scheduler_output, model_runner_output)
        for req_id in scheduler_output.num_scheduled_tokens:
            state = self.memento_states.get(req_id)
            request = self.requests.get(req_id)
            if state is None or request is None:
                continue
            live = request.num_computed_tokens
            state.stats.peak_live_tokens = max(state.stats.peak_live_tokens, live)
            state.trace.append(
                (live + state.offset, live, len(self._manager.req_to_blocks.get(req_id, [])))
            )
        self.memento_pool_trace.append((len(self.memento_pool_trace), self._used_blocks()))
        if len(self.memento_pool_trace) > 200_000:  # a long-running server: keep the recent half
            del self.memento_pool_trace[:100_000]
        return out

    def _used_blocks(self) -> int:
        return int(self._pool.num_gpu_blocks - 1 - self._pool.get_num_free_blocks())

    # --- sessions ----------------------------------------------------------------------------------------------------
    def _free_request_blocks(self, request: Request) -> None:
        state = self.memento_states.get(request.request_id)
        if (
            state is not None
            and state.session is not None
            and request.is_finished()
            and request.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH_CAPPED)
            and request.num_computed_tokens > 0
        ):
            self._store_session(request, state)
            return
        super()._free_request_blocks(request)

    def _free_blocks(self, request: Request) -> None:
        super()._free_blocks(request)
        state = self.memento_states.pop(request.request_id, None)
        if state is not None:
            self.memento_finished[request.request_id] = state.stats
            self.memento_traces[request.request_id] = state.trace
            while len(self.memento_finished) > 1024:
                self.memento_finished.popitem(last=False)
            while len(self.memento_traces) > 64:
                self.memento_traces.popitem(last=False)

    def _store_session(self, request: Request, state: MementoState) -> None:
        sid = str(state.session)
        computed = request.num_computed_tokens
        num_cached = self._manager.num_cached_block.get(request.request_id, 0)
        blocks = list(self.kv_cache_manager.pop_blocks_for_free(request))
        keep = math.ceil(computed / self._bs)
        if len(blocks) > keep:
            self._pool.free_blocks(reversed(blocks[keep:]))
            blocks = blocks[:keep]
        # The newest output token was sampled but never computed: the session is the state before it.
        tracker = state.snapshot if state.snapshot is not None else state.tracker
        pending = state.pending[: state.snapshot_pending] if state.snapshot is not None else list(state.pending)
        logical_done = computed + state.offset
        hashes = list(request.block_hashes[: computed // self._bs])
        self._drop_session(sid)
        self.memento_sessions[sid] = Session(
            sid=sid,
            blocks=blocks,
            compacted=list(request._all_token_ids[:computed]),
            logical=list(state.logical[:logical_done]),
            tracker=tracker.copy(),
            pending=list(pending),
            offset=state.offset,
            evicted=list(state.evicted),
            digest=state.digest,
            block_hashes=hashes,
            num_cached_blocks=min(num_cached, len(hashes), len(blocks)),
            config=state.config,
            last_used=time.monotonic(),
        )
        self._enforce_session_budget()

    def _adopt_session(self, request: Request, state: MementoState, sid: str) -> bool:
        sess = self.memento_sessions.get(sid)
        if sess is None or sess.config != state.config:
            return False
        prompt = state.prompt_logical
        n = len(sess.logical)
        if len(prompt) <= n or prompt[:n] != sess.logical:
            return False
        self.memento_sessions.pop(sid)
        suffix = prompt[n:]
        compacted = sess.compacted + suffix
        request._all_token_ids[:] = compacted
        request.prompt_token_ids = list(compacted)
        request.num_prompt_tokens = len(compacted)
        request.num_computed_tokens = len(sess.compacted)
        self._manager.req_to_blocks[request.request_id] = sess.blocks
        self._manager.num_cached_block[request.request_id] = sess.num_cached_blocks
        request.block_hashes[:] = sess.block_hashes
        state.tracker = sess.tracker
        state.logical = list(sess.logical)
        state.pending = list(sess.pending)
        state.offset = sess.offset
        state.evicted = list(sess.evicted)
        state.digest = sess.digest
        state.stats.adopted_tokens = len(sess.compacted)
        state.stats.adopted_logical_tokens = n
        if request._block_hasher is not None and (state.offset or state.evicted):
            request._block_hasher = self._memento_hasher(state)
        request.update_block_hashes()
        self._feed(request, state, suffix)
        return True

    def _drop_session(self, sid: str) -> None:
        sess = self.memento_sessions.pop(sid, None)
        if sess is not None and sess.blocks:
            self._pool.free_blocks(reversed(sess.blocks))

    def _expire_sessions(self) -> None:
        if not self.memento_sessions:
            return
        now = time.monotonic()
        ttl = self.memento_options.session_ttl_s
        for sid in [s for s, v in self.memento_sessions.items() if now - v.last_used > ttl]:
            self._drop_session(sid)

    def _enforce_session_budget(self) -> None:
        while self.memento_sessions and (
            sum(len(s.blocks) for s in self.memento_sessions.values()) > self._session_budget
            or len(self.memento_sessions) > self.memento_options.max_sessions
        ):
            oldest = next(iter(self.memento_sessions))
            self._drop_session(oldest)

    def memento_rpc(self, op: str, arg: str | None = None) -> Any:
        """Session control from the API server (through the engine-core utility the general plugin adds)."""
        if op == "list":
            return [s.summary(self._bs) for s in self.memento_sessions.values()]
        if op == "get":
            sess = self.memento_sessions.get(str(arg))
            return sess.summary(self._bs) if sess is not None else None
        if op == "close":
            existed = str(arg) in self.memento_sessions
            self._drop_session(str(arg))
            return existed
        if op == "stats":
            key = str(arg)
            hits = [v for k, v in self.memento_finished.items() if k == key or k.startswith(key + "-")]
            return dict(vars(hits[-1])) if hits else None
        if op == "memory":
            return {
                "block_size": self._bs,
                "num_blocks": int(self._pool.num_gpu_blocks),
                "free_blocks": int(self._pool.get_num_free_blocks()),
                "session_blocks": sum(len(s.blocks) for s in self.memento_sessions.values()),
                "session_budget_blocks": self._session_budget,
                "sessions": len(self.memento_sessions),
            }
        if op == "config":
            return {
                "memento": self.memento_options.memento.model_dump(),
                "token_ids": list(self.memento_ids.as_tuple()),
                "max_model_len": int(self.max_model_len),
                "block_size": self._bs,
            }
        raise ValueError(f"unknown memento op {op!r}")


def _hash_fn(vllm_config: Any) -> Any:
    from vllm.utils.hashing import get_hash_fn_by_name

    return get_hash_fn_by_name(vllm_config.cache_config.prefix_caching_hash_algo)


def _load_token_ids(vllm_config: Any) -> MementoTokenIds:
    from transformers import AutoTokenizer

    mc = vllm_config.model_config
    tok = AutoTokenizer.from_pretrained(mc.tokenizer, trust_remote_code=mc.trust_remote_code)
    return MementoTokenIds.from_tokenizer(tok)


__all__ = ["MementoScheduler", "MementoState", "PendingEviction", "Session", "bisect_right"]
