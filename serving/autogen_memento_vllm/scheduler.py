"""The control plane of the memento plugin: a ``Scheduler`` subclass wiring vLLM's hooks to the plugin's parts.

Every memento request carries a :class:`~autogen_memento_vllm.state.MementoState` (a ``BlockTracker`` fed with
the request's *logical* tokens, the evictions not applied yet, the RoPE offset). The parts, one job each:

* :mod:`~autogen_memento_vllm.eviction` (:class:`Compactor`): applies ready evictions to pages, token lists and
  prefix-cache hashes, and restores a compacted request to logical units before a preemption;
* :mod:`~autogen_memento_vllm.registry` (:class:`SessionRegistry`): finished turns' compacted KV per tenant
  (``cache_salt``, LoRA) and session id, with TTL, page budget and count limits;
* :mod:`~autogen_memento_vllm.admission` (:class:`Admission`): memento-aware admission (a waiting memento request
  is admitted only when the pool, projected forward over a look-ahead window with every request's learned sawtooth
  and the pages of requests that finish, still holds it) and the release of idle sessions before a running
  request would be preempted;
* :mod:`~autogen_memento_vllm.swap` (:class:`Swapper`): preemption by swap: a preempted compacted request's pages
  go to a host buffer and come back by a copy when it resumes (recompute of the logical history is the fallback);
* this module: the hooks (``add_request``, ``schedule``, ``_update_request_with_output``, ``_preempt_request``,
  freeing), the logical length cap, forced tokens and the ``memento_rpc`` session control.

Lengths. A memento request's *logical* length (compacted tokens plus evicted ones) is capped at ``max_model_len``
exactly as the transformers backend caps it (finish reason ``length``): RoPE positions therefore never pass the
model's limit, and a preempted request's logical token list always fits the worker's input batch.

Timing. An eviction with trigger ``t`` is applied at the first ``schedule()`` after ``t`` was computed; while it is
pending no step computes past it (``_reserve_prefill_lookahead`` cuts prompt chunks there and prefix-cache hits are
truncated there).

Requires ``--no-async-scheduling``: compaction happens between ``update_from_output`` and the next ``schedule``,
which is only safe when no step of the request is in flight (validated at start-up with the other limits).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from vllm.logger import init_logger
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.request import Request, RequestStatus

from autogen_ext_memento.grammar import BlockTracker, MementoTokenIds

from ._common import MementoStepData, PluginOptions, request_memento_config
from .admission import Admission
from .eviction import Compactor
from .registry import SessionKey, SessionLimits, SessionRegistry, Tenant, tenant_of
from .state import MementoState, MementoStats, PendingEviction
from .swap import Swapper

logger = init_logger(__name__)


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
        self.memento_finished: OrderedDict[str, MementoStats] = OrderedDict()
        self.memento_traces: OrderedDict[str, list[tuple[int, int, int]]] = OrderedDict()
        self.memento_pool_trace: list[tuple[int, int]] = []  # (step, used blocks)
        self.memento_running_trace: list[int] = []  # running requests after each step
        self._step = MementoStepData()
        managers = self.kv_cache_manager.coordinator.single_type_managers
        if len(managers) != 1:
            raise ValueError(f"memento eviction needs exactly one KV-cache group, got {len(managers)}")
        manager = managers[0]
        if type(manager) is not FullAttentionManager:
            raise ValueError(
                f"memento eviction needs one full-attention KV-cache group, got {type(manager).__name__} "
                "(sliding-window, hybrid and state-space layers are not supported)"
            )
        self._manager = manager
        self._pool = self.kv_cache_manager.block_pool
        self._bs = int(manager.block_size)
        if self._pool.hash_block_size != self._bs:
            raise ValueError(f"memento: hash block size {self._pool.hash_block_size} != block size {self._bs}")
        self.memento_compactor = Compactor(manager, self._pool, self._bs, _hash_fn(self.vllm_config))
        self.memento_sessions = SessionRegistry(
            self.kv_cache_manager, manager, self._pool, self._bs, self._session_limits()
        )
        self.memento_admission = Admission(self, self.memento_options)
        self.memento_admission.install()
        self.memento_swap = Swapper(self, self.memento_options.swap_space_gib)
        self.memento_swap.install()

    def _session_limits(self) -> SessionLimits:
        opts = self.memento_options
        budget = int(self.kv_cache_config.num_blocks * opts.max_session_fraction)
        if opts.max_session_blocks is not None:
            budget = min(budget, opts.max_session_blocks)
        return SessionLimits(ttl_s=opts.session_ttl_s, budget_blocks=budget, max_sessions=opts.max_sessions)

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
            if sid is None or not self._adopt(request, state, self.session_key(request, str(sid))):
                state.feed(prompt)
            state.snapshot = None
        super().add_request(request)

    @staticmethod
    def session_key(request: Request, sid: str) -> SessionKey:
        """The registry key of session ``sid`` in the request's tenant (salt, LoRA)."""
        salt, lora = tenant_of(request)
        return (salt, lora, sid)

    def _adopt(self, request: Request, state: MementoState, key: SessionKey) -> bool:
        sess = self.memento_sessions.adopt(key, request, state, self.memento_compactor.memento_hasher)
        if sess is not None:
            state.feed(list(state.prompt_logical[len(sess.logical) :]))
            return True
        if key in self.memento_sessions:
            state.stats.rebuilt = True
            self.memento_sessions.drop(key)
        return False

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
                state.feed(head)
            if state.session is not None:  # only sessions are stored; a copy per step is O(blocks)
                state.snapshot = state.tracker.copy()
                state.snapshot_pending = len(state.pending)
            state.feed([last])
            # vLLM checks the compacted length; the logical length is what RoPE and the worker's batch see.
            if not stopped and request.num_tokens + state.offset >= self.max_model_len:
                request.status = RequestStatus.FINISHED_LENGTH_CAPPED
                state.stats.length_capped = True
                stopped = True
        return new_token_ids, stopped

    # --- scheduling --------------------------------------------------------------------------------------------------
    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        self.memento_sessions.expire()
        for request in list(self.running):
            state = self.memento_states.get(request.request_id)
            if state is not None and state.pending:
                self.memento_compactor.apply_ready(request, state, self._step)
        self.memento_admission.begin_step()
        out = super().schedule(throttle_prefills)
        step = self._step
        self._step = MementoStepData()
        self.memento_swap.end_step(step)
        if step.swap_in and out.new_block_ids_to_zero:  # pages a swap-in fills must not be zeroed after it
            filled = {b for pages in step.swap_in.values() for b in pages}
            out.new_block_ids_to_zero = [b for b in out.new_block_ids_to_zero if b not in filled] or None
        for req_id in out.num_scheduled_tokens:
            state = self.memento_states.get(req_id)
            if state is None:
                continue
            if state.offset:
                step.rope_offsets[req_id] = state.offset
            tok = self._forced_token(self.requests[req_id], state)
            if tok is not None:
                step.forced[req_id] = tok
        out.memento = step if step else None  # type: ignore[attr-defined,unused-ignore]
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
        limit = self.memento_compactor.compute_limit(state)  # compacted index of the first token that must wait
        return max(0, min(n, limit - num_computed_tokens))

    def _get_local_prefix_cache_hit(self, request: Request) -> tuple[Any, int, int, bool]:
        swapped = self.memento_swap.local_hit(request)
        if swapped is not None:
            return swapped
        blocks, num_local, boundary, diverged = super()._get_local_prefix_cache_hit(request)
        state = self.memento_states.get(request.request_id)
        if state is not None and state.pending and num_local > 0:
            # KV past the first trigger must be computed after that eviction; a plain hit computed it before.
            limit = self.memento_compactor.compute_limit(state)
            if num_local > limit:
                aligned = limit // self._bs * self._bs
                blocks = self.kv_cache_manager.truncate_computed_blocks(blocks, aligned)
                num_local = aligned
                boundary = min(boundary, aligned)
        return blocks, num_local, boundary, diverged

    # --- preemption ----------------------------------------------------------------------------------------------
    def _preempt_request(self, request: Request, timestamp: float, drop_stale_output: bool = False) -> None:
        state = self.memento_states.get(request.request_id)
        if state is not None:
            state.stats.preemptions += 1
        if state is not None and state.pending:  # a ready eviction is applied now: a waiting request never is
            self.memento_compactor.apply_ready(request, state, self._step)
        if state is not None and (state.offset or state.evicted):
            if self.memento_swap.swap_out(request, state, self._step):
                super()._preempt_request(request, timestamp, drop_stale_output)
                return
            fresh = self.memento_compactor.restore_logical(request, state, self.memento_ids)
            self.memento_states[request.request_id] = fresh
            super()._preempt_request(request, timestamp, drop_stale_output)
            self._step.updates[request.request_id] = self.memento_compactor.worker_update(request, fresh)
            return
        super()._preempt_request(request, timestamp, drop_stale_output)

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
            state.trace.append((live + state.offset, live, len(self._manager.req_to_blocks.get(req_id, []))))
        self.memento_pool_trace.append((len(self.memento_pool_trace), self.used_blocks()))
        self.memento_running_trace.append(len(self.running))
        if len(self.memento_pool_trace) > 200_000:  # a long-running server: keep the recent half
            del self.memento_pool_trace[:100_000]
            del self.memento_running_trace[:100_000]
        return out

    def used_blocks(self) -> int:
        """Pages in use (requests and sessions), the null page excluded."""
        return int(self._pool.num_gpu_blocks - 1 - self._pool.get_num_free_blocks())

    # --- freeing and sessions ------------------------------------------------------------------------------------------
    def _free_request_blocks(self, request: Request) -> None:
        state = self.memento_states.get(request.request_id)
        if (
            state is not None
            and state.session is not None
            and request.is_finished()
            and request.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH_CAPPED)
            and request.num_computed_tokens > 0
        ):
            self.memento_sessions.store(self.session_key(request, str(state.session)), request, state)
            return
        super()._free_request_blocks(request)

    def _free_blocks(self, request: Request) -> None:
        super()._free_blocks(request)
        self.memento_swap.forget(request.request_id, self._step)
        state = self.memento_states.pop(request.request_id, None)
        if state is not None:
            self.memento_admission.learn(state)
            self.memento_finished[request.request_id] = state.stats
            self.memento_traces[request.request_id] = state.trace
            while len(self.memento_finished) > 1024:
                self.memento_finished.popitem(last=False)
            while len(self.memento_traces) > 64:
                self.memento_traces.popitem(last=False)

    def memento_rpc(self, op: str, arg: str | None = None, tenant: Sequence[str | None] | None = None) -> Any:
        """Session control from the API server (through the engine-core utility the general plugin adds).

        ``tenant`` is ``(cache_salt, LoRA name)``; session operations only see that tenant's sessions.
        """
        who: Tenant = (tenant[0], tenant[1]) if tenant is not None else (None, None)
        reg = self.memento_sessions
        if op == "list":
            return reg.list(who)
        if op in ("get", "close"):
            key = (who[0], who[1], str(arg))
            if op == "close":
                return reg.drop(key)
            sess = reg.get(key)
            return sess.summary(self._bs) if sess is not None else None
        if op == "expire":
            return reg.expire()
        if op == "stats":
            hits = [v for k, v in self.memento_finished.items() if k == arg or k.startswith(f"{arg}-")]
            return dict(vars(hits[-1])) if hits else None
        if op == "memory":
            return self._memory_summary()
        if op == "limits":
            return reg.limits.summary()
        if op == "config":
            return {
                "memento": self.memento_options.memento.model_dump(),
                "token_ids": list(self.memento_ids.as_tuple()),
                "max_model_len": int(self.max_model_len),
                "block_size": self._bs,
                "limits": reg.limits.summary(),
            }
        raise ValueError(f"unknown memento op {op!r}")

    def _memory_summary(self) -> dict[str, Any]:
        reg = self.memento_sessions
        return {
            "block_size": self._bs,
            "num_blocks": int(self._pool.num_gpu_blocks),
            "free_blocks": int(self._pool.get_num_free_blocks()),
            "session_blocks": reg.blocks_held(),
            "session_budget_blocks": reg.limits.budget_blocks,
            "sessions": len(reg),
            "sessions_released_for_running": self.memento_admission.released_blocks,
            "admissions_deferred": self.memento_admission.deferred,
            **self.memento_swap.summary(),
        }


def _hash_fn(vllm_config: Any) -> Any:
    from vllm.utils.hashing import get_hash_fn_by_name

    return get_hash_fn_by_name(vllm_config.cache_config.prefix_caching_hash_algo)


def _load_token_ids(vllm_config: Any) -> MementoTokenIds:
    from transformers import AutoTokenizer

    mc = vllm_config.model_config
    tok = AutoTokenizer.from_pretrained(mc.tokenizer, trust_remote_code=mc.trust_remote_code)
    return MementoTokenIds.from_tokenizer(tok)


__all__ = ["MementoScheduler", "MementoState", "MementoStats", "PendingEviction"]
