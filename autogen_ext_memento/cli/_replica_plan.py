"""What ``autogen-memento serve --replicas N`` starts: the replicas' and the router's command lines and ports (pure).

Every replica is the command ``serve`` runs for one server (:func:`~._serve_command.build_command`) with its own
``--host``/``--port``; :mod:`._replicas` starts and supervises them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._serve_command import build_command, detect_device

__all__ = [
    "DEFAULT_REPLICA_PORT",
    "DEFAULT_ROUTER_PORT",
    "POLICIES",
    "ROUTER_DEFAULTS",
    "Replica",
    "free_port",
    "free_port_range",
    "port_number",
    "replica_commands",
    "router_command",
    "router_installed",
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
