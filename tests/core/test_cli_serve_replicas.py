"""``autogen-memento serve --replicas N``: the replica and router command lines, and its one-line errors (no vLLM)."""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autogen_ext_memento.cli import _replica_plan, _replicas, main
from autogen_ext_memento.cli._main import build_parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def value(cmd: list[str], flag: str) -> str:
    assert cmd.count(flag) == 1, (flag, cmd)
    return cmd[cmd.index(flag) + 1]


def test_replicas_listen_on_consecutive_ports_with_the_plugin_and_the_vllm_args() -> None:
    args = parse("--replicas", "3", "--device", "cpu", "tiny", "--port", "9101", "--dtype", "float32", "--seed", "0")
    replicas = _replica_plan.replica_commands(args, args.vllm_args)
    assert [r.port for r in replicas] == [9101, 9102, 9103]
    assert [r.url for r in replicas] == ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9103"]
    for r in replicas:
        assert value(r.cmd, "--port") == str(r.port) and value(r.cmd, "--host") == "127.0.0.1"
        assert value(r.cmd, "--dtype") == "float32" and value(r.cmd, "--seed") == "0"
        assert value(r.cmd, "--worker-cls") == "autogen_memento_vllm.worker.MementoCPUWorker"
        assert "--no-async-scheduling" in r.cmd and "autogen_memento" in r.env["VLLM_PLUGINS"].split(",")
        assert "CUDA_VISIBLE_DEVICES" not in r.env or r.env["CUDA_VISIBLE_DEVICES"] == ""


def test_default_ports_and_host_forms() -> None:
    args = parse("--replicas", "2", "--device", "cpu", "tiny", "--host=0.0.0.0")
    replicas = _replica_plan.replica_commands(args, args.vllm_args)
    assert [r.port for r in replicas] == [_replica_plan.DEFAULT_REPLICA_PORT, _replica_plan.DEFAULT_REPLICA_PORT + 1]
    assert value(replicas[0].cmd, "--host") == "0.0.0.0" and replicas[0].url.startswith("http://127.0.0.1:")
    assert args.router_port == _replica_plan.DEFAULT_ROUTER_PORT and args.router_policy == "consistent_hash"
    args = parse("--replicas", "1", "--device", "cpu", "tiny", "--host", "::1", "--port", "9500")
    assert _replica_plan.replica_commands(args, args.vllm_args)[0].url == "http://[::1]:9500"


def test_gpu_replicas_get_their_own_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    args = parse("--replicas", "2", "--device", "gpu", "org/model", "--tensor-parallel-size", "2")
    replicas = _replica_plan.replica_commands(args, args.vllm_args)
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in replicas] == ["4,5", "6,7"]
    assert value(replicas[0].cmd, "--tensor-parallel-size") == "2"
    args = parse("--replicas", "3", "--device", "gpu", "org/model", "-tp", "2")
    with pytest.raises(ValueError, match="need 6 devices"):
        _replica_plan.replica_commands(args, args.vllm_args)


def test_router_command_hashes_on_the_replicas_and_extra_args_win() -> None:
    urls = ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]
    cmd = _replica_plan.router_command(urls, port=9100, metrics_port=9199, extra=["--cb-failure-threshold", "5"])
    assert cmd[1:3] == ["-m", "vllm_router.launch_router"]
    i = cmd.index("--worker-urls")
    assert cmd[i + 1 : i + 3] == urls and cmd[i + 3].startswith("--")
    assert value(cmd, "--policy") == "consistent_hash" and value(cmd, "--port") == "9100"
    assert value(cmd, "--prometheus-port") == "9199"
    assert cmd[-2:] == ["--cb-failure-threshold", "5"]  # after the defaults: argparse keeps the last
    rr = _replica_plan.router_command(urls, policy="round_robin", metrics_port=1)
    assert value(rr, "--policy") == "round_robin"
    with pytest.raises(ValueError, match="router policy"):
        _replica_plan.router_command(urls, policy="sticky", metrics_port=1)


def test_dry_run_prints_every_replica_and_the_router(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--replicas", "2", "--router-port", "9300", "--router-policy", "round_robin"]
    argv += ["--router-args=--log-level info", "--dry-run", "--device", "cpu", "tiny", "--port", "9301"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    replica_cmds = [shlex.split(line) for line in lines[:2]]
    assert [value(c, "--port") for c in replica_cmds] == ["9301", "9302"]
    router = shlex.split(lines[2])
    assert router[router.index("--worker-urls") + 1 : router.index("--worker-urls") + 3] == [
        "http://127.0.0.1:9301",
        "http://127.0.0.1:9302",
    ]
    assert value(router, "--policy") == "round_robin" and router[-2:] == ["--log-level", "info"]


def test_without_replicas_serve_is_one_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--dry-run", "--device", "cpu", "tiny", "--port", "9401"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "--port 9401" in out[0] and "vllm_router" not in out[0]


def test_serve_passes_the_plugin_options_to_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--dry-run", "--device", "cpu", "--swap-space", "0.5", "--session-fraction", "0.25", "tiny"]
    assert main(argv) == 0
    cmd = shlex.split(capsys.readouterr().out.splitlines()[0])
    memento = json.loads(cmd[cmd.index("--additional-config") + 1])["memento"]
    assert memento["swap_space_gib"] == 0.5 and memento["max_session_fraction"] == 0.25
    assert main(["serve", "--dry-run", "--device", "cpu", "tiny"]) == 0
    cmd = shlex.split(capsys.readouterr().out.splitlines()[0])
    assert json.loads(cmd[cmd.index("--additional-config") + 1])["memento"]["swap_space_gib"] == 4.0


@pytest.fixture
def router_present(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_replicas, "router_installed", lambda: True)
    yield


BAD = [
    (["--replicas", "0", "tiny"], "argument --replicas: expected a positive integer, got '0'"),
    (["--replicas", "2", "--router-port", "70000", "tiny"], "--router-port: expected a port number (1-65535)"),
    (["--replicas", "2", "--router-policy", "sticky", "tiny"], "argument --router-policy: invalid choice"),
    (["--replicas", "2", "tiny", "--router-port", "9000"], "--router-port is a serve option: put it before MODEL"),
    (["--replicas", "2", "--router-port", "9002", "tiny", "--port", "9001"], "both want port 9002"),
    (["--replicas", "2", "tiny", "--port", "65535"], "need ports up to 65536"),
    (["--replicas", "2", "tiny", "--port", "x"], "--port: expected a port number"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_replica_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], router_present: None
) -> None:
    assert main(["serve", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("autogen-memento: error: ") and message in err[0], err


def test_missing_router_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_replicas, "router_installed", lambda: False)
    assert main(["serve", "--replicas", "2", "--device", "cpu", "tiny"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "vllm-router is not installed" in err[0] and "[router]" in err[0], err


@pytest.mark.parametrize("which", ["router", "replica"])
def test_taken_port_is_one_line_and_starts_nothing(
    which: str, capsys: pytest.CaptureFixture[str], router_present: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    first = _free_pair()
    taken, what = (first, "the router") if which == "router" else (first + 1, "replica 1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        others = [p for p in (_free_pair() for _ in range(5)) if p not in (first, first - 1)]
        router_port, replica_port = (first, others[0]) if which == "router" else (others[0], first)
        argv = ["--router-port", str(router_port), "tiny", "--port", str(replica_port)]
        assert main(["serve", "--replicas", "2", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"port {taken} ({what}) is taken" in err[0], err
    assert started == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_pair() -> int:
    return _replica_plan.free_port_range(2)


def test_router_installed_reflects_the_environment() -> None:
    import importlib.util

    expected = all(importlib.util.find_spec(m) is not None for m in ("vllm_router", "vllm_router_rs"))
    assert _replica_plan.router_installed() is expected


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for init."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pids: list[int], within_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc")
def test_stop_ends_each_childs_whole_process_group(tmp_path: Path) -> None:
    children = _replicas._Children(tmp_path)
    # A child that leaves a grandchild in its group (as vLLM's API server leaves its engine core).
    marker = tmp_path / "grandchild"
    proc = children.start(
        "replica-0", ["sh", "-c", f"sleep 600 & echo $! > {marker}.tmp && mv {marker}.tmp {marker}; wait"]
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(marker.read_text())
    children.stop()
    assert proc.returncode is not None
    assert _wait_gone([grandchild]) == []
    assert (tmp_path / "replica-0.log").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_children_die_with_a_killed_serve(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    script = (
        "import sys, time\n"
        "from autogen_ext_memento.cli._replicas import _Children\n"
        "c = _Children(None)\n"
        "p = c.start('replica-0', [sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    serve = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert serve.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _gone(child)
    finally:
        serve.kill()  # SIGKILL: no handler of serve runs
        serve.wait()
    assert _wait_gone([child]) == []
