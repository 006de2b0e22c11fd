"""The client's own overhead per ``create()``, beside the backend's ``generate`` time on the same ids.

A fact-tracker trajectory (the shipped tiny model, one new token per call) is replayed through one session, two
messages at a time, as an agent's history grows; at 11, 41 and 201 messages the last ``--samples`` calls are timed.
Overhead = wall time of ``create()`` minus the time spent inside ``backend.generate`` (rendering, tokenizing,
parsing, bookkeeping, the thread hop).

Run: ``.venv/bin/python benchmarks/client_overhead.py`` (``--samples 5`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from autogen_core.models import LLMMessage

from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
from autogen_ext_memento.assets import tiny_model_path
from autogen_ext_memento.tasks import FactTrackerConfig, episode_messages, sample_episodes, tool_schema_tool


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


def _history(pages: int) -> list[LLMMessage]:
    cfg = FactTrackerConfig(min_pages=pages, max_pages=pages)
    episode = sample_episodes(1, seed=0, config=cfg)[0]
    return episode_messages(episode)


async def _measure(
    client: MementoChatCompletionClient,
    timer: _TimedBackend,
    messages: list[LLMMessage],
    n: int,
    samples: int,
    session: str,
) -> tuple[float, float]:
    """Median (overhead, generate) milliseconds of the calls at ``n - 2*(samples-1) .. n`` messages."""
    tools = [tool_schema_tool()]
    over: list[float] = []
    gen: list[float] = []
    start_n = n - 2 * samples
    for k in range(start_n, n + 1, 2):
        timer.seconds = 0.0
        t0 = time.perf_counter()
        await client.create(messages[:k], tools=tools, extra_create_args={"session_id": session})
        wall = time.perf_counter() - t0
        if k > start_n:  # the first call warms the session (a full render)
            over.append(1000 * (wall - timer.seconds))
            gen.append(1000 * timer.seconds)
    return statistics.median(over), statistics.median(gen)


async def main() -> None:
    """Print the client's overhead beside the backend's generate time at 11, 41 and 201 messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    backend = TransformersBackend(str(tiny_model_path()))
    timer = _TimedBackend(backend)
    client = MementoChatCompletionClient(backend, max_new_tokens=1, max_memento_tokens=1)
    messages = _history(99)  # 2 + 2 * 99 + 1 = 201 messages
    print(f"{'messages':>8} {'tokens':>7} {'client overhead ms':>19} {'backend.generate ms':>20}")
    for n in (11, 41, 201):
        over, gen = await _measure(client, timer, messages, n, args.samples, f"s{n}")
        tokens = client.count_tokens(messages[:n], tools=[tool_schema_tool()])
        print(f"{n:>8} {tokens:>7} {over:>19.2f} {gen:>20.2f}")


if __name__ == "__main__":
    asyncio.run(main())
