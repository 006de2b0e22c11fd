"""Client hardening: saved state restores sessions exactly, cancelled streams stop at once, arguments are validated."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, UserMessage

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
from autogen_ext_memento.backends import GenerationResult, SamplingParams

WORDS = ["hello there", "general kenobi", "you are a bold one"]


class CharByChar:
    """Forces each scripted text one character per token: ids that re-encoding the text would never produce."""

    def __init__(self, tokenizer: Any, texts: Sequence[str]) -> None:
        end = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._queue = deque(
            [[i for ch in text for i in tokenizer.encode(ch, add_special_tokens=False)] + [end] for text in texts]
        )
        self._current: list[int] | None = None

    def __call__(self, session_id: str, generated: list[int], logits: Any) -> Any:
        if not generated:
            self._current = self._queue.popleft() if self._queue else None
        cur = self._current
        if cur is None or len(generated) >= len(cur):
            return logits  # script exhausted: the model's own greedy choice
        forced = logits.new_full(logits.shape, float("-inf"))
        forced[cur[len(generated)]] = 0.0
        return forced


class Recorder:
    """Records every prompt a client sends to its backend, in order."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.prompts: list[list[int]] = []
        self._generate = backend.generate
        backend.generate = self  # type: ignore[method-assign]

    def __call__(self, sid: str, ids: Sequence[int], params: SamplingParams, **kw: Any) -> GenerationResult:
        self.prompts.append(list(ids))
        return self._generate(sid, ids, params, **kw)


def make_client(model_dir: Path, **kwargs: Any) -> tuple[MementoChatCompletionClient, Recorder]:
    backend = TransformersBackend(str(model_dir))
    return MementoChatCompletionClient(backend, max_new_tokens=10, **kwargs), Recorder(backend)


def make_team(client: MementoChatCompletionClient) -> RoundRobinGroupChat:
    agents = [AssistantAgent(name, model_client=client) for name in ("a", "b", "c")]
    return RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(4))


def contents(messages: Sequence[Any]) -> list[str]:
    return [str(m.content) for m in messages]


@pytest.mark.asyncio
async def test_restored_team_renders_the_same_prompts_and_continues_identically(tiny_model_dir: Path) -> None:
    """The issue's replay case: a 3-agent team restarted from saved state (team + client) sends the same tokens."""
    first, rec = make_client(tiny_model_dir)
    tok = first.backend.tokenizer
    script = CharByChar(tok, WORDS)
    first.backend.logits_processor = script  # type: ignore[attr-defined]
    assert tok.encode(WORDS[0], add_special_tokens=False) != script._queue[0][:-1]  # noqa: SLF001 - non-canonical
    team = make_team(first)
    await team.run(task="talk")
    team_state, client_state = await team.save_state(), await first.save_state()
    json.dumps(client_state)  # plain JSON
    assert client_state["version"] == 1 and len(client_state["sessions"]) == 3
    n = len(rec.prompts)
    original = await team.run()  # the original process goes on (script exhausted: greedy)
    expected = rec.prompts[n:]

    restored, rec2 = make_client(tiny_model_dir)
    team2 = make_team(restored)
    await team2.load_state(team_state)
    await restored.load_state(client_state)
    again = await team2.run()
    assert rec2.prompts == expected
    assert contents(again.messages) == contents(original.messages)
    for sid in restored.session_ids():
        assert restored.session_stats(sid).rebuilds == 0  # type: ignore[union-attr]

    # Without the client's state the same history renders differently (what the issue measured).
    bare, rec3 = make_client(tiny_model_dir)
    team3 = make_team(bare)
    await team3.load_state(team_state)
    await team3.run()
    assert rec3.prompts != expected


@pytest.mark.asyncio
async def test_session_id_state_round_trip_and_bad_state(tiny_model_dir: Path) -> None:
    first, _ = make_client(tiny_model_dir, session_id="s")
    first.backend.logits_processor = CharByChar(first.backend.tokenizer, WORDS[:1])  # type: ignore[attr-defined]
    history: list[LLMMessage] = [UserMessage(content="hi", source="user")]
    res = await first.create(history)
    history += [res_to_message(res), UserMessage(content="more", source="user")]
    state = await first.save_state()
    assert state["last_session_id"] == "s" and state["call_count"] == 1
    cont = await first.create(history)

    restored, rec = make_client(tiny_model_dir, session_id="s")
    await restored.load_state(json.loads(json.dumps(state)))
    assert restored.total_usage() == first.total_usage().__class__(
        prompt_tokens=state["total_prompt_tokens"], completion_tokens=state["total_completion_tokens"]
    )
    again = await restored.create(history)
    assert again.content == cont.content
    assert await restored.save_state() != state  # it moved on
    with pytest.raises(ValueError, match="not a MementoChatCompletionClient state"):
        await restored.load_state({**state, "version": 99})
    with pytest.raises(ValueError, match="not a MementoChatCompletionClient state"):
        await restored.load_state({"sessions": "nope"})


def res_to_message(res: CreateResult) -> LLMMessage:
    from autogen_core.models import AssistantMessage

    assert isinstance(res.content, str)
    return AssistantMessage(content=res.content, thought=res.thought, source="assistant")


@pytest.mark.asyncio
async def test_cancelled_stream_stops_within_a_few_tokens(tiny_model_dir: Path) -> None:
    """Cancelling at chunk 2 ends the stream at once (it used to run ~300 more chunks) and the session stays usable."""
    client, _ = make_client(tiny_model_dir, session_id="s")
    history: list[LLMMessage] = [UserMessage(content="go on and on", source="user")]
    token = CancellationToken()
    chunks = 0
    waited = math.inf
    with pytest.raises(asyncio.CancelledError):
        async for chunk in client.create_stream(
            history, cancellation_token=token, extra_create_args={"max_new_tokens": 300}
        ):
            assert isinstance(chunk, str), "the stream finished instead of being cancelled"
            chunks += 1
            if chunks == 2:
                token.cancel()
                t0 = time.perf_counter()
    waited = time.perf_counter() - t0
    assert chunks <= 3 and waited < 2.0

    # The worker stops at its next token; the next call waits for it, then rebuilds from the history.
    follow_up: list[LLMMessage] = [*history, UserMessage(content="again", source="user")]
    after = await client.create(follow_up)
    stats = client.session_stats("s")
    assert stats is not None
    assert stats.generated_tokens - after.usage.completion_tokens <= 20  # the cancelled call: ~2, was ~300
    fresh, _ = make_client(tiny_model_dir, session_id="s")
    assert after.content == (await fresh.create(follow_up)).content


@pytest.mark.asyncio
async def test_consumer_closing_the_stream_stops_the_worker(tiny_model_dir: Path) -> None:
    client, _ = make_client(tiny_model_dir, session_id="s")
    stream = client.create_stream([UserMessage(content="x", source="user")], extra_create_args={"max_new_tokens": 300})
    async for _ in stream:
        break
    await stream.aclose()
    res = await client.create([UserMessage(content="y", source="user")], extra_create_args={"max_new_tokens": 2})
    stats = client.session_stats("s")
    assert stats is not None and stats.generated_tokens - res.usage.completion_tokens <= 20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_p": math.nan}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_memento_tokens": 0}, "max_memento_tokens"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_constructor_arguments_are_validated(backend: TransformersBackend, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=f"invalid MementoChatCompletionClient arguments: {match}"):
        MementoChatCompletionClient(backend, **kwargs)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"seed": "abc"}, "seed"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_extra_create_args_are_validated(backend: TransformersBackend, extra: dict[str, Any], match: str) -> None:
    client = MementoChatCompletionClient(backend)
    with pytest.raises(ValueError, match=f"invalid extra_create_args: {match}"):
        client.create_blocking([UserMessage(content="q", source="user")], extra_create_args=extra)


def test_sampling_params_reject_non_finite_values() -> None:
    for bad in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": math.nan}, {"seed": "abc"}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)  # type: ignore[arg-type]


@pytest.fixture()
def backend(tiny_tokenizer: Any) -> TransformersBackend:
    from autogen_ext_memento._tiny import build_tiny_qwen3

    return TransformersBackend(build_tiny_qwen3(len(tiny_tokenizer)), tiny_tokenizer)


@pytest.mark.asyncio
@pytest.mark.parametrize("cut", [1, 2, 3, 4])
async def test_save_after_any_turn_continues_identically(tiny_model_dir: Path, cut: int) -> None:
    """Saved after turn ``cut`` of five (non-canonical sampled tokens in every turn), a fresh client sends the same
    prompts and returns the same turns as the saving client."""
    texts = [f"{w} {i}" for i, w in enumerate(WORDS + WORDS[:2])]
    first, rec = make_client(tiny_model_dir, session_id="s")
    first.backend.logits_processor = CharByChar(first.backend.tokenizer, texts)  # type: ignore[attr-defined]
    history: list[LLMMessage] = [UserMessage(content="start", source="user")]
    state: Any = None
    n = 0
    outputs: list[str] = []
    for turn in range(5):
        if turn == cut:
            state, n = json.loads(json.dumps(await first.save_state())), len(rec.prompts)
        res = await first.create(history)
        outputs.append(str(res.content))
        history += [res_to_message(res), UserMessage(content=f"go on {turn}", source="user")]
    expected = rec.prompts[n:]

    restored, rec2 = make_client(tiny_model_dir, session_id="s")
    # the rest of the script, so both clients sample the same forced tokens after the cut
    restored.backend.logits_processor = CharByChar(restored.backend.tokenizer, texts[cut:])  # type: ignore[attr-defined]
    await restored.load_state(state)
    replay = history[: 1 + 2 * cut]
    again: list[str] = []
    for turn in range(cut, 5):
        res = await restored.create(replay)
        again.append(str(res.content))
        replay += [res_to_message(res), UserMessage(content=f"go on {turn}", source="user")]
    assert rec2.prompts == expected
    assert again == outputs[cut:]
    assert restored.session_stats("s").rebuilds == 0  # type: ignore[union-attr]
