"""Test and benchmark helpers: a scripted logits processor (any model emits given texts, through real forward passes)
and :func:`served`, an ``autogen-memento serve`` in the background for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
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


def _free_port() -> int:
    """A TCP port free on the loopback interface now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(model_dir: Path | str, args: Sequence[str], log: Path, *, memento: Sequence[str] = ()) -> Iterator[str]:
    """``autogen-memento serve --device cpu [memento] MODEL`` on a free loopback port, stopped on exit; yields its URL.

    ``memento`` are the memento options (before the model), ``args`` vLLM's (after it).
    """
    import json
    import signal
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    cmd = [sys.executable, "-m", "autogen_ext_memento.cli._serve", "--device", "cpu", *memento, str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *args]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1", HF_HUB_OFFLINE="1")
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # engine start-up on a loaded 2-core machine
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/memento/config", timeout=5) as r:
                    json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + log.read_text()[-4000:]) from None
                time.sleep(2)
        yield url
    finally:
        # The server spawns an engine-core and a worker process: stop the whole process group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            os.killpg(proc.pid, signal.SIGKILL)


def openai_client(base_url: str, model: str = "tiny-memento", **kwargs: Any) -> Any:
    """AutoGen's own ``OpenAIChatCompletionClient`` for a memento server's chat route (greedy, function calling on).

    ``base_url`` is the server root (``http://host:port``); ``kwargs`` go to the client (e.g. ``extra_body``).
    Needs ``autogen-ext[openai]``.
    """
    from autogen_core.models import ModelFamily, ModelInfo
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
    )
    options: dict[str, Any] = {"temperature": 0.0, "max_tokens": 256, "parallel_tool_calls": False, **kwargs}
    return OpenAIChatCompletionClient(
        model=model, base_url=base_url.rstrip("/") + "/v1", api_key="none", model_info=info, **options
    )
