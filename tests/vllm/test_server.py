"""``autogen-memento serve`` end to end: the OpenAI server with the plugin, its session API and ``VLLMBackend``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _vllm_helpers import BLOCK, KV_BYTES_PER_BLOCK, MAX_LEN, make_scenario

from autogen_ext_memento.backends import SamplingParams
from autogen_ext_memento.testing import served

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def server(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("vllm")
    args = [
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_LEN), "--block-size", str(BLOCK),
        "--max-num-seqs", "4", "--kv-cache-memory-bytes", str(64 * KV_BYTES_PER_BLOCK), "--seed", "0",
    ]  # fmt: skip
    with served(vllm_model_dir, args, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def test_session_api_matches_reference_over_three_turns(server: str, vllm_model_dir: Path, reference: Any) -> None:
    from autogen_ext_memento.backends import VLLMBackend

    backend = VLLMBackend(server, str(vllm_model_dir))
    ref = reference(keep_last_n_blocks=0)
    assert backend.memento_ids == ref.memento_ids
    assert backend.max_model_len == MAX_LEN
    history: list[int] = []
    for turn in range(3):
        sc = make_scenario(ref.memento_ids, 500 + turn, 380, blocks_in_prompt=2, decode_blocks=0)
        prompt = history + sc.prompt
        params = SamplingParams(max_new_tokens=12)
        exp = ref.generate("s", prompt, params)
        got = backend.generate("agent-1", prompt, params)
        assert got.token_ids == exp.token_ids
        assert got.prompt_tokens == exp.prompt_tokens  # only new tokens are prefilled after turn 1
        assert got.evictions == exp.evictions >= 2
        assert got.rebuilt is False
        history = prompt + got.token_ids
    info = backend.session_info("agent-1")
    assert info is not None and info["logical_tokens"] == len(history) - 1
    assert info["kv_tokens"] < info["logical_tokens"]
    st = backend.stats("agent-1")
    assert st is not None and st.evictions >= 6
    assert "agent-1" in backend.session_ids()
    backend.close_session("agent-1")
    assert backend.session_info("agent-1") is None


def test_chat_client_works_unchanged_against_vllm(server: str, vllm_model_dir: Path, reference: Any) -> None:
    import asyncio

    from autogen_core.models import UserMessage

    from autogen_ext_memento import MementoChatCompletionClient
    from autogen_ext_memento.backends import VLLMBackend

    async def run(backend: Any) -> list[Any]:
        client = MementoChatCompletionClient(backend, session_id="chat", max_new_tokens=8)
        msgs: list[Any] = [UserMessage(content="Read the page and write down alpha.", source="user")]
        first = await client.create(msgs)
        msgs += [UserMessage(content="state: alpha=7 beta=?", source="user")]
        second = await client.create(msgs)
        return [first.content, second.content]

    got = asyncio.run(run(VLLMBackend(server, str(vllm_model_dir))))
    exp = asyncio.run(run(reference(keep_last_n_blocks=0)))
    assert got == exp


def test_openai_completions_endpoint_serves_with_plugin(server: str) -> None:
    body = json.dumps({"model": "x", "prompt": [5, 40, 41, 42], "max_tokens": 4, "temperature": 0}).encode()
    models = json.loads(urllib.request.urlopen(server + "/v1/models", timeout=30).read())
    body = json.dumps(
        {"model": models["data"][0]["id"], "prompt": [5, 40, 41, 42], "max_tokens": 4, "temperature": 0}
    ).encode()
    req = urllib.request.Request(server + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    out = json.loads(urllib.request.urlopen(req, timeout=60).read())
    assert out["usage"]["completion_tokens"] == 4
    mem = json.loads(urllib.request.urlopen(server + "/v1/memento/sessions", timeout=30).read())
    assert mem["memory"]["block_size"] == BLOCK and mem["memory"]["num_blocks"] > 0


def _http(server: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def test_session_api_is_scoped_by_cache_salt_and_bounded_by_max_model_len(server: str) -> None:
    gen = "/v1/memento/sessions/salted/generate"
    prompt = [20 + i % 300 for i in range(40)]
    code, _ = _http(server, "POST", gen, {"prompt_token_ids": prompt, "max_tokens": 2, "cache_salt": "alice"})
    assert code == 200

    def ids(salt: str | None) -> list[str]:
        query = f"?cache_salt={salt}" if salt else ""
        code, listing = _http(server, "GET", "/v1/memento/sessions" + query)
        assert code == 200 and listing["limits"]["max_sessions"] > 0 and listing["limits"]["session_ttl_s"] > 0
        return [s["session_id"] for s in listing["sessions"]]

    assert "salted" in ids("alice")
    assert "salted" not in ids("bob") and "salted" not in ids(None)
    assert _http(server, "GET", "/v1/memento/sessions/salted?cache_salt=bob")[0] == 404
    assert _http(server, "DELETE", "/v1/memento/sessions/salted?cache_salt=bob")[1]["closed"] is False
    assert "salted" in ids("alice")
    # max_tokens is clamped to the logical room left; a prompt that fills max_model_len is refused.
    long = [20 + i % 300 for i in range(MAX_LEN - 3)]
    code, out = _http(
        server, "POST", "/v1/memento/sessions/long/generate", {"prompt_token_ids": long, "max_tokens": 100}
    )
    assert code == 200 and out["max_tokens"] == 3 and len(out["token_ids"]) == 3 and out["finish_reason"] == "length"
    code, err = _http(server, "POST", "/v1/memento/sessions/long/generate", {"prompt_token_ids": long + [5, 6, 7]})
    assert code == 400 and "max_model_len" in json.dumps(err)
    assert _http(server, "DELETE", "/v1/memento/sessions/salted?cache_salt=alice")[1]["closed"] is True
    _http(server, "DELETE", "/v1/memento/sessions/long")


def test_streamed_turns_arrive_token_by_token_and_equal_the_whole_answer(server: str, vllm_model_dir: Path) -> None:
    import httpx

    from autogen_ext_memento.backends import VLLMBackend

    backend = VLLMBackend(server, str(vllm_model_dir))
    prompt = make_scenario(backend.memento_ids, 900, 200, blocks_in_prompt=1, decode_blocks=0).prompt
    body = {"prompt_token_ids": prompt, "max_tokens": 8, "temperature": 0.0, "stream": True}
    with httpx.stream("POST", server + "/v1/memento/sessions/stream-raw/generate", json=body, timeout=120) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert len(events) >= 3 and events[-1]["finish_reason"] == "length"
    streamed = [t for e in events for t in e["token_ids"]]
    whole = backend.generate("stream-whole", prompt, SamplingParams(max_new_tokens=8))
    assert streamed == whole.token_ids and len(streamed) == 8
    seen: list[int] = []
    got = backend.generate("stream-client", prompt, SamplingParams(max_new_tokens=8), on_token=seen.append)
    assert seen == got.token_ids == whole.token_ids
    assert backend.stats("stream-client") is not None


def test_a_salted_backend_keeps_its_sessions_to_itself_over_post_routes(server: str, vllm_model_dir: Path) -> None:
    from autogen_ext_memento.backends import VLLMBackend

    tenant = VLLMBackend(server, str(vllm_model_dir), cache_salt="tenant-secret-1")
    other = VLLMBackend(server, str(vllm_model_dir))
    prompt = make_scenario(tenant.memento_ids, 950, 120, blocks_in_prompt=1, decode_blocks=0).prompt
    first = tenant.generate("shared-name", prompt, SamplingParams(max_new_tokens=4))
    assert "shared-name" in tenant.session_ids() and "shared-name" not in other.session_ids()
    assert other.session_info("shared-name") is None  # another salt cannot read it ...
    other.close_session("shared-name")  # ... nor close it
    info = tenant.session_info("shared-name")
    assert info is not None and info["logical_tokens"] >= len(prompt)
    # The next turn of the tenant adopts its own KV (only the new tokens are prefilled).
    again = tenant.generate("shared-name", prompt + first.token_ids + [5, 6], SamplingParams(max_new_tokens=2))
    assert again.prompt_tokens == 3 and not again.rebuilt  # the pending sampled token and the two new ones
    tenant.close_session("shared-name")
    assert tenant.session_info("shared-name") is None and "shared-name" not in tenant.session_ids()
