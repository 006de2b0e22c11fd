"""``autogen-memento serve --replicas N``: N plugin replicas on consecutive ports and ``vllm-router`` in front.

Every replica is the command ``serve`` runs for one server (:func:`autogen_ext_memento.cli._serve.build_command`)
with its own ``--host``/``--port``; the router hashes the ``X-Session-ID`` header that
:class:`~autogen_ext_memento.backends.VLLMBackend` puts on every session request (``--router-policy
consistent_hash``, the default), so all turns of a session reach the replica that holds its compacted KV.

The command lines are built by pure functions (:func:`replica_commands`, :func:`router_command`) so they are
tested without vLLM; :func:`run` checks the ports, starts the replicas (each in its own process group), waits until
each answers ``GET /v1/memento/config``, starts the router, and supervises: a replica that exits is reported and the
router's circuit breaker moves its sessions (each rebuilds once on another replica); the router exiting, or every
replica, stops everything. Ctrl-C or SIGTERM stops every child (SIGTERM to each process group, SIGKILL after
``STOP_GRACE_S``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

__all__ = [
    "POLICIES",
    "ROUTER_DEFAULTS",
    "Replica",
    "port_number",
    "replica_commands",
    "router_command",
    "free_port",
    "free_port_range",
    "router_installed",
    "run",
    "split_address",
]

POLICIES = ("consistent_hash", "round_robin", "cache_aware", "power_of_two", "random")
"""Router policies ``--router-policy`` accepts: ``consistent_hash`` keeps sessions on their replica; the others are for
comparison (every turn routed elsewhere is a full rebuild)."""
DEFAULT_REPLICA_PORT = 8001
DEFAULT_ROUTER_PORT = 8000
ROUTER_DIST = "vllm-router"
ROUTER_MODULE = "vllm_router.launch_router"
# vllm-router's defaults keep a dead replica in the hash ring for 10 failed requests (each a 502 to the client) and
# log every routing decision at INFO. Two failures open its circuit here, so a client's retries (4 tries by default)
# reach a live replica; a later probe closes it again when the replica is back.
ROUTER_DEFAULTS: tuple[str, ...] = (
    "--cb-failure-threshold",
    "2",
    "--cb-timeout-duration-secs",
    "30",
    "--health-check-interval-secs",
    "10",
    "--log-level",
    "warning",
)
OWN_OPTIONS = (
    "--replicas",
    "--router-port",
    "--router-host",
    "--router-policy",
    "--router-metrics-port",
    "--router-args",
    "--log-dir",
    "--startup-timeout",
)
READY_PATH = "/v1/memento/config"
STOP_GRACE_S = 30.0
POLL_S = 1.0


@dataclass
class Replica:
    """One plugin server: its command line, environment and address."""

    index: int
    host: str
    port: int
    cmd: list[str]
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        """Where the router (and a client) reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


def _take_option(args: list[str], names: Sequence[str]) -> tuple[str | None, list[str]]:
    """Remove every ``--name V`` / ``--name=V`` of ``names`` from ``args``; the last value (argparse's rule)."""
    value: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if name in names:
            if eq:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise ValueError(f"{arg} needs a value")
            i += 1
            continue
        rest.append(arg)
        i += 1
    return value, rest


def split_address(extra: Sequence[str]) -> tuple[str, int, list[str]]:
    """``(host, first port, the other vLLM args)`` from the vLLM args after MODEL.

    ``--port P`` there is the first replica's port (default 8001; replica ``i`` listens on ``P + i``); ``--host H``
    is every replica's bind address (default 127.0.0.1: behind a router the replicas need not be reachable from
    elsewhere; vLLM alone binds 0.0.0.0).
    """
    port_text, rest = _take_option(list(extra), ("--port",))
    host, rest = _take_option(rest, ("--host",))
    port = DEFAULT_REPLICA_PORT
    if port_text is not None:
        try:
            port = port_number(port_text)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--port: {e}") from None
    return host or "127.0.0.1", port, rest


def _tensor_parallel(extra: Sequence[str]) -> int:
    value, _ = _take_option(list(extra), ("--tensor-parallel-size", "-tp"))
    try:
        return max(1, int(value)) if value is not None else 1
    except ValueError:
        raise ValueError(f"--tensor-parallel-size: expected an integer, got {value!r}") from None


def _gpu_slices(replicas: int, per_replica: int, env: dict[str, str]) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each replica: consecutive groups of ``per_replica`` visible devices."""
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    need = replicas * per_replica
    if not visible:
        visible = [str(i) for i in range(need)]
    if len(visible) < need:
        raise ValueError(
            f"{replicas} replicas x {per_replica} GPUs need {need} devices; CUDA_VISIBLE_DEVICES has {len(visible)}"
        )
    return [",".join(visible[i * per_replica : (i + 1) * per_replica]) for i in range(replicas)]


def replica_commands(args: argparse.Namespace, extra: Sequence[str]) -> list[Replica]:
    """The N replica servers for ``args`` (pure: nothing is started).

    Each is ``serve``'s single-server command with ``--host H --port P+i``. On ``--device gpu`` each replica gets its
    own ``CUDA_VISIBLE_DEVICES`` group (``--tensor-parallel-size`` devices each, taken in order from the visible ones).
    """
    from ._serve import build_command, detect_device

    misplaced = [a for a in extra if a.partition("=")[0] in OWN_OPTIONS]
    if misplaced:
        raise ValueError(f"{misplaced[0]} is a serve option: put it before MODEL (arguments after MODEL go to vLLM)")
    host, first, rest = split_address(extra)
    n = int(args.replicas)
    if first + n - 1 > 65535:
        raise ValueError(f"--port {first}: {n} replicas need ports up to {first + n - 1} (> 65535)")
    device = args.device if args.device != "auto" else detect_device()
    replicas: list[Replica] = []
    for i in range(n):
        cmd, env = build_command(args, [*rest, "--host", host, "--port", str(first + i)])
        replicas.append(Replica(i, host, first + i, cmd, env))
    if device == "gpu":
        for r, devices in zip(replicas, _gpu_slices(n, _tensor_parallel(rest), dict(os.environ)), strict=True):
            r.env["CUDA_VISIBLE_DEVICES"] = devices
    return replicas


def router_command(
    worker_urls: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_ROUTER_PORT,
    policy: str = "consistent_hash",
    metrics_port: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``vllm-router`` command line in front of ``worker_urls`` (pure: nothing is started).

    ``metrics_port`` is its Prometheus port: vllm-router always opens one (29000 unless told, and 0 is refused), so
    :func:`run` picks a free one unless ``--router-metrics-port`` names it; two routers on one host then do not
    collide. ``extra`` goes last, so it overrides :data:`ROUTER_DEFAULTS`.
    """
    if policy not in POLICIES:
        raise ValueError(f"router policy {policy!r}: expected one of {', '.join(POLICIES)}")
    if not worker_urls:
        raise ValueError("the router needs at least one replica")
    return [
        sys.executable,
        "-m",
        ROUTER_MODULE,
        "--worker-urls",
        *worker_urls,
        "--policy",
        policy,
        "--host",
        host,
        "--port",
        str(port),
        "--prometheus-port",
        str(metrics_port),
        *ROUTER_DEFAULTS,
        *extra,
    ]


def router_installed() -> bool:
    """Whether ``vllm-router`` (with its compiled router) imports in this interpreter's environment."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("vllm_router", "vllm_router_rs"))
    except (ImportError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_range(count: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    """The first of ``count`` consecutive ports the OS reports free on ``host`` now."""
    for _ in range(tries):
        first = free_port(host)
        if first + count - 1 <= 65535 and not any(_port_taken(host, first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _distinct_ports(wanted: Sequence[tuple[str, int, str]]) -> None:
    seen: dict[int, str] = {}
    for _, port, what in wanted:
        if port in seen:
            raise ValueError(f"{seen[port]} and {what} both want port {port}: choose --router-port and --port apart")
        seen[port] = what


def _check_ports(wanted: Sequence[tuple[str, int, str]]) -> None:
    for host, port, what in wanted:
        if _port_taken(host, port):
            raise SystemExit(f"port {port} ({what}) is taken on {host}: stop what uses it or choose another port")


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
