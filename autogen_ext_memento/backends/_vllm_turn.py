"""One session turn of :class:`~autogen_ext_memento.backends.VLLMBackend` over HTTP: retries, resumption, streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ._base import SamplingParams, TokenCallback

#: The header a session-affinity router hashes on (vllm-router's ``consistent_hash`` policy reads it).
SESSION_HEADER = "X-Session-ID"
#: Statuses a router or a restarting replica answers while a replica is down: the request is retried.
RETRY_STATUSES = frozenset({502, 503, 504})


class Retryable(Exception):
    """A failure after which the same request may be sent again (to this server or the next)."""


# Failures that mean "this replica is unreachable, down or died mid-turn": retried (a turn resumes where it was).
RETRY_ERRORS: tuple[type[Exception], ...] = (
    Retryable,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl")


class Cancelled(Exception):
    """The caller's cancel event was set during a turn."""


class SessionTurn:
    """One session turn across attempts: tokens already received survive a retry, which resumes after them."""

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        headers: dict[str, str],
        *,
        stream: bool,
        max_len: int,
        cache_salt: str | None = None,
        session_id: str,
        prompt: list[int],
        params: SamplingParams,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        self.http = http
        self.path = path
        self.headers = headers
        self.stream = stream
        self.max_len = max_len
        self.cache_salt = cache_salt
        self.sid = session_id
        self.prompt = prompt
        self.params = params
        self.on_token = on_token
        self.cancel = cancel
        self.got: list[int] = []
        self.held = False  # a server holds this session's KV (an earlier turn, or tokens of this one)
        self.prior = False  # ``held`` when the last attempt was sent
        self.rebuild = False  # the server said 404 (unknown session): re-send with "rebuild": true
        self.sent_len = len(prompt)

    def body(self) -> dict[str, Any]:
        """The request body of the next attempt: the whole logical sequence, tokens received so far included."""
        seq = self.prompt + self.got
        self.sent_len = len(seq)
        p = self.params
        body: dict[str, Any] = {
            "prompt_token_ids": seq,
            "max_tokens": min(p.max_new_tokens - len(self.got), self.max_len - len(seq)),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "seed": p.seed,
            "stop_token_ids": [int(t) for t in p.stop_token_ids],
        }
        if self.on_token is not None and self.stream:
            body["stream"] = True
        if self.rebuild:
            body["rebuild"] = True
        if self.cache_salt is not None:
            body["cache_salt"] = self.cache_salt
        return body

    def finished_locally(self) -> dict[str, Any] | None:
        """The turn's end when the tokens already received complete it (a stream cut after its last token)."""
        stops = {int(t) for t in self.params.stop_token_ids}
        if self.got and self.got[-1] in stops:
            return {"finish_reason": "stop", "prompt_tokens": 0}
        seq_len = len(self.prompt) + len(self.got)
        if self.got and (len(self.got) >= self.params.max_new_tokens or seq_len >= self.max_len):
            return {"finish_reason": "length", "prompt_tokens": 0}
        return None

    def attempt(self, base: str) -> dict[str, Any]:
        """Send the turn to one server; the final answer (tokens accumulate in :attr:`got`)."""
        done = self.finished_locally()
        if done is not None:
            return done
        self.prior = self.held
        path = self.path
        headers = {**self.headers, "Accept": ", ".join(["application/json", *STREAM_TYPES])}
        with self.http.stream("POST", base + path, json=self.body(), headers=headers) as resp:
            if resp.status_code in RETRY_STATUSES:
                raise Retryable(f"HTTP {resp.status_code}")
            if resp.status_code == 404 and not self.rebuild:
                self.rebuild = True  # the replica does not know the session: rebuild it from the history sent
                return self.attempt(base)
            if resp.status_code >= 400:
                raise RuntimeError(f"POST {path}: HTTP {resp.status_code}: {resp.read().decode(errors='replace')}")
            kind = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind in STREAM_TYPES:
                return self._read_stream(resp, sse=kind == "text/event-stream")
            out: dict[str, Any] = json.loads(resp.read().decode() or "null")
        self._take(out.get("token_ids") or [])
        return out

    def _take(self, ids: Sequence[int]) -> None:
        for t in ids:
            self.got.append(int(t))
            if self.on_token is not None:
                self.on_token(int(t))
        if ids:
            self.held = True  # the server now holds this turn's tokens: a resume elsewhere is a rebuild

    def _read_stream(self, resp: httpx.Response, *, sse: bool) -> dict[str, Any]:
        """Read a streamed turn; raises :class:`Retryable` when it ends before its final event."""
        for event in stream_events(resp.iter_lines(), sse=sse):
            if "error" in event:
                raise RuntimeError(f"session {self.sid!r}: server error during the turn: {event['error']}")
            self._take(event.get("token_ids") or [])
            if event.get("finish_reason") is not None:
                return event
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()  # leaving the ``with`` closes the stream: the server aborts the request
        raise Retryable("the stream ended before the turn finished")

    def lost_session(self, out: dict[str, Any]) -> bool:
        """Whether the answering server rebuilt a session another server (or its former self) held."""
        if not self.prior:
            return False  # a new session (a strict server's 404 on a first turn included)
        if self.rebuild:
            return True
        if "prompt_tokens" not in out or out.get("rebuilt"):
            return False
        return int(out["prompt_tokens"]) >= self.sent_len  # nothing adopted


def stream_events(lines: Iterator[str], *, sse: bool) -> Iterator[dict[str, Any]]:
    """JSON events of an SSE (``data: {...}`` lines, ``data: [DONE]``) or NDJSON (one object a line) body."""
    for raw in lines:
        line = raw.strip()
        if sse:
            if not line.startswith("data:"):
                continue  # comments, event names, ids, blank separators
            line = line[5:].strip()
        if not line:
            continue
        if line == "[DONE]":
            return
        event = json.loads(line)
        if isinstance(event, dict):
            yield event
