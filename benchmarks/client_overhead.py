"""The client's own overhead per ``create()``, beside the backend's ``generate`` time on the same calls.

An agent's fact-tracker trajectory of 99 pages is played through one session of the shipped memento twin, call by
call as ``AssistantAgent`` would: each call's history is the previous history plus the turn the client returned and
the next tool result, and the model is forced (``ScriptedCompletions``) to write the reference memento and tool call,
so the session is extended, never rebuilt. Overhead = wall time of ``create()`` minus the time spent inside
``backend.generate`` (rendering, tokenizing, parsing, bookkeeping, the thread hop); reported as the median of the
``--samples`` calls ending at about 11, 41 and 201 messages.

Run: ``.venv/bin/python benchmarks/client_overhead.py`` (``--samples 5`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from autogen_core.models import AssistantMessage

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend, tiny_model_path
from autogen_ext_memento.chat_format import assistant_body, memento_in
from autogen_ext_memento.grammar import SUMMARY_END
from autogen_ext_memento.tasks import Episode, FactTrackerConfig, episode_messages, sample_episodes, tool_schema_tool
from autogen_ext_memento.testing import ScriptedCompletions


class _TimedBackend:
    """Wraps ``backend.generate`` to add up the time spent inside it."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.backend = backend
        self.seconds = 0.0
        self._generate = backend.generate
        backend.generate = self._timed  # type: ignore[method-assign]

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._generate(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _episode(pages: int) -> Episode:
    return sample_episodes(1, seed=0, config=FactTrackerConfig().with_pages(pages))[0]


def _script(episode: Episode) -> list[str]:
    """What the model must write at each call: the closure memento (after a page), then the turn."""
    out: list[str] = []
    for i, msg in enumerate(episode_messages(episode)):
        if isinstance(msg, AssistantMessage):
            if i > 2:
                out.append(f"{memento_in(msg.thought or '')}{SUMMARY_END}")
            out.append(assistant_body(None, msg.content) + "<|im_end|>")
    return out


async def _play(
    client: MementoChatCompletionClient, timer: _TimedBackend, episode: Episode
) -> list[tuple[int, float, float]]:
    """(messages, overhead ms, generate ms) of every call of the trajectory."""
    tools = [tool_schema_tool()]
    reference = episode_messages(episode)
    history = reference[:2]
    calls: list[tuple[int, float, float]] = []
    for k in range(2, len(reference)):
        if not isinstance(reference[k], AssistantMessage):
            history.append(reference[k])
            continue
        timer.seconds = 0.0
        t0 = time.perf_counter()
        res = await client.create(history, tools=tools)
        wall = time.perf_counter() - t0
        calls.append((len(history), 1000 * (wall - timer.seconds), 1000 * timer.seconds))
        got = AssistantMessage(content=res.content, thought=res.thought, source="tracker")
        if assistant_body(None, got.content) != assistant_body(None, reference[k].content):  # type: ignore[union-attr]
            raise SystemExit(f"call {len(calls)}: the model did not follow the script: {res!r} {reference[k]!r}")
        history.append(reference[k])
    return calls


async def main() -> None:
    """Print the client's overhead beside the backend's generate time at about 11, 41 and 201 messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--pages", type=int, default=99, help="pages of the trajectory (2 + 2 * pages + 1 messages)")
    args = parser.parse_args()
    backend = TransformersBackend(str(tiny_model_path()))
    timer = _TimedBackend(backend)
    client = MementoChatCompletionClient(backend, max_new_tokens=64, max_memento_tokens=64, session_id="agent")
    episode = _episode(args.pages)
    backend.logits_processor = ScriptedCompletions(backend.tokenizer, _script(episode))
    calls = await _play(client, timer, episode)
    stats = client.session_stats("agent")
    assert stats is not None
    print(f"{len(calls)} calls, {stats.evictions} evictions, {stats.rebuilds} rebuilds")
    print(f"{'messages':>8} {'client overhead ms (median)':>28} {'backend.generate ms':>20}")
    for n in (11, 41, 201):
        window = [c for c in calls if c[0] <= n][-args.samples :]
        if not window:
            continue
        over = statistics.median(c[1] for c in window)
        gen = statistics.median(c[2] for c in window)
        print(f"{window[-1][0]:>8} {over:>28.2f} {gen:>20.2f}")


if __name__ == "__main__":
    asyncio.run(main())
