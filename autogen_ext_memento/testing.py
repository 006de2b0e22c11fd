"""Test helpers: a scripted logits processor that makes any model emit given texts, through real forward passes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any


class ScriptedCompletions:
    """A ``TransformersBackend`` logits processor that forces each generation to produce the next scripted text.

    The model still runs every forward pass (so KV, eviction and stats are real); only the sampled token is forced.
    Each script item is the exact text of one generation *including* its stop token (e.g. ``"...<|im_end|>"`` or
    a memento ending in ``"<|summary_end|>"``). When the script is exhausted the processor stops forcing.

    Example:

    .. code-block:: python

        backend.logits_processor = ScriptedCompletions(backend.tokenizer, ["hello<|im_end|>"])
    """

    def __init__(self, tokenizer: Any, texts: Iterable[str] = ()) -> None:
        self._tok = tokenizer
        self._queue: deque[list[int]] = deque()
        self._current: list[int] | None = None
        self.extend(texts)

    def extend(self, texts: Iterable[str]) -> None:
        """Append texts to the script."""
        for t in texts:
            self._queue.append(list(self._tok.encode(t, add_special_tokens=False)))

    @property
    def remaining(self) -> int:
        """Script items not started yet."""
        return len(self._queue)

    def __call__(self, session_id: str, generated: list[int], logits: Any) -> Any:
        if not generated:
            self._current = self._queue.popleft() if self._queue else None
        cur = self._current
        if cur is None or len(generated) >= len(cur):
            return logits
        forced = logits.new_full(logits.shape, float("-inf"))
        forced[cur[len(generated)]] = 0.0
        return forced
