"""``autogen-memento serve --replicas N``: N plugin replicas on consecutive ports and ``vllm-router`` in front.

Every replica is the command ``serve`` runs for one server (:func:`~._serve_command.build_command`)
with its own ``--host``/``--port``; the router hashes the ``X-Session-ID`` header that
:class:`~autogen_ext_memento.backends.VLLMBackend` puts on every session request (``--router-policy
consistent_hash``, the default), so all turns of a session reach the replica that holds its compacted KV.

The command lines are built by pure functions (:mod:`._replica_plan`) so they are tested without vLLM;
:func:`run` checks the ports, starts the replicas (each in its own process group), waits until each answers ``GET /v1/memento/config``, starts the router, and supervises: a replica that exits is reported and the
router's circuit breaker moves its sessions (each rebuilds once on another replica); the router exiting, or every
replica, stops everything. Ctrl-C or SIGTERM stops every child (SIGTERM to each process group, SIGKILL after
``STOP_GRACE_S``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from ._replica_plan import (
    POLL_S,
    READY_PATH,
    ROUTER_DIST,
    STOP_GRACE_S,
    Replica,
    _check_ports,
    _distinct_ports,
    free_port,
    replica_commands,
    router_command,
    router_installed,
)


class _Stop(Exception):
    """A stop signal arrived (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=5) as r:
            return int(r.status) == 200
    except OSError:
        return False


def _say(text: str) -> None:
    print(f"autogen-memento serve: {text}", flush=True)


class _Children:
    """The started processes, each leading its own process group (its engine-core and workers included)."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            out = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(out)
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509 - no threads
        )
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        """SIGTERM to every group, then SIGKILL to those still there after :data:`STOP_GRACE_S`."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            # The group may outlive its leader (an engine-core process finishing its shutdown).
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for fh in self._logs:
            fh.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when serve itself dies (even by SIGKILL), so no replica is orphaned."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_ready(children: _Children, replicas: Sequence[Replica], timeout_s: float) -> None:
    pending = list(replicas)
    deadline = time.monotonic() + timeout_s
    while pending:
        for r in list(pending):
            proc = children.procs[f"replica-{r.index}"]
            if proc.poll() is not None:
                where = f"; see {children.log_dir / f'replica-{r.index}.log'}" if children.log_dir else ""
                raise SystemExit(f"replica {r.index} ({r.url}) exited with status {proc.returncode} at start-up{where}")
            if _ready(r.url):
                _say(f"replica {r.index} ready at {r.url} (pid {proc.pid})")
                pending.remove(r)
        if pending and time.monotonic() > deadline:
            raise SystemExit(f"replica {pending[0].index} ({pending[0].url}) not ready after {timeout_s:.0f} s")
        if pending:
            time.sleep(POLL_S)


def _wait_router(children: _Children, url: str, timeout_s: float) -> None:
    proc = children.procs["router"]
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            where = f"; see {children.log_dir / 'router.log'}" if children.log_dir else ""
            raise SystemExit(f"vllm-router exited with status {proc.returncode} at start-up{where}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if int(r.status) == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"vllm-router at {url} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def _supervise(children: _Children, replicas: Sequence[Replica]) -> int:
    """Wait for the router or every replica to exit (reported on stdout); the exit status."""
    down: set[int] = set()
    router = children.procs["router"]
    while True:
        if router.poll() is not None:
            _say(f"vllm-router exited with status {router.returncode}: stopping the replicas")
            return 1
        for r in replicas:
            proc = children.procs[f"replica-{r.index}"]
            if r.index not in down and proc.poll() is not None:
                down.add(r.index)
                _say(
                    f"replica {r.index} ({r.url}) exited with status {proc.returncode}; "
                    "the router moves its sessions to the other replicas (each rebuilds once)"
                )
        if len(down) == len(replicas):
            _say("every replica has exited: stopping the router")
            return 1
        time.sleep(POLL_S)


def run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """Start the replicas and the router, supervise them, stop them all on exit, Ctrl-C or SIGTERM."""
    replicas = replica_commands(args, extra)
    router_host = str(args.router_host)
    router_url = f"http://{'127.0.0.1' if router_host in ('0.0.0.0', '::') else router_host}:{args.router_port}"
    router = router_command(
        [r.url for r in replicas],
        host=router_host,
        port=int(args.router_port),
        policy=str(args.router_policy),
        metrics_port=int(args.router_metrics_port) or free_port(router_host),
        extra=list(args.router_args or []),
    )
    ports = (
        [(router_host, int(args.router_port), "the router")]
        + [(router_host, int(args.router_metrics_port), "the router's metrics")] * bool(args.router_metrics_port)
        + [(r.host, r.port, f"replica {r.index}") for r in replicas]
    )
    _distinct_ports(ports)
    if args.dry_run:
        for r in replicas:
            gpus = r.env.get("CUDA_VISIBLE_DEVICES")
            prefix = f"CUDA_VISIBLE_DEVICES={gpus} " if gpus is not None and "CUDA_VISIBLE_DEVICES" in r.env else ""
            print(prefix + shlex.join(r.cmd))
        print(shlex.join(router))
        return 0
    if not router_installed():
        raise SystemExit(
            f"{ROUTER_DIST} is not installed in {sys.prefix}: pip install 'autogen-ext-memento[router]' "
            "(into the environment that has vLLM)"
        )
    _check_ports(ports)
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    children = _Children(log_dir)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for r in replicas:
            children.start(f"replica-{r.index}", r.cmd, r.env)
        _wait_ready(children, replicas, float(args.startup_timeout))
        # Its Rust core logs every routing decision at INFO whatever --log-level says; RUST_LOG chooses.
        children.start("router", router, {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        _wait_router(children, router_url, 60.0)
        if log_dir is not None:
            state = {
                "router": {"url": router_url, "pid": children.procs["router"].pid, "policy": args.router_policy},
                "replicas": [
                    {"index": r.index, "url": r.url, "pid": children.procs[f"replica-{r.index}"].pid} for r in replicas
                ],
            }
            (log_dir / "processes.json").write_text(json.dumps(state, indent=1))
        _say(
            f"router ready at {router_url} (policy {args.router_policy}) in front of "
            + ", ".join(r.url for r in replicas)
        )
        status = _supervise(children, replicas)
    except _Stop as stop:
        _say(f"{stop}: stopping the router and {len(replicas)} replicas")
        status = 0 if stop.signum == signal.SIGTERM else 130
    finally:
        # A second Ctrl-C or SIGTERM during the shutdown must not leave children behind.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            children.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return status
