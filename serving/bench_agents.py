"""The agent workload at a fixed KV pool: concurrent fact-tracker agents, memento vs. full attention, one server, one run.

Each of ``--agents`` AssistantAgents plays ``--episodes`` fact-tracker episodes in a row (a tool call per page; the
tool answers after ``--tool-latency`` seconds, as a real tool would), all agents at once, against one
``autogen-memento serve`` of the shipped memento model with a KV pool of ``--pool-blocks`` pages. Modes (same
episodes, same rendering, one after another on the same server):

* ``session``: :class:`~autogen_ext_memento.MementoChatCompletionClient` over the session API (``VLLMBackend``);
* ``openai``: AutoGen's own ``OpenAIChatCompletionClient`` (stateless) against the memento chat route;
* ``openai-full``: the same client and route with eviction off (``vllm_xargs.memento = {"keep_last_n_blocks": -1}``):
  the vanilla baseline, full attention on the same tokens, sessions still reused (like prefix caching).

Per mode: episodes solved, completion tokens/s, p50/p95 model-call latency, prefill tokens per call, peak sessions
held and pool pages in use (polled), preemptions (the server's ``vllm:num_preemptions_total``); ``--plot`` draws pool
occupancy over time. Usage::

    python serving/bench_agents.py --agents 8 --episodes 2 --tool-latency 0.05 --pool-blocks 48 [--plot occ.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

MODES = ("session", "openai", "openai-full")
# Bytes of one 32-token KV page of the shipped tiny model: tokens × layers × (K, V) × kv heads × head dim × fp32.
PAGE_BYTES = 32 * 4 * 2 * 2 * 32 * 4


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=8, help="concurrent agents")
    p.add_argument("--episodes", type=int, default=2, help="episodes each agent plays in a row")
    p.add_argument("--tool-latency", type=float, default=0.05, help="seconds each tool call takes")
    p.add_argument("--pool-blocks", type=int, default=48, help="KV pool size in 32-token pages")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--plot", type=Path, default=None, help="write the pool-occupancy plot here (PNG)")
    p.add_argument("--url", default=None, help="use a running server instead of starting one")
    a = p.parse_args(argv)
    modes = a.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad or a.agents < 1 or a.episodes < 1 or a.pool_blocks < 32 or a.tool_latency < 0:
        p.error(
            f"bad arguments: modes {bad or 'ok'}, agents/episodes >= 1, pool-blocks >= 32 (one 1024-token episode), tool-latency >= 0"
        )
    a.modes = modes
    return a


def _client(mode: str, url: str, backend: Any, sid: str) -> Any:
    from autogen_ext_memento import MementoChatCompletionClient
    from autogen_ext_memento.testing import openai_client

    if mode == "session":
        return MementoChatCompletionClient(backend, session_id=sid)
    if mode == "openai-full":
        return openai_client(url, extra_body={"vllm_xargs": {"memento": {"keep_last_n_blocks": -1}}})
    return openai_client(url)


def _timed(client: Any, latencies: list[float]) -> Any:
    """The client with its ``create`` timed (the agent calls ``create`` once per model turn)."""
    create = client.create

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await create(*args, **kwargs)
        finally:
            latencies.append(time.perf_counter() - t0)

    client.create = timed
    return client


async def _agent(mode: str, url: str, backend: Any, episodes: list[Any], latency: float, out: dict[str, Any]) -> None:
    from autogen_ext_memento.tasks import FactTrackerEnv, play_tracker, score_answer

    for k, episode in enumerate(episodes):
        tool = _slow_tool(FactTrackerEnv(episode), latency)
        client = _timed(_client(mode, url, backend, f"{mode}-{id(episodes)}-{k}"), out["latencies"])
        answer = await play_tracker(episode, client, tool=tool)
        out["solved"] += int(score_answer(episode, answer)[0])
        usage = client.total_usage()  # prefill (new tokens only) and completion tokens, both kinds of client
        out["prefill"] += usage.prompt_tokens
        out["completion"] += usage.completion_tokens
        await client.close()  # the memento client releases only its own sessions of the shared backend


def _slow_tool(env: Any, latency: float) -> Any:
    """The episode's page reader, answering after ``latency`` seconds."""
    from autogen_core.tools import FunctionTool

    async def read(cursor: int) -> str:
        await asyncio.sleep(latency)
        return str(env.read(cursor))

    base = env.tool()
    return FunctionTool(read, description=base.description, name=base.name)


def _preemptions(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        float(m.group(1)) for m in re.finditer(r"^vllm:num_preemptions(?:_total)?\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    )


def _poller(url: str, trace: list[tuple[float, int, int]], stop: threading.Event) -> None:
    t0 = time.perf_counter()
    with httpx.Client(timeout=10) as http:
        while not stop.wait(0.1):
            try:
                mem = http.get(url + "/v1/memento/sessions").json()["memory"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            used = int(mem["num_blocks"]) - int(mem["free_blocks"])
            trace.append((time.perf_counter() - t0, used, int(mem["sessions"])))


def run_mode(mode: str, url: str, a: argparse.Namespace) -> dict[str, Any]:
    """One mode of the workload; its summary (and the occupancy trace under ``trace``)."""
    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.backends import VLLMBackend
    from autogen_ext_memento.tasks import sample_episodes

    backend = VLLMBackend(url, tiny_model_path()) if mode == "session" else None
    episodes = sample_episodes(a.agents * a.episodes, a.seed)
    per_agent = [episodes[i :: a.agents] for i in range(a.agents)]
    out: dict[str, Any] = {"latencies": [], "solved": 0, "prefill": 0, "completion": 0}
    trace: list[tuple[float, int, int]] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poller, args=(url, trace, stop), daemon=True)
    pre0 = _preemptions(url)
    poller.start()
    t0 = time.perf_counter()

    async def go() -> None:
        # The memento client runs each call in the loop's executor: give every agent a thread.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=a.agents + 4))
        await asyncio.gather(*(_agent(mode, url, backend, eps, a.tool_latency, out) for eps in per_agent))

    asyncio.run(go())
    wall = time.perf_counter() - t0
    stop.set()
    poller.join()
    lat = sorted(out["latencies"])
    calls = len(lat)
    return {
        "mode": mode,
        "episodes": len(episodes),
        "solved": out["solved"],
        "wall_s": round(wall, 2),
        "completion_tok_per_s": round(out["completion"] / wall, 1),
        "calls": calls,
        "p50_call_s": round(statistics.median(lat), 3) if lat else None,
        "p95_call_s": round(lat[min(calls - 1, int(0.95 * calls))], 3) if lat else None,
        "prefill_per_call": round(out["prefill"] / max(1, calls), 1),
        "peak_pages": max((u for _, u, _ in trace), default=0),
        "mean_pages": round(statistics.fmean(u for _, u, _ in trace), 1) if trace else 0,
        "peak_sessions": max((s for _, _, s in trace), default=0),
        "preemptions": int(_preemptions(url) - pre0),
        "trace": trace,
    }


def _plot(results: list[dict[str, Any]], pool: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        ax.plot([t for t, _, _ in r["trace"]], [u for _, u, _ in r["trace"]], label=r["mode"])
    ax.axhline(pool, color="grey", ls="--", lw=1, label="pool")
    ax.set_xlabel("seconds")
    ax.set_ylabel("KV pages in use")
    ax.set_title("KV pool occupancy, concurrent fact-tracker agents")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _reset(url: str) -> None:
    """Close every session of the default namespace, so each mode starts on an empty pool."""
    with httpx.Client(timeout=30) as http:
        for s in http.get(url + "/v1/memento/sessions").json()["sessions"]:
            http.delete(f"{url}/v1/memento/sessions/{s['session_id']}")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    # A SIGTERM (e.g. from `timeout`) must still stop the server this run started: exit through the finally blocks.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    with _server(a) as url:
        # Warm-up (not reported): the first requests of a fresh server pay one-off costs.
        warm = argparse.Namespace(**{**vars(a), "agents": 2, "episodes": 1, "seed": a.seed + 1})
        run_mode("openai", url, warm)
        for mode in a.modes:
            _reset(url)
            r = run_mode(mode, url, a)
            results.append(r)
            sys.stdout.write(json.dumps({k: v for k, v in r.items() if k != "trace"}) + "\n")
            sys.stdout.flush()
    if a.plot is not None:
        _plot(results, a.pool_blocks, a.plot)
        sys.stdout.write(f"plot: {a.plot}\n")
    return 0


def _server(a: argparse.Namespace) -> Any:
    import contextlib

    if a.url:
        return contextlib.nullcontext(a.url.rstrip("/"))
    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.testing import served

    args = [
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", "--block-size", "32",
        "--max-num-seqs", str(max(4, a.agents)), "--kv-cache-memory-bytes", str(a.pool_blocks * PAGE_BYTES),
        "--seed", "0", "--served-model-name", "tiny-memento",
    ]  # fmt: skip
    log = Path(tempfile.mkdtemp(prefix="bench-agents-")) / "serve.log"
    return served(tiny_model_path(), args, log)


if __name__ == "__main__":
    raise SystemExit(main())
