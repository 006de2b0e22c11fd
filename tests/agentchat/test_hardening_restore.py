"""Exact restore (issue 12): save at any point, load into fresh instances, continue identically.

The property test draws a trajectory (tool pairs, the model's closure mementos, images, system notes, dangling calls,
orphan results, clears, views and memory injections), saves the context, its block store and its memory at a random
point, loads the three into fresh instances, feeds both copies the same remaining inputs and requires the views,
the store contents and all three states to be equal at every step.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_ext.models.replay import ReplayChatCompletionClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from autogen_ext_memento.context import (
    Block,
    ClosureMementoWriter,
    LLMMementoWriter,
    MementoChatCompletionContext,
    MementoWriter,
    ObservationMaskingWriter,
)
from autogen_ext_memento.memory import MementoMemory
from autogen_ext_memento.store import BlockStore, InMemoryBlockStore, SQLiteBlockStore, dumps_messages
from autogen_ext_memento.wrapping import MementoContextClient

from ._helpers import run_sync


def _image(seed: int) -> Image:
    pil = PILImage.new("RGB", (6, 4))
    pil.putdata([((seed * 37 + i * 11) % 256, (i * 53) % 256, (seed + i) % 256) for i in range(24)])
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return Image(PILImage.open(io.BytesIO(buf.getvalue())))


IMAGES = [_image(1), _image(2)]
CLOSURE = "<|block_end|><|summary_start|>{}<|summary_end|>"


class SummaryWriter(MementoWriter):
    """A deterministic stand-in for an LLM writer (``uses_llm``: the per-view memento budget applies)."""

    @property
    def uses_llm(self) -> bool:
        return True

    async def write(self, block: Block, cancellation_token: CancellationToken | None = None) -> str:
        return f"summary of {block.block_id} ({block.kind}, {len(block.messages)} messages)"


def make_writer(kind: int) -> MementoWriter:
    return [ObservationMaskingWriter(), ClosureMementoWriter(), SummaryWriter()][kind]


def pair(n: int, size: int, closure: str | None = None) -> list[LLMMessage]:
    cid = f"call_{n}"
    return [
        AssistantMessage(
            content=[FunctionCall(id=cid, name="lookup", arguments=json.dumps({"page": n}))],
            thought=CLOSURE.format(closure) if closure is not None else None,
            source="alice",
        ),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content=f"page {n}: " + "v" * size, name="lookup", call_id=cid)]
        ),
    ]


EVENTS = ["user", "image", "tools", "closure_tools", "closure_answer", "answer", "view", "view", "view"]
EVENTS += ["memory", "system", "dangling", "orphan", "clear"]


class Copy:
    """One context with its own store and memory, driven synchronously."""

    def __init__(self, cfg: dict[str, Any], store: BlockStore | None = None, memory: MementoMemory | None = None):
        self.cfg = cfg
        self.store = store if store is not None else InMemoryBlockStore()
        self.memory = memory if memory is not None else (MementoMemory(max_tokens=160) if cfg["memory"] else None)
        self.ctx = MementoChatCompletionContext(
            keep_last_n_blocks=cfg["keep"],
            trigger=cfg["trigger"],
            token_limit=cfg["limit"],
            pin_first_blocks=cfg["pin"],
            writer=make_writer(cfg["writer"]),
            store=self.store,
            memory=self.memory,
            name="p",
        )
        self.views: list[str] = []

    def step(self, event: tuple[str, int, int]) -> None:
        kind, n, size = event
        msgs: list[LLMMessage] = []
        if kind == "user":
            msgs = [UserMessage(content="bob says " + "x" * size, source="bob")]
        elif kind == "image":
            msgs = [UserMessage(content=[f"screenshot {n}", IMAGES[n % 2], "y" * size], source="surfer")]
        elif kind == "tools":
            msgs = pair(n, size)
        elif kind == "closure_tools":
            msgs = pair(n, size, closure=f"m{n}")
        elif kind == "closure_answer":
            msgs = [AssistantMessage(content="answer " + "z" * size, thought=CLOSURE.format(f"m{n}"), source="alice")]
        elif kind == "answer":
            msgs = [AssistantMessage(content="answer " + "z" * size, source="alice")]
        elif kind == "system":
            msgs = [SystemMessage(content="note " + "s" * (size // 2))]
        elif kind == "dangling":
            msgs = pair(n, size)[:1]
        elif kind == "orphan":
            msgs = [pair(n + 1000, size)[1]]
        for m in msgs:
            run_sync(self.ctx.add_message(m))
        if kind == "clear":
            run_sync(self.ctx.clear())
        elif kind == "memory" and self.memory is not None:
            run_sync(self.memory.update_context(self.ctx))
        elif kind == "view":
            self.views.append(dumps_messages(run_sync(self.ctx.get_messages())))

    def states(self, clock: bool = True) -> list[Any]:
        """The context, store and memory states as JSON text (what a restart keeps).

        ``clock=False`` leaves out the store's insertion times and the memory's entry times: what is added after a
        restore is stamped by the wall clock in each copy.
        """
        store = dict(run_sync(self.store.save_state()))
        memory = dict(run_sync(self.memory.save_state())) if self.memory is not None else None
        if not clock:
            store["blocks"] = [{k: v for k, v in b.items() if k != "created_at"} for b in store["blocks"]]
            if memory is not None:
                for e in memory["entries"]:
                    e["entry"]["metadata"].pop("time", None)
        out: list[Any] = [run_sync(self.ctx.save_state()), store, memory]
        return [json.dumps(x, sort_keys=True) for x in out]

    def restored(self) -> Copy:
        """Save everything, then load it into fresh instances (as a new process would)."""
        ctx_state, store_state, memory_state = [json.loads(s) for s in self.states()]
        store = InMemoryBlockStore()
        run_sync(store.load_state(store_state))
        memory = None
        if memory_state is not None:
            memory = MementoMemory(max_tokens=160)
            run_sync(memory.load_state(memory_state))
        fresh = Copy(self.cfg, store=store, memory=memory)
        run_sync(fresh.ctx.load_state(ctx_state))
        return fresh


CONFIGS = st.fixed_dictionaries(
    {
        "keep": st.integers(0, 3),
        "trigger": st.sampled_from(["block", "tokens"]),
        "limit": st.sampled_from([None, 120, 400]),
        "pin": st.integers(0, 2),
        "writer": st.integers(0, 2),
        "memory": st.booleans(),
    }
)
TRAJECTORIES = st.lists(
    st.tuples(st.sampled_from(EVENTS), st.integers(0, 3), st.sampled_from([0, 40, 300, 900])), min_size=2, max_size=40
)


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cfg=CONFIGS, events=TRAJECTORIES, cut=st.floats(0, 1))
def test_save_at_any_point_and_continue_identically(cfg: dict[str, Any], events: list[Any], cut: float) -> None:
    if cfg["trigger"] == "tokens" and cfg["limit"] is None:
        cfg = {**cfg, "limit": 400}
    numbered = [(kind, i, size) for i, (kind, _, size) in enumerate(events)]
    split = int(cut * len(numbered))
    note(f"cfg={cfg} split={split} events={numbered}")
    a = Copy(cfg)
    for e in numbered[:split]:
        a.step(e)
    b = a.restored()
    assert b.states() == a.states()
    for e in numbered[split:]:
        a.step(e)
        b.step(e)
        assert b.views == a.views[len(a.views) - len(b.views) :]
        assert b.states(clock=False) == a.states(clock=False)
    a.step(("view", 0, 0))
    b.step(("view", 0, 0))
    assert b.views[-1] == a.views[-1]


def _masked_then_closure(ctx: MementoChatCompletionContext) -> None:
    run_sync(ctx.add_message(UserMessage(content="task", source="user")))
    for m in pair(0, 400):
        run_sync(ctx.add_message(m))
    run_sync(ctx.get_messages())  # the observation is masked before the model writes its memento
    run_sync(ctx.add_message(AssistantMessage(content="done", thought=CLOSURE.format("alpha=0"), source="alice")))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_masking_memento_then_closure_restores_exactly(kind: str, tmp_path: Path) -> None:
    """The case from the issue: a block masked before the model's closure keeps its masking memento on load."""

    def store(name: str) -> BlockStore:
        return InMemoryBlockStore() if kind == "memory" else SQLiteBlockStore(str(tmp_path / f"{name}.db"))

    a = MementoChatCompletionContext(keep_last_n_blocks=0, store=store("a"), name="s")
    _masked_then_closure(a)
    b = MementoChatCompletionContext(keep_last_n_blocks=0, store=store("b"), name="s")
    run_sync(b.store.load_state(json.loads(json.dumps(run_sync(a.store.save_state())))))
    run_sync(b.load_state(json.loads(json.dumps(run_sync(a.save_state())))))
    assert [blk.memento for blk in b.blocks] == [blk.memento for blk in a.blocks]
    assert b.blocks[1].memento_source == "ObservationMaskingWriter"
    assert dumps_messages(run_sync(b.get_messages())) == dumps_messages(run_sync(a.get_messages()))
    assert run_sync(b.save_state()) == run_sync(a.save_state())
    dump = [x.model_dump(mode="json") for x in a.store.list_blocks()]
    assert [x.model_dump(mode="json") for x in b.store.list_blocks()] == dump


def test_context_state_alone_restores_mementos_into_a_fresh_store() -> None:
    a = MementoChatCompletionContext(keep_last_n_blocks=0, name="s")
    _masked_then_closure(a)
    b = MementoChatCompletionContext(keep_last_n_blocks=0, name="s")
    run_sync(b.load_state(json.loads(json.dumps(run_sync(a.save_state())))))

    def records(ctx: MementoChatCompletionContext) -> list[Any]:
        return [x.model_dump(mode="json", exclude={"created_at"}) for x in ctx.store.list_blocks()]

    assert records(b) == records(a)


def test_memory_attachment_and_memory_message_are_restored() -> None:
    memory = MementoMemory()
    run_sync(memory.add_memento("earlier fact", agent="bob", block_id="q-1"))
    a = MementoChatCompletionContext(name="m", memory=memory)
    run_sync(a.add_message(UserMessage(content="task", source="user")))
    run_sync(memory.update_context(a))
    b = MementoChatCompletionContext(name="m", memory=memory)
    run_sync(b.load_state(json.loads(json.dumps(run_sync(a.save_state())))))
    assert run_sync(b.get_messages()) == run_sync(a.get_messages())
    note_msg = UserMessage(content="a note", source="notes")
    a.set_memory_message(note_msg)
    c = MementoChatCompletionContext(name="m")
    run_sync(c.load_state(json.loads(json.dumps(run_sync(a.save_state())))))
    assert run_sync(c.get_messages()) == run_sync(a.get_messages())


def test_memory_state_round_trips_exactly() -> None:
    a = MementoMemory(max_tokens=64)
    run_sync(a.add_memento("alpha=1", agent="bob", block_id="x-1", kind="tool"))
    b = MementoMemory(max_tokens=64)
    run_sync(b.load_state(json.loads(json.dumps(run_sync(a.save_state())))))
    assert b.entries == a.entries
    assert b.render_message() == a.render_message()


@pytest.mark.asyncio
async def test_wrapping_client_restores_its_mementos_without_new_writer_calls() -> None:
    def history() -> list[LLMMessage]:
        msgs: list[LLMMessage] = [SystemMessage(content="sys"), UserMessage(content="task", source="user")]
        for i in range(5):
            msgs += pair(i, 400)
        return msgs

    inner = ReplayChatCompletionClient(["ok"])
    writer = LLMMementoWriter(ReplayChatCompletionClient([f"memento {i}" for i in range(10)]))
    a = MementoContextClient(inner, keep_last_n_blocks=1, writer=writer, name="w")
    view_a = await a.compact_messages(history(), caller="agent")
    fresh_writer = LLMMementoWriter(ReplayChatCompletionClient(["a different memento"] * 10))
    b = MementoContextClient(inner, keep_last_n_blocks=1, writer=fresh_writer, name="w")
    await b.load_state(json.loads(json.dumps(await a.save_state())))
    assert dumps_messages(await b.compact_messages(history(), caller="agent")) == dumps_messages(view_a)
    assert fresh_writer.calls == 0
    assert await b.save_state() == await a.save_state()
