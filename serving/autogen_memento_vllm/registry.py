"""The session registry: finished turns' compacted KV, pinned per tenant until the conversation's next turn.

A request with ``extra_args["memento_session"]`` that finishes keeps its pages here; the next request of the same
session whose logical prompt extends the session's logical history adopts them and only its new tokens are
prefilled. Any mismatch drops the session (a full logical prefill with re-compaction follows: correct, only slower).

Tenancy. A session is keyed by ``(cache_salt, LoRA name, session id)``: a request only ever sees, adopts or closes
sessions of its own salt and adapter, so two tenants may use the same session id without meeting. Salts should be
secret per tenant (vLLM's ``cache_salt`` model).

Limits (:class:`SessionLimits`): an idle TTL (checked at each ``schedule()`` and by the API server's sweep timer),
a page budget and a session count; beyond them sessions are dropped least-recently-used first. Idle sessions can
also be released on demand (:meth:`SessionRegistry.release_lru`) before a running request would be preempted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from vllm.v1.request import Request

from autogen_ext_memento.grammar import BlockTracker, MementoConfig, Span

from .state import MementoState, PendingEviction

Tenant = tuple[str | None, str | None]
"""``(cache_salt, LoRA name)`` of a request; ``(None, None)`` is the default tenant."""
SessionKey = tuple[str | None, str | None, str]
"""``(cache_salt, LoRA name, session id)``."""


def tenant_of(request: Request) -> Tenant:
    """The tenant a request belongs to."""
    lora = request.lora_request.lora_name if request.lora_request is not None else None
    return (request.cache_salt, lora)


@dataclass(frozen=True)
class SessionLimits:
    """How much the registry may hold: idle seconds, pages and sessions."""

    ttl_s: float
    budget_blocks: int
    max_sessions: int

    def summary(self) -> dict[str, Any]:
        """The limits as reported by ``GET /v1/memento/sessions``."""
        return {
            "session_ttl_s": self.ttl_s,
            "session_budget_blocks": self.budget_blocks,
            "max_sessions": self.max_sessions,
        }


@dataclass
class Session:
    """A finished turn's compacted KV, kept for the next turn of the same conversation."""

    key: SessionKey
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
        """What the session API reports about one session."""
        return {
            "session_id": self.key[2],
            "blocks": len(self.blocks),
            "kv_tokens": len(self.compacted),
            "kv_slots": len(self.blocks) * block_size,
            "logical_tokens": len(self.logical),
            "evicted_tokens": self.offset,
            "turns": self.turns,
            "idle_s": round(time.monotonic() - self.last_used, 3),
        }


class SessionRegistry:
    """Pinned sessions of one scheduler, keyed by tenant and id (see the module docstring)."""

    def __init__(self, kv_cache_manager: Any, manager: Any, pool: Any, block_size: int, limits: SessionLimits) -> None:
        self.kv_cache_manager = kv_cache_manager
        self.manager = manager
        self.pool = pool
        self.bs = block_size
        self.limits = limits
        self.sessions: OrderedDict[SessionKey, Session] = OrderedDict()

    # --- queries -----------------------------------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self.sessions

    def __len__(self) -> int:
        return len(self.sessions)

    def blocks_held(self) -> int:
        """Pages pinned by all sessions."""
        return sum(len(s.blocks) for s in self.sessions.values())

    def list(self, tenant: Tenant) -> list[dict[str, Any]]:
        """Summaries of the tenant's sessions (never another tenant's)."""
        return [s.summary(self.bs) for k, s in self.sessions.items() if (k[0], k[1]) == tenant]

    def get(self, key: SessionKey) -> Session | None:
        """The session under ``key``, if held."""
        return self.sessions.get(key)

    # --- store and adopt ---------------------------------------------------------------------------------------------
    def store(self, key: SessionKey, request: Request, state: MementoState) -> None:
        """Keep a finished request's computed pages (and its tracker before its last, uncomputed token)."""
        computed = request.num_computed_tokens
        num_cached = self.manager.num_cached_block.get(request.request_id, 0)
        blocks = list(self.kv_cache_manager.pop_blocks_for_free(request))
        keep = math.ceil(computed / self.bs)
        if len(blocks) > keep:
            self.pool.free_blocks(reversed(blocks[keep:]))
            blocks = blocks[:keep]
        # The newest output token was sampled but never computed: the session is the state before it.
        tracker = state.snapshot if state.snapshot is not None else state.tracker
        pending = state.pending[: state.snapshot_pending] if state.snapshot is not None else list(state.pending)
        hashes = list(request.block_hashes[: computed // self.bs])
        turns = self.sessions[key].turns + 1 if key in self.sessions else 1
        self.drop(key)
        self.sessions[key] = Session(
            key=key,
            blocks=blocks,
            compacted=list(request._all_token_ids[:computed]),
            logical=list(state.logical[: computed + state.offset]),
            tracker=tracker.copy(),
            pending=list(pending),
            offset=state.offset,
            evicted=list(state.evicted),
            digest=state.digest,
            block_hashes=hashes,
            num_cached_blocks=min(num_cached, len(hashes), len(blocks)),
            config=state.config,
            last_used=time.monotonic(),
            turns=turns,
        )
        self.enforce_limits()

    def adopt(self, key: SessionKey, request: Request, state: MementoState, hasher: Any) -> Session | None:
        """Hand the session's pages to ``request`` if its logical prompt extends the session's history.

        On success the request holds the session's compacted tokens as computed, the state carries the session's
        tracker, evictions and offset, and the session leaves the registry. ``hasher(state)`` makes the
        memento-aware block hasher. The caller feeds the new suffix to the tracker.
        """
        sess = self.sessions.get(key)
        if sess is None or sess.config != state.config or tenant_of(request) != (key[0], key[1]):
            return None
        prompt = state.prompt_logical
        n = len(sess.logical)
        if len(prompt) <= n or prompt[:n] != sess.logical:
            return None
        self.sessions.pop(key)
        compacted = sess.compacted + prompt[n:]
        request._all_token_ids[:] = compacted
        request.prompt_token_ids = list(compacted)
        request.num_prompt_tokens = len(compacted)
        request.num_computed_tokens = len(sess.compacted)
        self.manager.req_to_blocks[request.request_id] = sess.blocks
        self.manager.num_cached_block[request.request_id] = sess.num_cached_blocks
        request.block_hashes[:] = sess.block_hashes
        state.tracker = sess.tracker
        state.logical = list(sess.logical)
        state.pending = list(sess.pending)
        state.offset = sess.offset
        state.restore_evictions(sess.evicted)
        state.digest = sess.digest
        state.stats.adopted_tokens = len(sess.compacted)
        state.stats.adopted_logical_tokens = n
        if request._block_hasher is not None and (state.offset or state.evicted):
            request._block_hasher = hasher(state)
        request.update_block_hashes()
        return sess

    # --- release -------------------------------------------------------------------------------------------------------
    def drop(self, key: SessionKey) -> bool:
        """Release a session's pages; whether it was held."""
        sess = self.sessions.pop(key, None)
        if sess is None:
            return False
        if sess.blocks:
            self.pool.free_blocks(reversed(sess.blocks))
        return True

    def expire(self, now: float | None = None) -> int:
        """Drop sessions idle for longer than the TTL; how many were dropped."""
        if not self.sessions:
            return 0
        now = time.monotonic() if now is None else now
        old = [k for k, s in self.sessions.items() if now - s.last_used > self.limits.ttl_s]
        for key in old:
            self.drop(key)
        return len(old)

    def enforce_limits(self) -> None:
        """Drop least-recently-used sessions while the page budget or the session count is exceeded."""
        while self.sessions and (
            self.blocks_held() > self.limits.budget_blocks or len(self.sessions) > self.limits.max_sessions
        ):
            self.drop(next(iter(self.sessions)))

    def release_lru(self, blocks_needed: int) -> int:
        """Drop least-recently-used sessions until ``blocks_needed`` pages went back to the pool; pages freed."""
        freed = 0
        while self.sessions and freed < blocks_needed:
            key = next(iter(self.sessions))
            freed += len(self.sessions[key].blocks)
            self.drop(key)
        return freed
