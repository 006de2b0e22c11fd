"""Structured log events emitted on AutoGen's event logger (``autogen_core.EVENT_LOGGER_NAME``)."""

from __future__ import annotations

import json
from typing import Any


class _Event:
    """A JSON-serialisable event; ``str(event)`` is one JSON object, as AutoGen's own events are."""

    kind = "memento"

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __str__(self) -> str:
        return json.dumps({"type": type(self).__name__, **self.kwargs}, default=str)


class MementoCallEvent(_Event):
    """One model call through the memento client: session, cost of the call and the session's live-KV stats."""


class MementoSessionRebuildEvent(_Event):
    """The message history no longer extended the session's tokens, so the session was rebuilt from text."""


class MementoMalformedOutputEvent(_Event):
    """The model produced malformed output (bad tool-call JSON, an unterminated memento) and it was repaired."""
