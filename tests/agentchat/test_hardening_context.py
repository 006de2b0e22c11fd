"""Issue 12 for the text-level context: images, the drop-in guarantee, the system message, constructor checks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent, BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import BaseChatMessage, MultiModalMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME, CancellationToken, FunctionCall, Image
from autogen_core.model_context import ChatCompletionContext, UnboundedChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_ext.models.replay import ReplayChatCompletionClient
from hypothesis import given, note, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from autogen_ext_memento.context import (
    ClosureMementoWriter,
    LLMMementoWriter,
    MementoChatCompletionContext,
    ObservationMaskingWriter,
)
from autogen_ext_memento.memory import MementoMemory
from autogen_ext_memento.store import (
    BlockStore,
    InMemoryBlockStore,
    SQLiteBlockStore,
    StoredBlock,
    dumps_messages,
    make_recall_tool,
)
from autogen_ext_memento.wrapping import MementoContextClient

from ._helpers import run_sync, validate_role_order

VISION_INFO: Any = {
    "vision": True,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def screenshot(seed: int, size: tuple[int, int] = (24, 16)) -> Image:
    """A small deterministic image with varied pixels (a stand-in for a web surfer's screenshot)."""
    pil = PILImage.new("RGB", size)
    pil.putdata([((seed * 31 + i * 7) % 256, (i * 13) % 256, (seed * 5 + i) % 256) for i in range(size[0] * size[1])])
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return Image(PILImage.open(io.BytesIO(buf.getvalue())))


def pixels(img: Image) -> bytes:
    return img.image.tobytes()


def tool_pair(n: int, size: int = 400, source: str = "viewer") -> list[LLMMessage]:
    cid = f"call_{n}"
    return [
        AssistantMessage(
            content=[FunctionCall(id=cid, name="lookup", arguments=json.dumps({"page": n}))], source=source
        ),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content=f"page {n}: " + "w" * size, name="lookup", call_id=cid)]
        ),
    ]


def multimodal_history() -> list[LLMMessage]:
    """Every kind of LLMMessage AutoGen holds, images in several places of a user message's content."""
    return [
        SystemMessage(content="You are a careful vision agent."),
        UserMessage(content=["What is on this page?", screenshot(1)], source="user"),
        *tool_pair(0),
        UserMessage(content=[screenshot(2), "second screenshot", screenshot(3)], source="surfer"),
        AssistantMessage(content="The page shows a login form.", thought="looking", source="viewer"),
        UserMessage(content=[screenshot(4)], source="surfer"),
        *tool_pair(1),
        UserMessage(content="thanks", source="user"),
    ]


# --- multimodal: the store, state, recall and memento text ------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_image_blocks_round_trip_bit_exact_through_the_store(kind: str, tmp_path: Path) -> None:
    store: BlockStore = InMemoryBlockStore() if kind == "memory" else SQLiteBlockStore(str(tmp_path / "i.db"))
    msgs = multimodal_history()
    for i, m in enumerate(msgs):
        assert store.append(StoredBlock(block_id=f"b-{i}", agent="a", kind="message", messages=[m]))
        assert not store.append(StoredBlock(block_id=f"b-{i}", agent="a", kind="message", messages=[m]))
    got = [m for i in range(len(msgs)) for m in store.get(f"b-{i}").messages]  # type: ignore[union-attr]
    assert dumps_messages(got) == dumps_messages(msgs)
    for a, b in zip(msgs, got, strict=True):
        if isinstance(a, UserMessage) and not isinstance(a.content, str):
            assert isinstance(b, UserMessage) and not isinstance(b.content, str)
            for pa, pb in zip(a.content, b.content, strict=True):
                assert type(pa) is type(pb)
                if isinstance(pa, Image) and isinstance(pb, Image):
                    assert pixels(pa) == pixels(pb) and pa.to_base64() == pb.to_base64()
    copy = InMemoryBlockStore()
    run_sync(copy.load_state(json.loads(json.dumps(run_sync(store.save_state())))))
    assert [b.model_dump(mode="json") for b in copy.list_blocks()] == [
        b.model_dump(mode="json") for b in store.list_blocks()
    ]


@pytest.mark.asyncio
async def test_image_blocks_compact_to_text_mementos_recall_and_restore() -> None:
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=1, pin_first_blocks=0, store=store, name="v")
    msgs = multimodal_history()
    for m in msgs:
        await ctx.add_message(m)
    view = await ctx.get_messages()
    validate_role_order(view)
    assert view[0] == msgs[0]
    digest = next(m for m in view if isinstance(m, UserMessage) and m.source == "memento")
    assert "user said: What is on this page? [image]" in str(digest.content)
    assert "surfer said: [image]" in str(digest.content)
    # The archive is byte-exact; recall gives the block back as text with image placeholders.
    archived = [m for b in store.list_blocks() for m in b.messages]
    assert dumps_messages(archived) == dumps_messages(msgs)
    recall = make_recall_tool(store)
    text = await recall.run_json({"block_id": "v-1"}, CancellationToken())
    assert "What is on this page?" in str(text) and "[image]" in str(text)
    # State: JSON-safe, and the images come back with the same pixels.
    state = json.loads(json.dumps(await ctx.save_state()))
    fresh = MementoChatCompletionContext(keep_last_n_blocks=1, pin_first_blocks=0, name="v")
    await fresh.load_state(state)
    assert dumps_messages(await fresh.get_messages()) == dumps_messages(view)
    assert dumps_messages(fresh.messages) == dumps_messages(msgs)


class Surfer(BaseChatAgent):
    """Sends a screenshot each turn, as MultimodalWebSurfer does."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "Sends screenshots of the page.")
        self.turn = 0

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (MultiModalMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        self.turn += 1
        shot = MultiModalMessage(content=[f"screenshot {self.turn}", screenshot(self.turn)], source=self.name)
        return Response(chat_message=shot)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.turn = 0


async def lookup(page: int) -> str:
    """Read one page of the site map."""
    return f"page {page}: " + "links " * 40


def _call(cid: str, page: int) -> CreateResult:
    return CreateResult(
        content=[FunctionCall(id=cid, name="lookup", arguments=json.dumps({"page": page}))],
        finish_reason="function_calls",
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


async def run_vision_team(context: Callable[[], ChatCompletionContext | None]) -> list[str]:
    """A Surfer and a vision AssistantAgent with a tool in a RoundRobin team; the viewer's requests as JSON."""
    script: list[str | CreateResult] = [_call("c1", 1), "a login form", _call("c2", 2), "a search box", "done"]
    client = ReplayChatCompletionClient(script, model_info=VISION_INFO)
    ctx = context()
    viewer = AssistantAgent("viewer", client, tools=[lookup], model_context=ctx, system_message="You see screenshots.")
    team = RoundRobinGroupChat([Surfer("surfer"), viewer], termination_condition=MaxMessageTermination(12))
    result = await team.run(task=MultiModalMessage(content=["Describe the site.", screenshot(0)], source="user"))
    assert result.stop_reason is not None and "Maximum number of messages" in result.stop_reason
    return [dumps_messages(c["messages"]) for c in client.create_calls]


@pytest.mark.asyncio
async def test_vision_agent_in_a_round_robin_team_with_compaction() -> None:
    store = InMemoryBlockStore()
    requests = await run_vision_team(
        lambda: MementoChatCompletionContext(keep_last_n_blocks=1, pin_first_blocks=0, store=store, name="v")
    )
    assert len(requests) == 5
    last = json.loads(requests[-1])
    assert last[0]["type"] == "SystemMessage"
    assert any("[image]" in str(m["content"]) and m.get("source") == "memento" for m in last)
    assert any(isinstance(m["content"], list) and any(isinstance(p, dict) for p in m["content"]) for m in last)
    images = [p for b in store.list_blocks() for m in b.messages if isinstance(m, UserMessage) for p in m.content]
    assert sum(isinstance(p, Image) for p in images) >= 4


@pytest.mark.asyncio
async def test_with_compaction_off_the_model_gets_exactly_what_the_default_context_sends() -> None:
    default = await run_vision_team(lambda: None)  # AssistantAgent's default UnboundedChatCompletionContext
    ours = await run_vision_team(lambda: MementoChatCompletionContext(trigger="tokens", token_limit=10**9))
    assert ours == default
    # Message by message too, for every kind of message (tool pairs, images, system notes, answers). Between a call
    # and its results (where AutoGen never builds a request) the open call is shown as text, to keep a view valid.
    plain, memento = UnboundedChatCompletionContext(), MementoChatCompletionContext(keep_last_n_blocks=10**6)
    for m in multimodal_history():
        await plain.add_message(m)
        await memento.add_message(m)
        if isinstance(m, AssistantMessage) and not isinstance(m.content, str):
            continue
        assert dumps_messages(await memento.get_messages()) == dumps_messages(await plain.get_messages())


# --- the system message -----------------------------------------------------------------------------------------

KINDS = ["user", "tools", "answer", "image", "system", "dangling", "clear", "memory"]


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    keep=st.integers(0, 2),
    pin=st.integers(0, 2),
    limit=st.sampled_from([None, 8, 40, 150, 600]),
    trigger=st.sampled_from(["block", "tokens"]),
    system_size=st.sampled_from([0, 100, 400, 2000]),
    events=st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([0, 50, 500])), min_size=1, max_size=25),
)
def test_the_system_message_is_first_and_whole_in_every_view(
    keep: int, pin: int, limit: int | None, trigger: str, system_size: int, events: list[tuple[str, int]]
) -> None:
    note(f"keep={keep} pin={pin} limit={limit} trigger={trigger} events={events}")
    memory = MementoMemory(max_tokens=64)
    run_sync(memory.add_memento("an earlier fact", agent="bob", block_id="z-1"))
    ctx = MementoChatCompletionContext(
        keep_last_n_blocks=keep,
        pin_first_blocks=pin,
        token_limit=limit,
        trigger="tokens" if trigger == "tokens" and limit is not None else "block",
        memory=memory,
        name="s",
    )
    system = SystemMessage(content="Rules: " + "r" * system_size)
    run_sync(ctx.add_message(system))
    for n, (kind, size) in enumerate(events):
        if kind == "clear":
            run_sync(ctx.clear())
            run_sync(ctx.add_message(system))  # an agent that keeps its system message in the context re-adds it
        elif kind == "memory":
            run_sync(memory.update_context(ctx))
        elif kind == "user":
            run_sync(ctx.add_message(UserMessage(content="u" * size, source="user")))
        elif kind == "answer":
            run_sync(ctx.add_message(AssistantMessage(content="a" * size, source="viewer")))
        elif kind == "image":
            run_sync(ctx.add_message(UserMessage(content=["look", IMAGE], source="surfer")))
        elif kind == "system":
            run_sync(ctx.add_message(SystemMessage(content="note " + "n" * size)))
        else:
            for m in tool_pair(n, size)[: 1 if kind == "dangling" else 2]:
                run_sync(ctx.add_message(m))
        view = run_sync(ctx.get_messages())
        lead = []
        for m in ctx.messages:
            if not isinstance(m, SystemMessage):
                break
            lead.append(m)
        assert view[: len(lead)] == lead
        validate_role_order(view)


IMAGE = screenshot(9, (4, 4))


def test_a_system_message_over_the_budget_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    ctx = MementoChatCompletionContext(token_limit=50, keep_last_n_blocks=0, pin_first_blocks=0, name="big")
    system = SystemMessage(content="Rules: " + "r" * 800)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        run_sync(ctx.add_message(system))
        for m in [UserMessage(content="task " * 40, source="user"), *tool_pair(0), *tool_pair(1)]:
            run_sync(ctx.add_message(m))
        view = run_sync(ctx.get_messages())
    assert view[0] == system
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "token_limit=50" in r.getMessage()]
    assert len(warnings) == 1 and "kept whole" in warnings[0].getMessage()
    events = [json.loads(r.getMessage()) for r in caplog.records if "MementoSystemOverBudgetEvent" in r.getMessage()]
    assert len(events) == 1 and events[0]["token_limit"] == 50 and events[0]["system_tokens"] > 50


def test_a_system_message_over_the_budget_in_initial_messages_is_refused() -> None:
    with pytest.raises(ValueError, match=r"system message in initial_messages is \d+ tokens, over token_limit=50"):
        MementoChatCompletionContext(token_limit=50, initial_messages=[SystemMessage(content="r" * 800)])


# --- constructor checks -----------------------------------------------------------------------------------------


def _replay() -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(["ok"])


BAD: list[tuple[str, Callable[[Path], object], type[Exception], str]] = [
    ("masking writer preview", lambda p: ObservationMaskingWriter(preview_chars=-1), ValueError, "preview_chars=-1"),
    ("masking writer message", lambda p: ObservationMaskingWriter(message_chars=-3), ValueError, "message_chars=-3"),
    ("closure writer preview", lambda p: ClosureMementoWriter(preview_chars=-1), ValueError, "preview_chars=-1"),
    ("llm writer words", lambda p: LLMMementoWriter(_replay(), max_words=0), ValueError, "max_words=0"),
    (
        "llm writer client",
        lambda p: LLMMementoWriter("gpt-4o"),
        TypeError,
        "model_client must be a ChatCompletionClient",
    ),  # type: ignore[arg-type]
    ("memory max_tokens", lambda p: MementoMemory(max_tokens=-1), ValueError, "MementoMemory: max_tokens=-1"),
    ("memory max_entries", lambda p: MementoMemory(max_entries=0), ValueError, "max_entries=0"),
    (
        "context keep",
        lambda p: MementoChatCompletionContext(keep_last_n_blocks=-5),
        ValueError,
        "keep_last_n_blocks=-5",
    ),
    ("context limit", lambda p: MementoChatCompletionContext(token_limit=0), ValueError, "token_limit=0"),
    ("context watermark", lambda p: MementoChatCompletionContext(low_watermark=2.0), ValueError, "low_watermark=2.0"),
    ("context trigger", lambda p: MementoChatCompletionContext(trigger="tokens"), ValueError, "needs a token_limit"),
    (
        "context writer",
        lambda p: MementoChatCompletionContext(writer="masking"),
        TypeError,
        "writer must be a MementoWriter",
    ),  # type: ignore[arg-type]
    ("context store", lambda p: MementoChatCompletionContext(store=str(p)), TypeError, "store must be a BlockStore"),  # type: ignore[arg-type]
    ("context memory", lambda p: MementoChatCompletionContext(memory=[]), TypeError, "memory must be a MementoMemory"),
    (
        "context client",
        lambda p: MementoChatCompletionContext(model_client="gpt-4o"),
        TypeError,
        "model_client must be",
    ),  # type: ignore[arg-type]
    (
        "context messages",
        lambda p: MementoChatCompletionContext(initial_messages=["hi"]),
        ValueError,
        "initial_messages",
    ),  # type: ignore[list-item]
    (
        "wrapping client",
        lambda p: MementoContextClient("gpt-4o"),
        TypeError,
        "model_client must be a ChatCompletionClient",
    ),  # type: ignore[arg-type]
    (
        "wrapping keep",
        lambda p: MementoContextClient(_replay(), keep_last_n_blocks=-1),
        ValueError,
        "keep_last_n_blocks=-1",
    ),
    (
        "wrapping writer",
        lambda p: MementoContextClient(_replay(), writer=object()),
        TypeError,
        "writer must be a MementoWriter",
    ),  # type: ignore[arg-type]
    (
        "sqlite missing dir",
        lambda p: SQLiteBlockStore(str(p / "missing" / "b.db")),
        ValueError,
        "missing does not exist",
    ),
    ("sqlite directory", lambda p: SQLiteBlockStore(str(p)), ValueError, "is a directory"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_constructor_arguments_fail_at_construction_with_one_line(
    case: tuple[str, Callable[[Path], object], type[Exception], str], tmp_path: Path
) -> None:
    _, make, error, words = case
    with pytest.raises(error) as info:
        make(tmp_path)
    message = str(info.value)
    assert words in message and "\n" not in message, message
    if "sqlite" in case[0]:
        assert str(tmp_path) in message  # names the path


def test_component_configs_still_round_trip_after_validation(tmp_path: Path) -> None:
    ctx = MementoChatCompletionContext(
        keep_last_n_blocks=3,
        writer=ObservationMaskingWriter(preview_chars=10),
        store=SQLiteBlockStore(str(tmp_path / "ok.db")),
        memory=MementoMemory(max_tokens=64, max_entries=3),
        name="cfg",
    )
    again = MementoChatCompletionContext.load_component(ctx.dump_component())
    assert again.dump_component() == ctx.dump_component()
