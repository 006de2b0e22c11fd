"""``autogen-memento serve [memento options] MODEL [vLLM args]``: the OpenAI-compatible vLLM server with the plugin.

It runs vLLM's OpenAI API server (what ``vllm serve`` runs) from the current interpreter with the plugin's scheduler and worker classes,
``--no-async-scheduling``, the memento chat template, the rule in ``--additional-config`` and the session API
enabled (``VLLM_PLUGINS=autogen_memento``). Everything after ``MODEL`` is passed to vLLM unchanged.

``--replicas N`` starts N such servers on consecutive ports (``--port`` after MODEL is the first, default 8001) and
``vllm-router`` in front of them (``--router-port``, default 8000) with session affinity on ``X-Session-ID``: see
:mod:`autogen_ext_memento.cli._replicas`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import Any

from ._args import fraction, model_path, non_negative_float, non_negative_int, positive_float, positive_int
from ._replica_plan import DEFAULT_ROUTER_PORT, POLICIES, port_number
from ._serve_command import build_command


def run(args: argparse.Namespace) -> int:
    extra: list[str] = list(getattr(args, "vllm_args", []) or [])
    if getattr(args, "replicas", None) is not None:
        from . import _replicas

        return _replicas.run(args, extra)
    cmd, env = build_command(args, extra)
    if args.dry_run:
        print(shlex.join(cmd))  # paste-able: the JSON and the -c program stay quoted
        return 0
    if hasattr(os, "execve"):
        # Become the server process, so signals (Ctrl-C, SIGTERM from a supervisor) reach vLLM directly and no
        # orphaned server outlives this command.
        os.execve(cmd[0], cmd, env)
    return subprocess.call(cmd, env=env)


def _metrics_port(text: str) -> int:
    """``0`` (any free port) or a port number."""

    return 0 if text.strip() == "0" else port_number(text)


def _keep_last(text: str) -> int:
    """``keep_last_n_blocks``: ``-1`` (never evict) or a non-negative integer."""
    return -1 if text.strip() == "-1" else non_negative_int(text)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="start the OpenAI-compatible vLLM server with the memento plugin",
        description="Start `vllm serve MODEL` with the memento scheduler/worker, chat template and session API. "
        "Unknown arguments go to vLLM (e.g. --max-model-len 8192 --port 8000).",
    )
    p.add_argument("model", type=model_path, help="model directory, hub name (org/name) or 'tiny'")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--keep-last-n-blocks", type=_keep_last, default=0, help="-1 never evicts (default 0)")
    p.add_argument("--mask-delimiters", action="store_true", help="evict the block delimiters too (Phi-4)")
    p.add_argument("--restart-mode", action="store_true", help="ablation: recompute mementos without their block")
    p.add_argument("--max-block-tokens", type=positive_int, default=None)
    p.add_argument("--session-ttl", type=positive_float, default=600.0, help="idle seconds before a session is dropped")
    p.add_argument("--session-fraction", type=fraction, default=0.5, help="share of the KV pool sessions may hold")
    p.add_argument(
        "--swap-space",
        type=non_negative_float,
        default=4.0,
        help="GiB of host memory keeping preempted compacted requests' KV (0: recompute them; default 4)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the vLLM command instead of running it")

    g = p.add_argument_group(
        "replicas",
        "--replicas N: N servers on consecutive ports (--port after MODEL is the first, default 8001) behind "
        "vllm-router (pip install 'autogen-ext-memento[router]') with session affinity on X-Session-ID",
    )
    g.add_argument("--replicas", type=positive_int, default=None, help="number of servers behind the router")
    g.add_argument("--router-port", type=port_number, default=DEFAULT_ROUTER_PORT, help="the router's port (8000)")
    g.add_argument("--router-host", default="127.0.0.1", help="the router's bind address (127.0.0.1)")
    g.add_argument(
        "--router-policy",
        choices=POLICIES,
        default="consistent_hash",
        help="consistent_hash keeps each session on its replica; the others rebuild sessions that move",
    )
    g.add_argument(
        "--router-metrics-port",
        type=_metrics_port,
        default=0,
        help="vllm-router's Prometheus port (default 0: any free port)",
    )
    g.add_argument(
        "--router-args",
        type=shlex.split,
        default=[],
        help="more vllm-router arguments, one string: --router-args='--log-level info'",
    )
    g.add_argument("--log-dir", default=None, help="write replica-I.log, router.log and processes.json here")
    g.add_argument(
        "--startup-timeout", type=positive_float, default=900.0, help="seconds the replicas may take to start (900)"
    )
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="arguments after MODEL go to `vllm serve`")
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m autogen_ext_memento.cli._serve [options] MODEL [vLLM args]``."""
    parser = argparse.ArgumentParser(prog="autogen-memento")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
