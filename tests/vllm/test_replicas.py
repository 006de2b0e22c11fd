"""``autogen-memento serve --replicas 2``: two plugin replicas behind vllm-router with affinity on ``X-Session-ID``.

One ``serve --replicas 2`` process (the shipped tiny memento model, loopback ports) serves the module. Four
``AssistantAgent``s play fact-tracker episodes at once through the router (``MementoChatCompletionClient`` +
``VLLMBackend``); each replica's own session listing shows where every session lives.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vllm

AGENTS = 4
PAGES = 4  # five model calls per agent
MAX_LEN = 2048
PAGE_TOKENS = 32
CALL_ID = re.compile(r"call_[0-9a-f]+")
KV_PAGES = 256  # 4 layers x (K, V) x 2 heads x 32 dims x float32 = 2 KiB a token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_pair() -> int:
    """A port ``p`` with ``p + 1`` free too."""
    from autogen_ext_memento.cli._replica_plan import free_port_range

    return free_port_range(2)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Cluster:
    proc: subprocess.Popen[bytes]
    log_dir: Path
    router: str
    router_port: int
    replicas: list[dict[str, Any]]  # index, url, pid

    def out(self) -> str:
        return (self.log_dir / "serve.out").read_text()

    def listing(self, url: str) -> dict[str, dict[str, Any]]:
        """The sessions one replica holds (its own API, not through the router)."""
        return {s["session_id"]: s for s in _get(url + "/v1/memento/sessions")["sessions"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pytest.importorskip("vllm")
    pytest.importorskip("vllm_router")
    from autogen_ext_memento import tiny_model_path

    log_dir = tmp_path_factory.mktemp("replicas")
    router_port, first = _free_port(), _free_pair()
    cmd = [
        sys.executable, "-m", "autogen_ext_memento", "serve", "--replicas", "2", "--router-port", str(router_port),
        "--log-dir", str(log_dir), "--device", "cpu", str(tiny_model_path()),
        "--port", str(first), "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_LEN),
        "--block-size", str(PAGE_TOKENS), "--max-num-seqs", "8", "--seed", "0",
        "--kv-cache-memory-bytes", str(KV_PAGES * PAGE_TOKENS * 2048),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with open(log_dir / "serve.out", "wb") as fh:
        # In pytest's process group: a `timeout` that stops the test run stops serve too, which stops its children.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    state = log_dir / "processes.json"
    deadline = time.monotonic() + 900  # two engine start-ups on a loaded 2-core machine
    try:
        while not (state.exists() and "router ready" in (log_dir / "serve.out").read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                logs = "".join(p.read_text()[-3000:] for p in sorted(log_dir.glob("*.log")))
                raise RuntimeError(f"serve --replicas did not start:\n{(log_dir / 'serve.out').read_text()}\n{logs}")
            time.sleep(1)
        info = json.loads(state.read_text())
        yield Cluster(proc, log_dir, info["router"]["url"], router_port, info["replicas"])
    finally:
        pids: list[int] = []  # the process groups serve started
        if state.exists():
            info = json.loads(state.read_text())
            pids += [info["router"]["pid"], *(r["pid"] for r in info["replicas"])]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:  # whatever a failed test left behind
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class AgentRun:
    session: str
    transcript: list[str]
    calls: int
    prompt_sizes: list[int]  # logical prompt tokens of each model call
    prefilled: list[int]  # tokens the server prefilled for each call
    rebuilds: int = 0  # the backend's count for the session
    logical: int = 0  # logical tokens the session holds (the client's count)


def _run_team(base_url: str, prefix: str, on_read: Callable[[int, int], None] | None = None) -> list[AgentRun]:
    """Four AssistantAgents, one fact-tracker episode each, all at once; ``on_read(agent, calls so far)``."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.tools import FunctionTool

    from autogen_ext_memento import MementoChatCompletionClient, tiny_model_path
    from autogen_ext_memento.backends import VLLMBackend
    from autogen_ext_memento.tasks import (
        SYSTEM_PROMPT,
        TOOL_DESCRIPTION,
        TOOL_NAME,
        FactTrackerConfig,
        FactTrackerEnv,
        sample_episodes,
    )

    backend = VLLMBackend(base_url, str(tiny_model_path()))
    episodes = sample_episodes(AGENTS, seed=7, config=FactTrackerConfig(min_pages=PAGES, max_pages=PAGES))
    generate = backend.generate
    sizes: dict[str, list[int]] = {}
    prefilled: dict[str, list[int]] = {}

    def recording(session_id: str, prompt_ids: Any, params: Any, **kw: Any) -> Any:
        out = generate(session_id, prompt_ids, params, **kw)
        sizes.setdefault(session_id, []).append(len(prompt_ids))
        prefilled.setdefault(session_id, []).append(out.prompt_tokens)
        return out

    backend.generate = recording  # type: ignore[method-assign]

    async def agent(i: int) -> AgentRun:
        sid = f"{prefix}-{i}"
        env = FactTrackerEnv(episodes[i])

        def read(cursor: int) -> str:
            if on_read is not None:
                on_read(i, len(env.calls))
            return env.read(cursor)

        client = MementoChatCompletionClient(backend, session_id=sid, max_new_tokens=64)
        tracker = AssistantAgent(
            "tracker",
            model_client=client,
            tools=[FunctionTool(read, description=TOOL_DESCRIPTION, name=TOOL_NAME)],
            system_message=SYSTEM_PROMPT,
            max_tool_iterations=PAGES + 2,
        )
        result = await tracker.run(task=episodes[i].goal_text)
        transcript = [CALL_ID.sub("call", m.to_text()) for m in result.messages]  # call ids are random
        return AgentRun(sid, transcript, client.call_count, sizes.get(sid, []), prefilled.get(sid, []))

    async def team() -> list[AgentRun]:
        return list(await asyncio.gather(*(agent(i) for i in range(AGENTS))))

    runs = asyncio.run(team())
    for run in runs:
        st = backend.stats(run.session)
        assert st is not None
        run.rebuilds, run.logical = st.rebuilds, st.logical_tokens
    # No backend.close(): it would close the sessions, which the tests read from each replica's listing.
    return runs


@pytest.fixture(scope="module")
def affinity_runs(cluster: Cluster) -> list[AgentRun]:
    return _run_team(cluster.router, "aff")


def test_four_agents_keep_their_replica(cluster: Cluster, affinity_runs: list[AgentRun]) -> None:
    listings = {r["url"]: cluster.listing(r["url"]) for r in cluster.replicas}
    for run in affinity_runs:
        assert run.calls == PAGES + 1 and len(run.transcript) > 2 * PAGES, run
        assert run.rebuilds == 0
        # After its first call a session prefills only what is new: its replica adopted the compacted KV.
        assert all(p < n for p, n in zip(run.prefilled[1:], run.prompt_sizes[1:], strict=True)), run
        holders = [url for url, sessions in listings.items() if run.session in sessions]
        assert len(holders) == 1, (run.session, holders)
        assert listings[holders[0]][run.session]["logical_tokens"] == run.logical
        assert listings[holders[0]][run.session]["kv_tokens"] < run.logical


def test_session_reads_and_closes_reach_the_holding_replica_through_the_router(
    cluster: Cluster, affinity_runs: list[AgentRun]
) -> None:
    """vllm-router proxies GET and DELETE of the session routes too, hashed on X-Session-ID like the turns."""
    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.backends import VLLMBackend

    backend = VLLMBackend(cluster.router, str(tiny_model_path()))  # GET /v1/memento/config through the router
    for run in affinity_runs:
        info = backend.session_info(run.session)
        assert info is not None and info["logical_tokens"] == run.logical, run.session
    gone = affinity_runs[-1].session
    holder = next(r["url"] for r in cluster.replicas if gone in cluster.listing(r["url"]))
    backend.close_session(gone)
    assert gone not in cluster.listing(holder) and backend.session_info(gone) is None


def test_a_salted_tenant_reads_and_closes_its_session_through_the_router(cluster: Cluster) -> None:
    """The salt travels in POST bodies (the router drops query strings): the tenant finds and closes its session."""
    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.backends import SamplingParams, VLLMBackend

    tenant = VLLMBackend(cluster.router, str(tiny_model_path()), cache_salt="tenant-behind-router")
    anonymous = VLLMBackend(cluster.router, str(tiny_model_path()))
    prompt = tenant.tokenizer.encode("<|im_start|>user\nalpha 1 bravo 2<|im_end|>\n", add_special_tokens=False)
    tenant.generate("salted", prompt, SamplingParams(max_new_tokens=4))
    info = tenant.session_info("salted")
    assert info is not None and info["logical_tokens"] >= len(prompt)
    assert anonymous.session_info("salted") is None  # the default namespace does not hold it
    tenant.close_session("salted")
    assert tenant.session_info("salted") is None


def test_openai_routes_pass_through_the_router(cluster: Cluster) -> None:
    model = _get(cluster.router + "/v1/models")["data"][0]["id"]
    body = json.dumps({"model": model, "prompt": [5, 40, 41, 42], "max_tokens": 4, "temperature": 0}).encode()
    req = urllib.request.Request(
        cluster.router + "/v1/completions",
        data=body,
        headers={"Content-Type": "application/json", "X-Session-ID": "openai-client"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] == 4


def test_round_robin_control_moves_sessions(cluster: Cluster, affinity_runs: list[AgentRun]) -> None:
    """The check above fails without affinity: a round-robin router in front of the same replicas splits sessions."""
    from autogen_ext_memento.cli._replica_plan import free_port, router_command

    port = free_port()
    cmd = router_command(
        [r["url"] for r in cluster.replicas], port=port, policy="round_robin", metrics_port=free_port()
    )
    with open(cluster.log_dir / "rr-router.log", "wb") as fh:
        rr = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)  # one process, in pytest's group
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
                break
            except OSError:
                assert rr.poll() is None and time.monotonic() < deadline, (
                    cluster.log_dir / "rr-router.log"
                ).read_text()
                time.sleep(0.2)
        runs = _run_team(f"http://127.0.0.1:{port}", "rr")
    finally:
        rr.terminate()
        try:
            rr.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rr.kill()
            rr.wait()
    listings = [cluster.listing(r["url"]) for r in cluster.replicas]
    split = [run.session for run in runs if all(run.session in sessions for sessions in listings)]
    assert split, "round robin left every session on one replica"
    # Rebuilds change nothing the agents see.
    assert [r.transcript for r in runs] == [r.transcript for r in affinity_runs]


def test_killing_a_replica_mid_run_only_rebuilds(cluster: Cluster, affinity_runs: list[AgentRun]) -> None:
    killed: dict[str, Any] = {}

    def kill_holder_of_agent_0(agent: int, reads: int) -> None:
        if agent != 0 or reads != 2 or killed:
            return
        # A session in the middle of a turn is listed nowhere (the running request holds its pages).
        listings = {r["url"]: set(cluster.listing(r["url"])) for r in cluster.replicas}
        for replica in cluster.replicas:
            if "kill-0" in listings[replica["url"]]:
                others = set().union(*(v for k, v in listings.items() if k != replica["url"]))
                killed.update(replica, safe=others)
                os.killpg(replica["pid"], signal.SIGKILL)  # the machine is gone: API server and engine at once
                return
        raise AssertionError("no replica holds kill-0")

    runs = _run_team(cluster.router, "kill", on_read=kill_holder_of_agent_0)
    assert killed, "the replica was not killed"
    # Every agent finished the same episode with the same messages as without the failure: nothing lost.
    assert [r.transcript for r in runs] == [r.transcript for r in affinity_runs]
    assert [r.calls for r in runs] == [PAGES + 1] * AGENTS
    for run in runs:
        # Sessions the survivor held never rebuild; the others (the dead replica's) rebuild at most once.
        assert run.rebuilds == 0 if run.session in killed["safe"] else run.rebuilds <= 1, run
    assert runs[0].rebuilds == 1
    survivor = next(r for r in cluster.replicas if r["url"] != killed["url"])
    held = cluster.listing(survivor["url"])
    for run in runs:
        assert held[run.session]["logical_tokens"] == run.logical
    reported = f"replica {killed['index']} ({killed['url']}) exited"
    deadline = time.monotonic() + 30  # the supervisor polls its children every second
    while reported not in cluster.out() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert reported in cluster.out()
    assert cluster.proc.poll() is None, cluster.out()  # the supervisor keeps serving with one replica


def test_second_serve_on_a_taken_port_says_so_in_one_line(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    from autogen_ext_memento import tiny_model_path
    from autogen_ext_memento.cli import main

    argv = ["serve", "--replicas", "2", "--router-port", str(cluster.router_port), str(tiny_model_path())]
    argv += ["--port", str(_free_pair())]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"port {cluster.router_port} (the router) is taken" in err[0], err


def test_sigterm_stops_the_router_and_every_replica(cluster: Cluster) -> None:
    info = json.loads((cluster.log_dir / "processes.json").read_text())
    groups = [info["router"]["pid"], *(r["pid"] for r in info["replicas"])]
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(timeout=90) == 0, cluster.out()
    assert not [pid for pid in groups if _group_alive(pid)]
    assert "SIGTERM: stopping the router and 2 replicas" in cluster.out()
