"""Any OpenAI client gets the sawtooth: AutoGen's own ``OpenAIChatCompletionClient`` against ``autogen-memento serve``.

The server's ``/v1/chat/completions`` renders with ``chat_format``, runs the closure protocol and finds each
conversation's compacted KV by its rendered prefix; these tests hold it to the session API on the same episodes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autogen_ext_memento.testing import served

pytestmark = pytest.mark.vllm

EPISODES = 5
SEED = 777001


@pytest.fixture(scope="module")
def memento_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("vllm")
    from autogen_ext_memento import tiny_model_path

    args = [
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--block-size", "32",
        "--max-num-seqs", "8", "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0",
        "--served-model-name", "tiny-memento",
    ]  # fmt: skip
    with served(tiny_model_path(), args, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def _openai_client(url: str, **kwargs: Any) -> Any:
    from autogen_ext_memento.testing import openai_client

    return openai_client(url, **kwargs)


async def _play(episode: Any, client: Any, *, stream: bool = False) -> str:
    from autogen_ext_memento.tasks import play_tracker

    return await play_tracker(episode, client, stream=stream)


def _sessions(url: str, salt: str | None = None) -> list[dict[str, Any]]:
    params = {"cache_salt": salt} if salt else {}
    out: list[dict[str, Any]] = httpx.get(url + "/v1/memento/sessions", params=params, timeout=30).json()["sessions"]
    return out


def test_autogen_openai_client_solves_what_the_memento_client_solves(memento_server: str) -> None:
    from autogen_ext_memento import MementoChatCompletionClient, tiny_model_path
    from autogen_ext_memento.backends import VLLMBackend
    from autogen_ext_memento.tasks import sample_episodes, score_answer

    episodes = sample_episodes(EPISODES, SEED)
    backend = VLLMBackend(memento_server, tiny_model_path())
    before = {s["session_id"] for s in _sessions(memento_server)}
    for i, episode in enumerate(episodes):
        stateless = _openai_client(memento_server)
        got = asyncio.run(_play(episode, stateless))
        ref_client = MementoChatCompletionClient(backend, session_id=f"ref-{i}")
        exp = asyncio.run(_play(episode, ref_client))
        assert got == exp  # same answer, token for token
        assert score_answer(episode, got)[0] == score_answer(episode, exp)[0]
        ref = backend.stats(f"ref-{i}")
        assert ref is not None and ref.evictions >= len(episode.pages)
        # Prefill per turn equals the session API's: each turn adopted the conversation's compacted KV.
        assert stateless.total_usage().prompt_tokens == ref.prefill_tokens
        assert stateless.total_usage().completion_tokens == ref.generated_tokens
    chat = [
        s for s in _sessions(memento_server) if s["session_id"] not in before and s["session_id"].startswith("chat-")
    ]
    # One server session per conversation (never rebuilt under another id), its blocks evicted.
    assert len(chat) == EPISODES
    assert all(s["kv_tokens"] < s["logical_tokens"] for s in chat)


def test_streaming_agent_gets_the_same_turns(memento_server: str) -> None:
    from autogen_ext_memento.tasks import sample_episodes

    episode = sample_episodes(1, SEED + 1)[0]
    plain = asyncio.run(_play(episode, _openai_client(memento_server)))
    streamed = asyncio.run(_play(episode, _openai_client(memento_server), stream=True))
    assert streamed == plain and plain


def _post(url: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    resp = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    out: dict[str, Any] = resp.json()
    out["_status"] = resp.status_code
    return out


def _tool_turns(url: str, salt: str, *, drop_closures: bool) -> list[dict[str, Any]]:
    """The raw turns of a tool conversation; a client that drops closures re-sends tool-call content as None."""
    from autogen_ext_memento.tasks import SYSTEM_PROMPT, FactTrackerEnv, sample_episodes

    episode = max(sample_episodes(10, SEED + 2), key=lambda e: len(e.pages))
    env = FactTrackerEnv(episode)
    tool = {"type": "function", "function": {k: env.tool().schema[k] for k in ("name", "description", "parameters")}}  # type: ignore[literal-required]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": episode.goal_text},
    ]
    answers = []
    for _ in range(len(episode.pages) + 2):
        body = {"model": "tiny-memento", "messages": messages, "tools": [tool], "temperature": 0, "cache_salt": salt}
        out = _post(url, body)
        assert out["_status"] == 200, out
        answers.append(out)
        msg = out["choices"][0]["message"]
        if not msg.get("tool_calls"):
            break
        call = msg["tool_calls"][0]
        sent = {"role": "assistant", "content": None if drop_closures else msg["content"], "tool_calls": [call]}
        cursor = json.loads(call["function"]["arguments"]).get("cursor", 0)
        messages += [sent, {"role": "tool", "tool_call_id": call["id"], "content": env.read(int(cursor))}]
    return answers


def test_closures_a_client_drops_are_restored_and_tenants_are_isolated(memento_server: str) -> None:
    kept = _tool_turns(memento_server, "tenant-a", drop_closures=False)
    dropped = _tool_turns(memento_server, "tenant-b", drop_closures=True)
    assert len(kept) == len(dropped) >= 4
    for a, b in zip(kept, dropped, strict=True):
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
        assert a["usage"] == b["usage"]  # same prefill: the dropped closure was put back, the KV adopted
        assert a["memento"]["rebuilds"] == b["memento"]["rebuilds"] == 0
    assert kept[1]["choices"][0]["message"]["content"].startswith("<|block_end|><|summary_start|>")
    assert kept[-1]["choices"][0]["message"]["reasoning_content"].startswith("<|block_end|><|summary_start|>")
    # Each tenant sees only its own conversation's session; the same conversation under two salts is two sessions.
    mine = {s["session_id"] for s in _sessions(memento_server, "tenant-a")}
    theirs = {s["session_id"] for s in _sessions(memento_server, "tenant-b")}
    assert kept[0]["memento"]["session"] in mine and dropped[0]["memento"]["session"] in theirs
    assert not mine & theirs


def test_requests_the_route_does_not_serve_go_to_vllm_and_bad_ones_get_one_line(memento_server: str) -> None:
    base = {"model": "tiny-memento", "messages": [{"role": "user", "content": "alpha"}], "max_tokens": 3}
    plain = _post(memento_server, {**base, "vllm_xargs": {"memento": False}, "temperature": 0})
    assert plain["_status"] == 200 and "memento" not in plain and plain["usage"]["completion_tokens"] <= 3
    served_here = _post(memento_server, {**base, "temperature": 0})
    assert served_here["_status"] == 200 and served_here["memento"]["session"].startswith("chat-")
    bad = _post(memento_server, {**base, "messages": [{"role": "wizard", "content": "x"}]})
    assert bad["_status"] == 400 and "messages[0]: unsupported role 'wizard'" in bad["error"]["message"]
    bad = _post(memento_server, {**base, "tool_choice": {"type": "function", "function": {"name": "read"}}})
    assert bad["_status"] == 400 and "tool_choice" in bad["error"]["message"]
    assert _post(memento_server, {**base, "messages": []})["_status"] == 400
