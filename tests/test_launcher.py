"""`mcphub serve`'s launcher: `python -m MODULE` stdio servers forked from a preloaded interpreter.

Every test runs a real `mcphub serve` process and looks at the real process tree (psutil): which
process is whose parent, who is still alive after a kill, what a forked server sees from inside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
import yaml

from tests.helpers import PYTHON, REPO, alive, free_port, stop_process, wait_until
from tests.hub import module_server, sample_server

STARTUP = 30.0  # seconds for a hub process to answer /readyz with every server ready
PROMPT = 10.0  # seconds for the hub to notice a dead server, or for orphans to die
BACK = 20.0  # seconds for a killed server to be serving again
EXIT = 20.0  # seconds for the hub to stop after a signal
SECRET = "launcher-test-secret-7f3a9c"  # in the hub's environment only


@dataclass
class Hub:
    proc: subprocess.Popen[str]
    url: str
    log: Path
    client: httpx2.Client

    def call(self, server: str, tool: str, **arguments: Any) -> Any:
        response = self.client.post(f"/{server}/{tool}", json=arguments)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self, server: str) -> dict[str, Any]:
        return self.client.get("/readyz").json()["servers"][server]

    def launcher(self) -> psutil.Process:
        found = [p for p in psutil.Process(self.proc.pid).children() if p.name() == "mcphub-launcher"]
        assert len(found) == 1, f"launchers under the hub: {found}"
        return found[0]

    def descendants(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_hub(tmp_path: Path, servers: dict[str, Any], *, ready: bool = True) -> Iterator[Hub]:
    """`python -m mcphub serve` on `servers`, run from `tmp_path` (not where its servers run), with SECRET in its
    environment; SIGTERM (then SIGKILL) at the end."""
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"hub": {"reload": False}, "servers": servers}), encoding="utf-8")
    port = free_port()
    log = tmp_path / "hub.log"
    env = {**os.environ, "MCPHUB_TEST_SECRET": SECRET}
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([PYTHON, "-m", "mcphub", "serve", "-c", str(config), "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=url, timeout=30) as client:
            hub = Hub(proc, url, log, client)
            if ready:
                wait_until(lambda: client.get("/readyz").status_code == 200, timeout=STARTUP, what="hub ready")
            yield hub
    finally:
        stop_process(proc, EXIT)


def procinfo(**overrides: Any) -> dict[str, Any]:
    server = module_server("procinfo", **{"env": {"OWN": "mine"}, **overrides})
    server["args"] = [*server["args"], "--flag", "a value"]
    return server


def parent(pid: int) -> int:
    return psutil.Process(pid).ppid()


# ------------------------------------------------------------------------------------- what a child sees


def test_a_forked_server_sees_what_the_same_server_execd_sees(tmp_path: Path):
    servers = {
        "forked": procinfo(),
        "execd": procinfo(launch="exec"),
        "pythonvar": procinfo(env={"OWN": "mine", "PYTHONHASHSEED": "0"}),  # start-up variable: exec
    }
    with running_hub(tmp_path, servers) as hub:
        forked = hub.call("forked", "describe")
        execd = hub.call("execd", "describe")
        pythonvar = hub.call("pythonvar", "describe")
        launcher = hub.launcher()

        assert forked["ppid"] == launcher.pid and launcher.ppid() == hub.proc.pid
        assert execd["ppid"] == hub.proc.pid and pythonvar["ppid"] == hub.proc.pid
        assert launcher.cmdline()[0] == "mcphub-launcher"  # not the hub's command line: `pkill -f` tells them apart

        # the allowlist holds for the forked child: its own env, none of the hub's secrets
        assert forked["environ"]["OWN"] == "mine"
        assert "MCPHUB_TEST_SECRET" not in forked["environ"] and "MCPHUB_TEST_SECRET" not in execd["environ"]
        assert SECRET not in forked["proc_environ"] and SECRET not in forked["cmdline"]
        assert forked["environ"] == execd["environ"]

        same = {key: value for key, value in execd.items() if key not in ("pid", "ppid", "proc_environ", "cmdline")}
        assert {key: forked[key] for key in same} == same
        assert same["leads_session"] is True
        assert same["argv"] == [str(REPO / "tests" / "mcp_servers" / "procinfo.py"), "--flag", "a value"]
        assert same["fds_at_start"] == [0, 1, 2, 3]  # 3: the listing's own
        # what ps shows: the exec'd command line, space-separated as setproctitle's (and the hub's nowhere)
        argv = [sys.executable, "-m", "tests.mcp_servers.procinfo", "--flag", "a value"]
        assert execd["cmdline"] == "\0".join(argv) + "\0"
        assert forked["cmdline"] == " ".join(argv) + "\0"


def test_a_forked_servers_stderr_is_logged_tagged_with_its_name_and_explains_a_failed_start(tmp_path: Path):
    servers = {
        "sample": sample_server(),
        "refuses": sample_server(env={"SAMPLE_START": "fail"}, restart={"policy": "never"}, required=False),
        "missing": module_server("no_such_module", restart={"policy": "never"}, required=False),
    }
    with running_hub(tmp_path, servers) as hub:
        assert parent(hub.call("sample", "pid")["result"]) == hub.launcher().pid
        hub.call("sample", "shout", text="said on stderr by a forked server")
        wait_until(lambda: "[sample] said on stderr by a forked server" in hub.output(), timeout=PROMPT,
                   what="the tagged stderr line in the hub's log")

        refuses = hub.state("refuses")
        assert refuses["state"] == "failed" and "refusing to start" in refuses["last_error"], refuses
        missing = hub.state("missing")
        assert missing["state"] == "failed", missing
        assert "No module named tests.mcp_servers.no_such_module" in missing["last_error"], missing


def test_a_forked_server_ends_as_an_interpreter_does_pools_shut_down_and_atexit_handlers_run(tmp_path: Path):
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"PROCINFO_EXIT_MARKERS": str(markers)}
    with running_hub(tmp_path, {"forked": procinfo(env=env), "execd": procinfo(env=env, launch="exec")}) as hub:
        pids = {name: hub.call(name, "pool")["result"] for name in ("forked", "execd")}
        assert parent(pids["forked"]) == hub.launcher().pid
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.proc.wait(timeout=EXIT) == 0
    # closing stdin ended each; a server killed after the grace period would have left no marker
    assert sorted(path.name for path in markers.iterdir()) == sorted(f"exit-{pid}" for pid in pids.values())


# --------------------------------------------------------------------------------------- death and return


def test_a_killed_forked_server_answers_503_then_is_forked_again(tmp_path: Path):
    with running_hub(tmp_path, {"sample": sample_server(restart={"initial_delay": 1.0})}) as hub:
        launcher = hub.launcher()
        first = hub.call("sample", "pid")["result"]
        assert parent(first) == launcher.pid

        os.kill(first, signal.SIGKILL)
        response = hub.client.post("/sample/add", json={"a": 1, "b": 2})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "server_unavailable"

        second = wait_until(lambda: (r := hub.client.post("/sample/pid", json={})).status_code == 200
                            and r.json()["result"], timeout=BACK, what="the server back")
        assert second != first and alive([first]) == []
        assert parent(second) == launcher.pid
        assert hub.state("sample")["restarts"] >= 1


def test_a_killed_launcher_takes_its_servers_with_it_and_they_come_back_by_exec(tmp_path: Path):
    servers = {"sample": sample_server(restart={"initial_delay": 0.2, "max_delay": 1.0}),
               "execd": sample_server(launch="exec")}
    with running_hub(tmp_path, servers) as hub:
        launcher = hub.launcher()
        forked = hub.call("sample", "pid")["result"]
        execd = hub.call("execd", "pid")["result"]
        assert parent(forked) == launcher.pid

        launcher.kill()
        wait_until(lambda: alive([launcher.pid, forked]) == [], timeout=PROMPT, what="launcher and child gone")

        back = wait_until(lambda: (r := hub.client.post("/sample/pid", json={})).status_code == 200
                          and r.json()["result"], timeout=BACK, what="the server back")
        assert parent(back) == hub.proc.pid  # exec'd now
        assert hub.call("execd", "pid")["result"] == execd  # the exec'd server never noticed
        assert "Python servers start by exec from now on" in hub.output()


# --------------------------------------------------------------------------------------------- no orphans


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_hub_stops_the_launcher_and_every_server(tmp_path: Path, signum: int):
    servers = {"forked": sample_server(replicas=2), "execd": sample_server(launch="exec")}
    with running_hub(tmp_path, servers) as hub:
        descendants = hub.descendants()
        assert len(descendants) == 4, descendants  # the launcher, two forked replicas, one exec'd server
        hub.proc.send_signal(signum)
        assert hub.proc.wait(timeout=EXIT) == 0
        assert alive(descendants) == [], f"left behind after {signal.Signals(signum).name}: {alive(descendants)}"
    assert "Traceback" not in hub.output()


def test_a_hub_killed_outright_takes_the_launcher_and_every_server_with_it(tmp_path: Path):
    servers = {"forked": sample_server(), "execd": sample_server(launch="exec")}
    with running_hub(tmp_path, servers) as hub:
        descendants = hub.descendants()
        assert len(descendants) == 3, descendants
        hub.proc.kill()
        hub.proc.wait(timeout=EXIT)
        # the launcher and its children by PR_SET_PDEATHSIG; the exec'd server on EOF of its stdin
        wait_until(lambda: alive(descendants) == [], timeout=PROMPT, what="every descendant gone")
