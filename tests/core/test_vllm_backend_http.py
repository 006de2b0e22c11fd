"""VLLMBackend's HTTP transport against fake session servers on loopback: headers, pooling, retries, streaming,
and sessions a replica lost (rebuilt from the client's history, counted, never surfaced as an error)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from autogen_core import EVENT_LOGGER_NAME
from autogen_core.models import CreateResult, UserMessage

from autogen_ext_memento import MementoChatCompletionClient
from autogen_ext_memento.backends import SamplingParams, VLLMBackend
from autogen_ext_memento.backends._vllm import SESSION_HEADER
from autogen_ext_memento.grammar import MementoTokenIds

MAX_LEN = 4096


class Script:
    """Replies shared by every fake replica: a resumed turn continues the reply another replica started."""

    def __init__(self, tokenizer: Any, replies: list[str]) -> None:
        self.replies = [tokenizer.encode(r, add_special_tokens=False) for r in replies]
        self.pending: list[int] = []
        self.lock = threading.Lock()

    def take(self, n: int) -> list[int]:
        """Up to ``n`` tokens of the current reply (the next reply when none is pending)."""
        with self.lock:
            if not self.pending:
                self.pending = list(self.replies.pop(0))
            out, self.pending = self.pending[:n], self.pending[n:]
            return out


class Replica:
    """A fake ``autogen-memento serve`` session API on 127.0.0.1 (keep-alive HTTP/1.1, chunked streams)."""

    def __init__(self, tokenizer: Any, script: Script, *, stream: str = "sse", strict: bool = False) -> None:
        self.ids = MementoTokenIds.from_tokenizer(tokenizer)
        self.script = script
        self.stream = stream  # "sse", "ndjson" or "none" (answers JSON even when asked to stream)
        self.strict = strict  # 404 for a session it does not hold unless the body says "rebuild"
        self.sessions: dict[str, list[int]] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0  # answer 503 this many times
        self.die_after: int | None = None  # drop the connection after this many streamed tokens (once)
        self.hold: threading.Event | None = None  # block after the first streamed chunk until set
        self.stopped = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening (connections are then refused); idempotent."""
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                replica.handle(self, "GET")

            def do_POST(self) -> None:
                replica.handle(self, "POST")

            def do_DELETE(self) -> None:
                replica.handle(self, "DELETE")

        return Handler

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        """Record the request and answer it like the plugin's session API."""
        size = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(size)) if size else None
        self.requests.append(
            {"method": method, "path": h.path, "headers": dict(h.headers), "body": body, "peer": h.client_address}
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return send_json(h, 503, {"detail": "replica starting"})
        parts = h.path.split("?")[0].strip("/").split("/")
        if parts == ["v1", "memento", "config"]:
            return send_json(h, 200, {"memento": {}, "token_ids": list(self.ids.as_tuple()), "max_model_len": MAX_LEN})
        if parts == ["v1", "memento", "sessions"]:
            return send_json(h, 200, {"sessions": [{"session_id": s} for s in self.sessions]})
        sid = parts[3]
        if len(parts) == 5 and method == "POST":
            return self.generate(h, sid, body or {})
        if sid not in self.sessions:
            return send_json(h, 404, {"detail": f"no session {sid!r}"})
        if method == "DELETE":
            del self.sessions[sid]
            return send_json(h, 200, {"session_id": sid, "closed": True})
        return send_json(h, 200, {"session_id": sid, "logical_tokens": len(self.sessions[sid])})

    def generate(self, h: BaseHTTPRequestHandler, sid: str, body: dict[str, Any]) -> None:
        """One turn: adopt the held history when the prompt extends it; emit scripted tokens."""
        prompt = body["prompt_token_ids"]
        held = self.sessions.get(sid)
        if held is None and self.strict and not body.get("rebuild"):
            return send_json(h, 404, {"detail": f"no session {sid!r}"})
        adopted = len(held) if held is not None and prompt[: len(held)] == held else 0
        tokens = self.script.take(body["max_tokens"])
        stops = set(body["stop_token_ids"])
        cut = next((i + 1 for i, t in enumerate(tokens) if t in stops), len(tokens))
        self.script.pending[:0] = tokens[cut:]
        tokens = tokens[:cut]
        stats = {"adopted_logical_tokens": adopted, "rebuilt": held is not None and adopted == 0, "evictions": 0}
        final = {
            "finish_reason": "stop" if tokens and tokens[-1] in stops else "length",
            "prompt_tokens": len(prompt) - adopted,
            "rebuilt": stats["rebuilt"],
            "evictions": 0,
            "stats": stats,
            "session": {"logical_tokens": len(prompt) + len(tokens), "kv_tokens": len(prompt) + len(tokens)},
        }
        if not (body.get("stream") and self.stream != "none"):
            self.sessions[sid] = prompt + tokens
            return send_json(h, 200, {"token_ids": tokens, **final})
        self.stream_turn(h, sid, prompt, tokens, final)

    def stream_turn(
        self, h: BaseHTTPRequestHandler, sid: str, prompt: list[int], tokens: list[int], final: dict[str, Any]
    ) -> None:
        """Send the turn one token per chunk (SSE or NDJSON), optionally dying or pausing part way."""
        sse = self.stream == "sse"
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(event: dict[str, Any] | str) -> None:
            text = event if isinstance(event, str) else json.dumps(event)
            data = (f"data: {text}\n\n" if sse else text + "\n").encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        for i, t in enumerate(tokens):
            if self.die_after is not None and i == self.die_after:
                self.die_after = None
                self.script.pending[:0] = tokens[i:]
                self.stop()  # the replica is gone: later connections are refused
                h.close_connection = True
                h.wfile.write(b"0")  # a broken chunked body: the replica died mid-turn
                h.wfile.flush()
                h.connection.close()
                return
            chunk({"token_ids": [t]})
            if i == 0 and self.hold is not None:
                self.hold.wait(10)
        self.sessions[sid] = prompt + tokens
        chunk({"token_ids": [], **final})
        if sse:
            chunk("[DONE]")
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def send_json(h: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
    """Answer one JSON response with a Content-Length (the connection stays open)."""
    data = json.dumps(obj).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


@pytest.fixture()
def replicas(tiny_tokenizer: Any) -> Iterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for r in made:
        r.stop()


def make(replicas: list[Replica], tokenizer: Any, script: Script, **kwargs: Any) -> Replica:
    r = Replica(tokenizer, script, **kwargs)
    replicas.append(r)
    return r


def backend_for(tokenizer: Any, url: str, **kwargs: Any) -> VLLMBackend:
    return VLLMBackend(url, tokenizer, retry_backoff_s=0.01, connect_timeout_s=2, timeout_s=20, **kwargs)


def generates(r: Replica) -> list[dict[str, Any]]:
    return [q for q in r.requests if q["path"].endswith("/generate")]


REPLY = "hello there<|im_end|>"


async def two_turns(client: MementoChatCompletionClient, first: str, second: str) -> list[CreateResult]:
    msgs: list[Any] = [UserMessage(content=first, source="user")]
    a = await client.create(msgs)
    msgs += [UserMessage(content=second, source="user")]
    b = await client.create(msgs)
    return [a, b]


def test_every_request_carries_its_session_header(tiny_tokenizer: Any, replicas: list[Replica]) -> None:
    script = Script(tiny_tokenizer, [REPLY] * 4)
    rep = make(replicas, tiny_tokenizer, script)
    backend = backend_for(tiny_tokenizer, rep.url)

    async def run() -> None:
        alice = MementoChatCompletionClient(backend, session_id="agent-alice", max_new_tokens=16)
        bob = MementoChatCompletionClient(backend, session_id="agent-bob", max_new_tokens=16)
        await two_turns(alice, "hi", "and?")
        await two_turns(bob, "hey", "so?")

    asyncio.run(run())
    backend.session_info("agent-alice")
    backend.close_session("agent-bob")
    session_reqs = [q for q in rep.requests if q["path"].startswith("/v1/memento/sessions/")]
    assert len(session_reqs) == 6
    for q in session_reqs:
        assert q["headers"][SESSION_HEADER] == q["path"].split("/")[4]
    assert {q["headers"][SESSION_HEADER] for q in generates(rep)} == {"agent-alice", "agent-bob"}
    assert "agent-alice" in rep.sessions and "agent-bob" not in rep.sessions
    # one pooled keep-alive connection served the sequential calls
    assert len({q["peer"] for q in rep.requests}) < len(rep.requests)
    backend.close()


@pytest.mark.parametrize("mode", ["sse", "ndjson", "none"])
def test_create_stream_yields_the_streamed_turn(tiny_tokenizer: Any, replicas: list[Replica], mode: str) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY]), stream=mode)
    backend = backend_for(tiny_tokenizer, rep.url)

    async def run() -> tuple[list[str], CreateResult]:
        client = MementoChatCompletionClient(backend, session_id="s", max_new_tokens=16)
        chunks: list[str] = []
        final: CreateResult | None = None
        async for item in client.create_stream([UserMessage(content="hi", source="user")]):
            if isinstance(item, str):
                chunks.append(item)
            else:
                final = item
        assert final is not None
        return chunks, final

    chunks, final = asyncio.run(run())
    assert final.content == "hello there" and "".join(chunks) == "hello there"
    assert generates(rep)[0]["body"]["stream"] is True


def test_tokens_arrive_before_the_turn_ends(tiny_tokenizer: Any, replicas: list[Replica]) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY]))
    rep.hold = threading.Event()
    backend = backend_for(tiny_tokenizer, rep.url)
    seen: list[int] = []
    first = threading.Event()

    def on_token(t: int) -> None:
        seen.append(t)
        first.set()

    stops = [tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    out: list[Any] = []
    worker = threading.Thread(
        target=lambda: out.append(
            backend.generate("s", [1, 2, 3], SamplingParams(16, stop_token_ids=stops), on_token=on_token)
        )
    )
    worker.start()
    assert first.wait(10), "no token reached the caller while the server was still generating"
    assert len(seen) == 1 and not out
    rep.hold.set()
    worker.join(10)
    assert out[0].finish_reason == "stop" and out[0].token_ids == seen


def test_cancel_stops_a_streamed_turn(tiny_tokenizer: Any, replicas: list[Replica]) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY]))
    rep.hold = threading.Event()
    backend = backend_for(tiny_tokenizer, rep.url)
    cancel = threading.Event()
    res = backend.generate("s", [1, 2], SamplingParams(16), on_token=lambda t: cancel.set(), cancel=cancel)
    rep.hold.set()
    assert res.finish_reason == "cancelled" and len(res.token_ids) == 1


def test_503_is_retried_with_backoff(tiny_tokenizer: Any, replicas: list[Replica]) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY]))
    backend = backend_for(tiny_tokenizer, rep.url)
    rep.fail_next = 2
    res = backend.generate("s", [1, 2], SamplingParams(16))
    assert res.finish_reason == "length" and res.token_ids
    assert len(generates(rep)) == 3 and not res.rebuilt
    rep.fail_next = 10
    with pytest.raises(RuntimeError, match="no server answered"):
        backend_for(tiny_tokenizer, rep.url, max_retries=1).session_ids()


def rebuild_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    out = []
    for rec in caplog.records:
        try:
            ev = json.loads(str(rec.msg))
        except (TypeError, ValueError):
            continue
        if isinstance(ev, dict) and ev.get("type") == "MementoSessionRebuildEvent":
            out.append(ev)
    return out


@pytest.mark.parametrize("strict", [False, True])
def test_a_restarted_replica_rebuilds_from_history(
    tiny_tokenizer: Any, replicas: list[Replica], caplog: pytest.LogCaptureFixture, strict: bool
) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY, "fine<|im_end|>"]), strict=strict)
    backend = backend_for(tiny_tokenizer, rep.url)
    client = MementoChatCompletionClient(backend, session_id="agent", max_new_tokens=16)

    async def run() -> list[CreateResult]:
        msgs: list[Any] = [UserMessage(content="hi", source="user")]
        a = await client.create(msgs)
        rep.sessions.clear()  # the replica restarted and lost every session
        msgs += [a_msg(a), UserMessage(content="again", source="user")]
        return [a, await client.create(msgs)]

    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        a, b = asyncio.run(run())
    assert (a.content, b.content) == ("hello there", "fine")
    last = generates(rep)[-1]["body"]
    assert (
        last["prompt_token_ids"][: len(generates(rep)[0]["body"]["prompt_token_ids"])]
        == (generates(rep)[0]["body"]["prompt_token_ids"])
    )
    assert last.get("rebuild", False) is strict
    st = backend.stats("agent")
    assert st is not None and st.rebuilds == 1
    assert len(rebuild_events(caplog)) == 1


def a_msg(res: CreateResult) -> Any:
    from autogen_core.models import AssistantMessage

    assert isinstance(res.content, str)
    return AssistantMessage(content=res.content, source="assistant")


def test_a_dead_replica_fails_over_with_nothing_lost(
    tiny_tokenizer: Any, replicas: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    second_reply = "all good now<|im_end|>"
    script = Script(tiny_tokenizer, [REPLY, second_reply])
    a = make(replicas, tiny_tokenizer, script)
    b = make(replicas, tiny_tokenizer, script)
    backend = backend_for(tiny_tokenizer, a.url, fallback_urls=[b.url], max_retries=2)
    client = MementoChatCompletionClient(backend, session_id="agent", max_new_tokens=16)

    async def run() -> list[CreateResult]:
        msgs: list[Any] = [UserMessage(content="hi", source="user")]
        first = await client.create(msgs)
        a.die_after = 2  # replica A dies two tokens into the next turn and does not come back
        msgs += [a_msg(first), UserMessage(content="again", source="user")]
        chunks = [x async for x in client.create_stream(msgs)]
        final = chunks[-1]
        assert isinstance(final, CreateResult)
        assert "".join(c for c in chunks if isinstance(c, str)) == "all good now"
        return [first, final]

    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        first, second = asyncio.run(run())
    assert (first.content, second.content) == ("hello there", "all good now")
    resumed = generates(b)[-1]["body"]
    assert resumed["prompt_token_ids"][-2:] == tiny_tokenizer.encode(second_reply, add_special_tokens=False)[:2]
    assert not generates(a)[-1]["body"]["prompt_token_ids"][-2:] == resumed["prompt_token_ids"][-2:]
    assert b.sessions["agent"][-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    st = backend.stats("agent")
    assert st is not None and st.rebuilds == 1 and len(rebuild_events(caplog)) == 1
    assert generates(b)[-1]["headers"][SESSION_HEADER] == "agent"


def test_config_round_trip_keeps_transport_settings(tiny_tokenizer: Any, replicas: list[Replica]) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, []))
    backend = backend_for(tiny_tokenizer, rep.url, fallback_urls=[rep.url + "/"], stream=False)
    with pytest.raises(ValueError, match="cannot be serialised"):
        backend.dump_component()
    with pytest.raises(ValueError, match="max_retries"):
        VLLMBackend(rep.url, tiny_tokenizer, max_retries=-1)
    with pytest.raises(ValueError, match="http://"):
        VLLMBackend(rep.url, tiny_tokenizer, fallback_urls=["ftp://x"])


def test_closing_a_backend_leaves_other_clients_sessions_on_the_server(
    tiny_tokenizer: Any, replicas: list[Replica]
) -> None:
    rep = make(replicas, tiny_tokenizer, Script(tiny_tokenizer, [REPLY] * 4))
    mine, theirs = backend_for(tiny_tokenizer, rep.url), backend_for(tiny_tokenizer, rep.url)

    async def run() -> None:
        await two_turns(MementoChatCompletionClient(mine, session_id="mine", max_new_tokens=16), "hi", "and?")
        await two_turns(MementoChatCompletionClient(theirs, session_id="theirs", max_new_tokens=16), "hey", "so?")

    asyncio.run(run())
    assert set(mine.session_ids()) == {"mine", "theirs"}  # the server lists its namespace
    mine.close()
    assert set(rep.sessions) == {"theirs"}  # only the sessions this backend drove were closed
    assert mine.stats("mine") is None and theirs.stats("theirs") is not None
    theirs.close()
    assert not rep.sessions
