"""The agent chat format: how AutoGen messages become memento-grammar tokens, and how completions are parsed back.

Rendering (ChatML with Qwen3-style tools; every turn is ``<|im_start|>{role}\\n{body}<|im_end|>\\n``):

* **System**: leading :class:`SystemMessage` s are merged into one ``system`` turn, followed by the tool schemas
  (``<tools>`` one JSON object per line ``</tools>``) and the calling convention. A later system message is its
  own ``system`` turn at its place.
* **User**: ``user`` turn; a message from another agent (``source`` not ``user``) is prefixed ``[source] ``;
  images become ``[image]``.
* **Assistant text**: ``assistant`` turn whose body is ``thought + content`` verbatim. A memento model writes its
  own reasoning blocks there (``<|block_start|>…<|block_end|><|summary_start|>…<|summary_end|>answer``).
* **Assistant tool calls** open a block: ``assistant`` turn ``thought + <|block_start|> + <tool_call>\\n{"name":
  …, "arguments": {…}}\\n</tool_call>`` (``<|block_start|>`` is inserted unless the thought already left a block
  open). The ``FunctionExecutionResultMessage`` that answers it is one ``user`` turn holding every result as
  ``<tool_response>\\n…\\n</tool_response>``, *inside the same block*: a tool pair is never split.
* **Who writes the memento of an observation block**: the model, before its next action. The backend appends a
  *closure* turn ``<|im_start|>assistant\\n<|block_end|><|summary_start|>`` right after the observation, the model
  writes the memento up to ``<|summary_end|>`` and the turn is closed with ``<|im_end|>\\n``; the block is evicted
  there. Messages that arrived after the observation (a new task, other agents) follow the closure. The closure
  text is returned at the start of the next :class:`CreateResult` ``thought``, so re-rendering a saved history
  reproduces the exact token stream (the renderer moves a leading closure back to right after its observation).

Untrusted text (user, other agents, tool results) has literal ``<|…|>`` token strings neutralised
(:func:`~autogen_ext_memento.grammar.escape_special`), so a tool result cannot forge ``<|summary_end|>``.

Parsing a completion: a ``<tool_call>`` makes it a tool-call turn (``thought`` = text before the first call).
Otherwise ``thought`` = everything up to the last grammar token and ``content`` = the text after it. A tool call
whose JSON does not parse becomes a :class:`FunctionCall` named after what could be read (else
``invalid_tool_call``) with the raw text as ``arguments``, so the agent's tool runner reports the error back to the
model instead of the client crashing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from autogen_core import FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema

from ..grammar import BLOCK_START, SPECIAL_TOKENS
from ._text import (
    IM_END,
    IM_START,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    block_open,
    escape_untrusted,
    split_closure,
    tool_response,
)

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One ChatML turn. ``generated`` bodies were written by the model and may carry grammar tokens."""

    role: Role
    body: str
    generated: bool = False

    @property
    def text(self) -> str:
        return f"{IM_START}{self.role}\n{self.body}{IM_END}\n"


@dataclass
class Rendering:
    """The turns of a rendered history, and where an observation block still waits for its memento.

    ``pending_closure`` is the index in :attr:`turns` at which the closure turn for the last open observation
    block belongs (``None`` if no block waits).
    """

    turns: list[Turn]
    pending_closure: int | None = None
    generation_prompt: bool = False

    @property
    def text(self) -> str:
        tail = f"{IM_START}assistant\n" if self.generation_prompt else ""
        return "".join(t.text for t in self.turns) + tail

    def with_closure(self, closure_body: str) -> Rendering:
        """Insert a closure turn at :attr:`pending_closure`."""
        if self.pending_closure is None:
            raise ValueError("no pending observation block to close")
        turns = list(self.turns)
        turns.insert(self.pending_closure, Turn("assistant", closure_body, generated=True))
        return Rendering(turns, None, self.generation_prompt)

    def upto_closure(self) -> Rendering:
        """The turns before the pending closure (what the model sees while it writes the memento)."""
        if self.pending_closure is None:
            raise ValueError("no pending observation block to close")
        return Rendering(self.turns[: self.pending_closure], None, False)


@dataclass
class ParsedCompletion:
    """A completion split into ``thought``, text ``content`` and tool calls (``(name, arguments_json)``)."""

    thought: str | None
    content: str
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


class _Encoder(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def tool_schema(tool: Tool | ToolSchema) -> ToolSchema:
    """The schema of a tool or schema."""
    return tool.schema if isinstance(tool, Tool) else tool


def render_tools(tools: Sequence[Tool | ToolSchema]) -> str:
    """The tools section appended to the system turn (empty without tools)."""
    if not tools:
        return ""
    lines = []
    for t in tools:
        s = tool_schema(t)
        entry: dict[str, Any] = {"name": s["name"]}
        if s.get("description"):
            entry["description"] = s.get("description")
        entry["parameters"] = s.get("parameters", {"type": "object", "properties": {}})
        lines.append(json.dumps(entry, ensure_ascii=False))
    return (
        "# Tools\n<tools>\n"
        + "\n".join(lines)
        + "\n</tools>\nTo call a tool write "
        + TOOL_CALL_OPEN
        + '\n{"name": <tool-name>, "arguments": <json-object>}\n'
        + TOOL_CALL_CLOSE
    )


def render_tool_call(name: str, arguments: str) -> str:
    """Canonical text of one tool call (arguments kept verbatim when they are not valid JSON)."""
    try:
        args: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        args = arguments
    return f"{TOOL_CALL_OPEN}\n{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"


def _user_text(msg: UserMessage) -> str:
    if isinstance(msg.content, str):
        text = msg.content
    else:
        text = "\n".join(p if isinstance(p, str) else "[image]" for p in msg.content if isinstance(p, (str, Image)))
    if msg.source and msg.source != "user":
        text = f"[{msg.source}] {text}"
    return escape_untrusted(text)


def _leading_system(messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]) -> tuple[list[Turn], int]:
    """The merged system turn (leading system messages and the tools), and how many messages it took."""
    i = 0
    system_parts: list[str] = []
    while i < len(messages):
        first = messages[i]
        if not isinstance(first, SystemMessage):
            break
        system_parts.append(escape_untrusted(first.content))
        i += 1
    tools_text = render_tools(tools)
    if tools_text:
        system_parts.append(tools_text)
    return ([Turn("system", "\n\n".join(system_parts))] if system_parts else []), i


def append_turns(turns: list[Turn], pending: int | None, messages: Sequence[LLMMessage]) -> tuple[int | None, int]:
    """Render ``messages`` (after the leading system run) onto ``turns`` in place.

    Returns the new pending-closure index and the first turn index that changed (a closure is inserted back at
    the pending index, before turns that followed the observation).
    """
    changed = len(turns)
    for msg in messages:
        if isinstance(msg, SystemMessage):
            turns.append(Turn("system", escape_untrusted(msg.content)))
        elif isinstance(msg, UserMessage):
            turns.append(Turn("user", _user_text(msg)))
        elif isinstance(msg, FunctionExecutionResultMessage):
            body = "\n".join(tool_response(escape_untrusted(r.content)) for r in msg.content)
            turns.append(Turn("user", body))
            pending = len(turns)
        elif isinstance(msg, AssistantMessage):
            closure, thought = split_closure(msg.thought)
            if closure is not None:
                at = pending if pending is not None else len(turns)
                turns.insert(at, Turn("assistant", closure, generated=True))
                changed = min(changed, at)
            pending = None
            body = thought or ""
            if isinstance(msg.content, str):
                body += msg.content
            else:
                if not block_open(body):
                    body += BLOCK_START
                body += "\n".join(render_tool_call(c.name, c.arguments) for c in msg.content)
            turns.append(Turn("assistant", body, generated=True))
    return pending, changed


def render(
    messages: Sequence[LLMMessage],
    tools: Sequence[Tool | ToolSchema] = (),
    *,
    add_generation_prompt: bool = False,
) -> Rendering:
    """Render AutoGen messages as turns of the agent chat format (see the module docstring)."""
    turns, i = _leading_system(messages, tools)
    pending, _ = append_turns(turns, None, messages[i:])
    return Rendering(turns, pending, add_generation_prompt)


_TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.S)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]*)"')


def parse_completion(text: str) -> ParsedCompletion:
    """Parse a generated assistant body (without ``<|im_end|>``) into thought, content and tool calls."""
    first = text.find(TOOL_CALL_OPEN)
    if first >= 0:
        calls: list[tuple[str, str]] = []
        malformed: list[str] = []
        for m in _TOOL_CALL_RE.finditer(text, first):
            raw = m.group(1).strip()
            try:
                obj = json.loads(raw)
                if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str):
                    raise ValueError("expected an object with a string 'name'")
                args = obj.get("arguments", {})
                calls.append((obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
            except (json.JSONDecodeError, ValueError) as e:
                name = _NAME_RE.search(raw)
                calls.append((name.group(1) if name else "invalid_tool_call", raw))
                malformed.append(f"tool call {len(calls)}: {e}")
        return ParsedCompletion(text[:first] or None, "", calls, malformed)
    cut = max(text.rfind(tok) + len(tok) if text.rfind(tok) >= 0 else 0 for tok in SPECIAL_TOKENS)
    return ParsedCompletion(text[:cut] or None, text[cut:])


def to_function_calls(parsed: ParsedCompletion) -> list[FunctionCall]:
    """Tool calls as AutoGen :class:`FunctionCall` s with fresh ids."""
    return [FunctionCall(id=f"call_{uuid.uuid4().hex[:24]}", name=n, arguments=a) for n, a in parsed.tool_calls]


def transcript(messages: Sequence[LLMMessage]) -> str:
    """Messages as plain text in the agent chat format, one ``role: body`` per turn (for writers and recall)."""
    return "\n".join(f"{t.role}: {t.body}" for t in render(messages).turns)


def assistant_body(thought: str | None, content: str | Sequence[FunctionCall]) -> str:
    """The body :func:`render` produces for an assistant message with this thought and content (closure removed)."""
    msg = AssistantMessage(
        content=list(content) if not isinstance(content, str) else content, thought=thought, source="x"
    )
    _, rest = split_closure(msg.thought)
    return render([AssistantMessage(content=msg.content, thought=rest, source="x")]).turns[-1].body


class TurnEncoder:
    """Tokenizes renderings turn by turn, with a cache and per-body id overrides for generated text.

    Generated turns are tokenized exactly as the model sampled them (``overrides``: body text → ids), because a
    model can sample a non-canonical tokenization or format a tool call differently from the canonical render;
    without the override every later turn would look like a history mismatch.
    """

    def __init__(self, tokenizer: _Encoder, cache_size: int = 4096) -> None:
        self._tok = tokenizer
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size
        self._headers = {r: self._enc(f"{IM_START}{r}\n") for r in ("system", "user", "assistant")}
        self._footer = self._enc(f"{IM_END}\n")

    def _enc(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self._tok.encode(text, add_special_tokens=False))
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = ids
        return ids

    def header(self, role: Role) -> list[int]:
        return self._headers[role]

    @property
    def footer(self) -> list[int]:
        return self._footer

    def body(self, turn: Turn, overrides: Mapping[str, Sequence[int]] | None = None) -> list[int]:
        if turn.generated and overrides is not None:
            hit = overrides.get(turn.body)
            if hit is not None:
                return list(hit)
        return self._enc(turn.body)

    def encode(self, rendering: Rendering, overrides: Mapping[str, Sequence[int]] | None = None) -> list[int]:
        """Token ids of a rendering (with the generation prompt if it has one)."""
        out: list[int] = []
        for t in rendering.turns:
            out += self._headers[t.role]
            out += self.body(t, overrides)
            out += self._footer
        if rendering.generation_prompt:
            out += self._headers["assistant"]
        return out

    def encode_text(self, text: str) -> list[int]:
        return list(self._enc(text))
