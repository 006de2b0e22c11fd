"""One call of a session: the closure memento (when an observation block is open), the turn, and its result."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from autogen_core import EVENT_LOGGER_NAME
from autogen_core.models import CreateResult, LLMMessage, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from .._events import MementoMalformedOutputEvent
from ..backends import GenerationResult, MementoBackend, SamplingParams, SessionStats
from ..chat_format import CLOSURE_PREFIX, IM_END, IncrementalRenderer, RenderedHistory, TurnEncoder, assistant_body
from ._completion import CallCost, log_call, read_completion, validate_json
from ._sessions import ClientSession

event_logger = logging.getLogger(EVENT_LOGGER_NAME)

TextCallback = Callable[[str], None]


class TextStream:
    """Turns sampled token ids into text deltas, holding back incomplete multi-byte characters."""

    def __init__(self, decode: Callable[[Sequence[int]], str], skip: Sequence[int], on_text: TextCallback) -> None:
        self._decode = decode
        self._skip = skip
        self._on_text = on_text
        self._ids: list[int] = []
        self._sent = 0

    def push(self, token: int) -> None:
        """Take one sampled token; send the text it completes."""
        if token in self._skip:
            return
        self._ids.append(token)
        text = self._decode(self._ids)
        if text.endswith("\ufffd") or len(text) <= self._sent:
            return
        self._on_text(text[self._sent :])
        self._sent = len(text)


@dataclass
class Outcome:
    """What a call returns to the client: the AutoGen result and the session's stats after it."""

    result: CreateResult
    stats: SessionStats | None


@dataclass(frozen=True)
class TurnRequest:
    """One call's arguments, as the client validated them."""

    session_id: str
    messages: Sequence[LLMMessage]
    tools: Sequence[Tool | ToolSchema]
    tool_choice: Tool | Literal["auto", "required", "none"]
    json_output: bool | type[BaseModel] | None
    params: SamplingParams
    cancel: threading.Event
    on_text: TextCallback | None


class TurnRunner:
    """Plays one call of a session on the backend: renders the history, writes a pending closure, samples the turn."""

    def __init__(self, backend: MementoBackend, max_memento_tokens: int) -> None:
        tok = backend.tokenizer
        self._backend = backend
        self._tok = tok
        self.encoder = TurnEncoder(tok)
        self._max_memento_tokens = max_memento_tokens
        self._summary_end = backend.memento_ids.summary_end
        self._im_end = int(tok.convert_tokens_to_ids(IM_END))
        eos = getattr(tok, "eos_token_id", None)
        self.stops: tuple[int, ...] = tuple(t for t in (self._im_end, eos) if isinstance(t, int))
        self._closure_prefix = self.encoder.encode_text(CLOSURE_PREFIX)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens included."""
        return str(self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def _generate(self, req: TurnRequest, ids: list[int], params: SamplingParams) -> GenerationResult:
        stream = TextStream(self.decode, self.stops, req.on_text) if req.on_text is not None else None
        on_token = stream.push if stream is not None else None
        res = self._backend.generate(req.session_id, ids, params, on_token=on_token, cancel=req.cancel)
        if res.finish_reason == "cancelled":
            raise asyncio.CancelledError()
        return res

    def run(self, state: ClientSession, req: TurnRequest) -> Outcome:
        """The call, under the session's lock: closure first if an observation block is open, then the turn."""
        if state.renderer is None:
            state.renderer = IncrementalRenderer(self.encoder)
        history = state.renderer.render(req.messages, req.tools, state.overrides)
        cost = CallCost()
        closure_text = ""
        if history.rendering.pending_closure is not None:
            closure_text = self._write_closure(state, req, history, cost)
        ids = history.prompt_ids(self.encoder, state.overrides, closure_text or None)
        res = self._generate(req, ids, req.params)
        cost.add(res)
        gen = list(res.token_ids)
        stop = gen[-1] if gen and gen[-1] in self.stops and res.finish_reason == "stop" else None
        body = gen[:-1] if stop is not None else gen
        read = read_completion(self.decode(body), res.finish_reason, req.tool_choice, req.session_id)
        # Remember the exact sampled ids under the body the next render will produce for this message, and forget
        # bodies the history no longer holds.
        canonical = assistant_body(read.thought, read.content)
        state.overrides[canonical] = body + ([stop] if stop is not None and stop != self._im_end else [])
        rendering = history.rendering.with_closure(closure_text) if closure_text else history.rendering
        used = {t.body for t in rendering.turns if t.generated} | {closure_text, canonical}
        for key in [k for k in state.overrides if k not in used]:
            del state.overrides[key]
        if req.json_output is not None and req.json_output is not False and isinstance(read.content, str):
            validate_json(read.content, req.json_output)
        thought = (closure_text + (read.thought or "")) or None
        usage = RequestUsage(prompt_tokens=cost.prompt_tokens, completion_tokens=cost.completion_tokens)
        result = CreateResult(
            finish_reason=read.finish, content=read.content, usage=usage, cached=False, thought=thought
        )
        stats = self._backend.stats(req.session_id)
        log_call(req.session_id, cost, closure=bool(closure_text), stats=stats)
        return Outcome(result, stats)

    def _write_closure(self, state: ClientSession, req: TurnRequest, history: RenderedHistory, cost: CallCost) -> str:
        """Let the model write the memento of the open observation block; return the closure body text."""
        ids = history.upto_closure_ids() + self.encoder.header("assistant") + self._closure_prefix
        if req.on_text is not None:
            req.on_text(CLOSURE_PREFIX)
        stops = (self._summary_end, *self.stops)
        memento_params = replace(req.params, max_new_tokens=self._max_memento_tokens, stop_token_ids=stops)
        res = self._generate(req, ids, memento_params)
        cost.add(res)
        body_ids = self._closure_prefix + res.token_ids
        if not res.token_ids or res.token_ids[-1] != self._summary_end:
            # Documented forced closure: a memento cut by its budget (or by a stray stop token) is terminated here.
            body_ids = body_ids + [self._summary_end]
            event_logger.info(
                MementoMalformedOutputEvent(session_id=req.session_id, problem="memento not terminated", forced=True)
            )
            if req.on_text is not None:
                req.on_text(self.decode([self._summary_end]))
        closure_text = self.decode(body_ids)
        state.overrides[closure_text] = body_ids
        return closure_text
