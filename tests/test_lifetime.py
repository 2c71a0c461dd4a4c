"""The hub's lifetime as a process: signals from the first moment, a busy port, the CLI reaching
mounted servers. Real processes on purpose: signals, children and exit codes are what is tested."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import yaml

from tests.helpers import PYTHON, REPO, alive, free_port, wait_until
from tests.hub import running_hub, sample_server

pytestmark = pytest.mark.anyio

STOP_GRACE = 5.0  # supervisor.STOP_GRACE: what one server gets to stop before it is cancelled
STOP_BOUND = STOP_GRACE + 5.0  # the whole hub: one grace period (servers stop in parallel), plus exit
CHILD_START_TIMEOUT = 20.0  # seconds for the hub to have spawned its server process


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _sample_processes(hub: psutil.Process) -> list[int]:
    found = []
    for child in hub.children(recursive=True):
        try:
            if "tests.mcp_servers.sample" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_while_a_server_hangs_in_initialize_stops_the_hub_and_leaves_no_child(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # the server never answers `initialize`; the hub would wait connect_timeout (60 s) before serving
    stuck = sample_server(env={"SAMPLE_START": "hang"}, connect_timeout=60)
    path = _write(tmp_path, {"servers": {"stuck": stuck}})
    log = tmp_path / "hub.log"
    with log.open("wb") as sink:
        hub = subprocess.Popen([PYTHON, "-m", "mcphub", "serve", "-c", str(path), "--port", str(free_port())],
                               cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        process = psutil.Process(hub.pid)
        children = wait_until(lambda: _sample_processes(process), timeout=CHILD_START_TIMEOUT,
                              what="the hub to spawn the stuck server")
        assert hub.poll() is None, log.read_text(encoding="utf-8")
        sent = time.monotonic()
        hub.send_signal(signum)
        code = await anyio.to_thread.run_sync(lambda: hub.wait(timeout=STOP_BOUND))
        took = time.monotonic() - sent
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, output
    assert f"{signum.name} during start-up: stopping" in output, output
    assert "Traceback" not in output, output
    assert not alive(children), f"left running after {took:.1f}s: {children}\n{output}"
    assert "'stuck' stopped" in output, output


async def test_mcphub_call_reaches_a_tool_of_a_mounted_hub(tmp_path: Path) -> None:
    # a hub with a `clock` server, listening on 127.0.0.1; the CLI's config has no server of its own
    async with running_hub({"servers": {"clock": sample_server()}}, listen=True) as remote:
        path = _write(tmp_path, {"hub": {"mount": ["lab"]}, "remotes": {"lab": {"url": remote.url}}, "servers": {}})
        result = await anyio.run_process(
            [PYTHON, "-m", "mcphub", "call", "clock", "add", "--args", json.dumps({"a": 2, "b": 40}), "-c", str(path)],
            cwd=REPO, check=False)
        output = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == 0, output
        assert json.loads(result.stdout)["total"] == 42, output

        missing = await anyio.run_process([PYTHON, "-m", "mcphub", "call", "nowhere", "add", "-c", str(path)],
                                          cwd=REPO, check=False)
        assert missing.returncode == 2, missing.stderr.decode()
        assert "no server named 'nowhere', here or on a mounted hub (servers: clock)" in missing.stderr.decode()
