"""A generated turn read back as AutoGen content, and what one client call cost (with the events it logs)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal

from autogen_core import EVENT_LOGGER_NAME, FunctionCall
from autogen_core.models import FinishReasons
from autogen_core.tools import Tool
from pydantic import BaseModel, ValidationError

from .._events import MementoCallEvent, MementoMalformedOutputEvent, MementoSessionRebuildEvent
from ..backends import GenerationResult, SessionStats
from ..chat_format import parse_completion, to_function_calls

event_logger = logging.getLogger(EVENT_LOGGER_NAME)

ToolChoice = Tool | Literal["auto", "required", "none"]


@dataclass
class CallCost:
    """Tokens prefilled and sampled, evictions and whether the session was rebuilt, over a call's generations."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    evictions: int = 0
    rebuilt: bool = False

    def add(self, res: GenerationResult) -> None:
        """Count one generation."""
        self.prompt_tokens += res.prompt_tokens
        self.completion_tokens += len(res.token_ids)
        self.evictions += res.evictions
        self.rebuilt |= res.rebuilt


@dataclass(frozen=True)
class ReadCompletion:
    """A completion as a ``CreateResult`` carries it: content, finish reason and the thought after any closure."""

    content: str | list[FunctionCall]
    finish: FinishReasons
    thought: str | None


def read_completion(text: str, finish_reason: str, tool_choice: ToolChoice, session_id: str) -> ReadCompletion:
    """Parse a generated body; tool calls are kept as calls unless ``tool_choice`` is ``"none"`` (then as text).

    Malformed tool calls are logged as a :class:`~autogen_ext_memento.MementoMalformedOutputEvent`.
    """
    parsed = parse_completion(text)
    if parsed.malformed:
        event_logger.info(MementoMalformedOutputEvent(session_id=session_id, problem=parsed.malformed))
    if parsed.tool_calls and tool_choice != "none":
        return ReadCompletion(to_function_calls(parsed), "function_calls", parsed.thought)
    content = text if parsed.tool_calls else parsed.content
    thought = None if parsed.tool_calls else parsed.thought
    return ReadCompletion(content, "length" if finish_reason == "length" else "stop", thought)


def validate_json(content: str, json_output: bool | type[BaseModel]) -> None:
    """Raise :class:`ValueError` when ``content`` is not the JSON (or the model) that ``json_output`` asked for."""
    try:
        if isinstance(json_output, type) and issubclass(json_output, BaseModel):
            json_output.model_validate_json(content)
        else:
            json.loads(content)
    except (json.JSONDecodeError, ValidationError) as e:
        what = "JSON" if json_output is True else f"JSON for {getattr(json_output, '__name__', json_output)}"
        raise ValueError(f"json_output requested but the model did not return valid {what}: {e}") from e


def log_call(session_id: str, cost: CallCost, *, closure: bool, stats: SessionStats | None) -> None:
    """Log the call's :class:`~autogen_ext_memento.MementoCallEvent` (after a rebuild event if it rebuilt)."""
    if cost.rebuilt:
        event_logger.info(
            MementoSessionRebuildEvent(
                session_id=session_id,
                reason="history does not extend the session's tokens",
                prompt_tokens=cost.prompt_tokens,
            )
        )
    event_logger.info(
        MementoCallEvent(
            session_id=session_id,
            prompt_tokens=cost.prompt_tokens,
            completion_tokens=cost.completion_tokens,
            evictions=cost.evictions,
            closure=closure,
            rebuilt=cost.rebuilt,
            stats=stats.summary() if stats else None,
        )
    )
