"""Property test: random multi-agent trajectories through MementoChatCompletionContext.

Over 10,000 random trajectories (interleaved agents, tool calls with errors, dangling calls, orphan results,
handoffs, system notes, resets and save/load in the middle), every view must be a valid OpenAI request (no
orphaned tool calls or results), no message may be lost (the store holds every closed block byte-exactly, the open
block is shown), and with a token limit the view stays under it.
"""

from __future__ import annotations

import json
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from autogen_ext_memento.context import (
    DIGEST_SOURCE,
    MementoChatCompletionContext,
    approx_tokens,
    leading_system_blocks,
)
from autogen_ext_memento.memory import MEMORY_SOURCE, MementoMemory
from autogen_ext_memento.store import InMemoryBlockStore, dumps_messages

from ._helpers import run_sync, validate_role_order

AGENTS = ["user", "alice", "bob", "carol"]
KINDS = ["user", "answer", "tools", "tools", "tools", "handoff", "dangling", "orphan", "system", "clear", "reload"]
SLACK = 64  # the "N older mementos archived" line and truncation markers, in estimated tokens

LIMITS = [None, 150, 400, 1200]


# Trajectories are drawn as bytes and decoded (4 bytes per event): hypothesis generates and shrinks flat byte
# strings about three times faster than nested tuples, which keeps 10,000 trajectories within the default suite.
def decode_config(raw: bytes) -> tuple[int, str, int | None, int, bool]:
    """keep_last_n_blocks, trigger, token_limit, pin_first_blocks, with a MementoMemory."""
    return raw[0] % 4, ("block", "tokens")[raw[1] % 2], LIMITS[raw[2] % 4], raw[3] % 3, bool(raw[4] % 2)


def decode_events(raw: bytes) -> list[tuple[str, int, int, int]]:
    """(kind, agent index, size in characters 0..600, flag bits)."""
    return [
        (KINDS[raw[i] % len(KINDS)], raw[i + 1] % 4, raw[i + 2] * 600 // 255, raw[i + 3] % 16)
        for i in range(0, len(raw) - 3, 4)
    ]


class _Run:
    def __init__(self, cfg: tuple[int, str, int | None, int, bool]) -> None:
        keep, trigger, limit, pin, with_memory = cfg
        if trigger == "tokens" and limit is None:
            limit = 400
        self.kw: dict[str, Any] = dict(
            keep_last_n_blocks=keep, trigger=trigger, token_limit=limit, pin_first_blocks=pin, name="p"
        )
        self.limit = limit
        self.store = InMemoryBlockStore()
        self.memory = MementoMemory(max_tokens=120) if with_memory else None
        self.ctx = MementoChatCompletionContext(store=self.store, memory=self.memory, **self.kw)
        self.added: list[LLMMessage] = []  # every message ever added, across clears
        self.calls = 0

    def add(self, m: LLMMessage) -> None:
        self.added.append(m)
        run_sync(self.ctx.add_message(m))

    def call_pair(self, agent: str, n: int, size: int, errors: int) -> list[LLMMessage]:
        calls = []
        results = []
        for k in range(n):
            self.calls += 1
            cid = f"call_{self.calls}"
            calls.append(FunctionCall(id=cid, name="lookup", arguments=json.dumps({"key": f"k{self.calls}"})))
            err = bool(errors >> k & 1)
            body = ("Error: page missing " if err else f"value {self.calls} ") * max(1, size // 12)
            results.append(FunctionExecutionResult(content=body, name="lookup", call_id=cid, is_error=err))
        # Results come back in a different order than the calls when there are several (concurrent tools).
        return [
            AssistantMessage(content=calls, source=agent, thought="checking" if errors & 8 else None),
            FunctionExecutionResultMessage(content=list(reversed(results))),
        ]

    def step(self, kind: str, a: int, size: int, bits: int) -> None:
        agent = AGENTS[a]
        if kind == "user":
            self.add(UserMessage(content=f"{agent} says " + "x" * size, source=agent))
        elif kind == "answer":
            self.add(AssistantMessage(content="answer " + "y" * size, source="alice"))
        elif kind == "tools":
            for m in self.call_pair("alice", 1 + bits % 3, size, bits):
                self.add(m)
        elif kind == "handoff":
            # HandoffMessage.context (a tool pair of the other agent) followed by the handoff text.
            for m in self.call_pair(agent if agent != "user" else "bob", 1, size, bits):
                self.add(m)
            self.add(UserMessage(content="Transferred to alice, adopting the role of alice immediately.", source=agent))
        elif kind == "dangling":
            self.calls += 1
            self.add(
                AssistantMessage(
                    content=[FunctionCall(id=f"call_{self.calls}", name="lookup", arguments="{}")], source="alice"
                )
            )
        elif kind == "orphan":
            self.add(
                FunctionExecutionResultMessage(
                    content=[FunctionExecutionResult(content="stale " * (size // 6), name="lookup", call_id="gone")]
                )
            )
        elif kind == "system":
            self.add(SystemMessage(content="note " + "z" * (size // 4)))
        elif kind == "clear":
            run_sync(self.ctx.clear())
        elif kind == "reload":
            state = run_sync(self.ctx.save_state())
            state = json.loads(json.dumps(state))  # states must be JSON-serialisable
            fresh = MementoChatCompletionContext(store=self.store, memory=self.memory, **self.kw)
            run_sync(fresh.load_state(state))
            self.ctx = fresh

    def check(self, lossless: bool = True) -> None:
        if self.memory is not None:
            run_sync(self.memory.update_context(self.ctx))
        view = run_sync(self.ctx.get_messages())
        validate_role_order(view)
        # One digest and at most one memory message, never at the start of a tool pair.
        assert sum(1 for m in view if isinstance(m, UserMessage) and m.source == DIGEST_SOURCE) <= 1
        assert sum(1 for m in view if isinstance(m, UserMessage) and m.source == MEMORY_SOURCE) <= 1
        # Bounded: under the limit, except for a still-open tool call (never compacted, it is in flight) and the
        # leading system messages (always shown whole).
        if self.limit is not None:
            open_blk = self.ctx.blocks[-1] if self.ctx.blocks and not self.ctx.blocks[-1].closed else None
            extra = approx_tokens(open_blk.render_messages()) if open_blk is not None else 0
            extra += sum(b.tokens for b in self.ctx.blocks[: leading_system_blocks(self.ctx.blocks)])
            assert approx_tokens(view) <= self.limit + extra + SLACK, (approx_tokens(view), self.limit, extra)
        if not lossless:
            return
        # Zero lost messages: the store holds every closed block verbatim; only an open block is not archived.
        stored = self.store.list_blocks(scope="p")
        archived = [m for b in stored for m in b.messages]
        open_msgs = [m for b in self.ctx.blocks if not b.closed for m in b.messages]
        assert dumps_messages(archived + open_msgs) == dumps_messages(self.added)
        # Every block shown as a memento is recallable.
        ids = {b.block_id for b in stored}
        assert all(b.block_id in ids for b in self.ctx.blocks if b.compacted)


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw_cfg=st.binary(min_size=5, max_size=5), raw_events=st.binary(min_size=32, max_size=96))
def test_random_trajectories_keep_pairs_messages_and_bounds(raw_cfg: bytes, raw_events: bytes) -> None:
    cfg, events = decode_config(raw_cfg), decode_events(raw_events)
    note(f"config={cfg} events={events}")
    run = _Run(cfg)
    for kind, a, size, bits in events:
        run.step(kind, a, size, bits)
        if kind in ("dangling", "reload", "clear"):
            run.check()
        elif bits & 1:
            run.check(lossless=False)  # the byte-exact archive check is O(history): at the events above and the end
    run.check()
