"""`mcphub serve`'s launcher: `python -m MODULE` stdio servers forked from a preloaded interpreter.

Most tests run a real `mcphub serve` process and look at the real process tree (psutil): which process
is whose parent, who is still alive after a kill or a stall, what a forked server sees from inside.
Which servers may be forked (`launchable`) is checked against real files; the CPython internals the
launcher relies on, each in a fresh interpreter (section "contract tests" at the end).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
import setproctitle
import yaml

from mcphub.config import StdioServer
from mcphub.launcher import Launcher
from mcphub.transports import launchable
from tests.helpers import PYTHON, REPO, alive, free_port, stop_process, wait_until
from tests.hub import config_of, module_server, sample_server

STARTUP = 30.0  # seconds for a hub process to answer /readyz with every server ready
PROMPT = 10.0  # seconds for the hub to notice a dead server, or for orphans to die
BACK = 20.0  # seconds for a killed server to be serving again
EXIT = 20.0  # seconds for the hub to stop after a signal
SECRET = "launcher-test-secret-7f3a9c"  # in the hub's environment only
SLOW_SPAWN = 1.0  # seconds: the spawn timeout of the hub in the slow-launcher test (SPAWN_TIMEOUT is 5 s)
CONTRACT = 30.0  # seconds for a contract test's fresh interpreter to run


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
        found = [p for p in psutil.Process(self.proc.pid).children() if comm(p.pid) == "mcphub-launcher"]
        assert len(found) == 1, f"launchers under the hub: {found}"
        return found[0]

    def descendants(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_hub(tmp_path: Path, servers: dict[str, Any], *, ready: bool = True,
                mcphub: tuple[str, ...] = (PYTHON, "-m", "mcphub")) -> Iterator[Hub]:
    """`mcphub serve` (`python -m mcphub`, or the command `mcphub`) on `servers`, run from `tmp_path` (not where
    its servers run), with SECRET in its environment; SIGTERM (then SIGKILL) at the end."""
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"hub": {"reload": False}, "servers": servers}), encoding="utf-8")
    port = free_port()
    log = tmp_path / "hub.log"
    env = {**os.environ, "MCPHUB_TEST_SECRET": SECRET}
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([*mcphub, "serve", "-c", str(config), "--port", str(port)],
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


def shown(pid: int) -> str:
    """A process's command line as ps shows it and `pkill -f` matches it (NULs as spaces, trailing ones dropped)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().rstrip()


def comm(pid: int) -> str:
    """A process's name as ps -o comm shows it and `pkill` (without -f) matches it."""
    return Path(f"/proc/{pid}/comm").read_text().strip()


def spelled_with_dotdot(path: str) -> str:
    """`/a/bin/python` as `/a/bin/../bin/python`."""
    directory, name = os.path.split(path)
    return os.path.join(directory, "..", os.path.basename(directory), name)


# ------------------------------------------------------------------------------------- what a child sees


def test_a_forked_server_sees_what_the_same_server_execd_sees(tmp_path: Path):
    servers = {
        "forked": procinfo(),
        "execd": procinfo(launch="exec"),
        "pythonvar": procinfo(env={"OWN": "mine", "PYTHONHASHSEED": "0"}),  # start-up variable: exec
        "dotdot": procinfo(command=spelled_with_dotdot(sys.executable)),  # the hub's interpreter all the same
    }
    with running_hub(tmp_path, servers) as hub:
        forked = hub.call("forked", "describe")
        execd = hub.call("execd", "describe")
        pythonvar = hub.call("pythonvar", "describe")
        dotdot = hub.call("dotdot", "describe")
        launcher = hub.launcher()

        assert forked["ppid"] == launcher.pid and launcher.ppid() == hub.proc.pid
        assert execd["ppid"] == hub.proc.pid and pythonvar["ppid"] == hub.proc.pid
        assert dotdot["ppid"] == launcher.pid
        # not the hub's command line: `pkill -f` tells them apart
        assert shown(launcher.pid) == f"mcphub-launcher (hub {hub.proc.pid})"

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
        assert forked["cmdline"].rstrip("\0") == " ".join(argv)  # NUL-padded to the length of the hub's
        assert comm(forked["pid"]) == comm(execd["pid"]) == os.path.basename(sys.executable)


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

        # the explanation is the child's stderr, in the hub's log; /readyz (anyone may read it) points there
        refuses = hub.state("refuses")
        assert refuses["state"] == "failed" and "stderr" in refuses["last_error"], refuses
        assert "refusing to start" not in refuses["last_error"], refuses
        assert "[refuses] sample: refusing to start" in hub.output()
        missing = hub.state("missing")
        assert missing["state"] == "failed", missing
        assert "No module named" not in missing["last_error"], missing
        assert "No module named tests.mcp_servers.no_such_module" in hub.output()


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


# `mcphub serve` whose launcher must answer a spawn within argv[1] seconds (the real SPAWN_TIMEOUT is 5 s). A
# script, not `python -c`: the launcher stays off in an interpreter started with options.
SLOW_SPAWN_HUB = """\
import sys
from mcphub import launcher
from mcphub.cli import main
launcher.SPAWN_TIMEOUT = float(sys.argv[1])
main(sys.argv[2:])
"""


def test_a_spawn_the_launcher_is_too_slow_for_starts_that_server_by_exec_and_harms_no_other(tmp_path: Path):
    driver = tmp_path / "slow_spawn_hub.py"
    driver.write_text(SLOW_SPAWN_HUB, encoding="utf-8")
    servers = {"steady": sample_server(), "victim": sample_server(restart={"initial_delay": 1.0, "max_delay": 1.0})}
    with running_hub(tmp_path, servers, mcphub=(PYTHON, str(driver), str(SLOW_SPAWN))) as hub:
        launcher = hub.launcher()
        steady = hub.call("steady", "pid")["result"]
        victim = hub.call("victim", "pid")["result"]
        assert parent(steady) == launcher.pid and parent(victim) == launcher.pid

        def victim_back(previous: int) -> int | None:
            response = hub.client.post("/victim/pid", json={})
            pid = response.json()["result"] if response.status_code == 200 else None
            return pid if pid != previous else None

        os.kill(victim, signal.SIGKILL)
        # The hub has had the exit status from the launcher and closed that connection; it restarts in 1 s.
        wait_until(lambda: hub.state("victim")["state"] == "restarting", timeout=PROMPT, what="victim restarting")
        launcher.suspend()  # SIGSTOP: the launcher answers nothing, as if the machine had starved it
        try:
            back = wait_until(lambda: victim_back(victim), timeout=BACK, what="the victim back")
            assert parent(back) == hub.proc.pid  # exec'd, after SLOW_SPAWN without an answer
            assert hub.call("steady", "pid")["result"] == steady  # the forked server never noticed
            assert launcher.status() == psutil.STATUS_STOPPED
        finally:
            launcher.resume()
        assert f"did not answer within {SLOW_SPAWN:g}s" in hub.output()

        # It answers the spawn it missed (that child gets EOF instead of its stdio, and exits): forking resumes.
        os.kill(back, signal.SIGKILL)
        again = wait_until(lambda: victim_back(back), timeout=BACK, what="the victim back again")
        assert parent(again) == launcher.pid
        assert "has caught up; Python servers are forked again" in hub.output()
        assert hub.call("steady", "pid")["result"] == steady
        assert sorted(hub.descendants()) == sorted([launcher.pid, steady, again])  # nothing else left running


# --------------------------------------------------------------------------- which servers may be forked


def stdio_server(command: str, **overrides: Any) -> StdioServer:
    server = config_of({"servers": {"s": module_server("procinfo", command=command, **overrides)}}).servers["s"]
    assert isinstance(server, StdioServer)
    return server


def test_the_hubs_interpreter_is_forked_however_its_path_is_spelled(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "py").symlink_to(sys.executable)
    (bin_dir / "other").write_text("#!/bin/sh\n", encoding="utf-8")
    module = "tests.mcp_servers.procinfo"
    assert launchable(stdio_server("python")) == module
    assert launchable(stdio_server(sys.executable)) == module
    assert launchable(stdio_server(spelled_with_dotdot(sys.executable))) == module
    # A symlink elsewhere starts the same environment only outside a venv: inside one, python finds its
    # pyvenv.cfg beside the path it was started as, so a link outside the venv starts the base interpreter.
    linked = module if sys.prefix == sys.base_prefix else None
    assert launchable(stdio_server(str(bin_dir / "py"))) == linked
    assert launchable(stdio_server("bin/py", cwd=str(tmp_path))) == linked  # from its own cwd
    assert launchable(stdio_server("py", env={"PATH": str(bin_dir)})) == linked  # on its own PATH
    # another interpreter, or none: exec
    assert launchable(stdio_server(str(bin_dir / "other"))) is None
    assert launchable(stdio_server(str(bin_dir / "missing"))) is None
    assert launchable(stdio_server("py")) is None  # not on the hub's PATH
    assert launchable(stdio_server(sys.executable, launch="exec")) is None


def test_the_same_interpreter_file_in_another_virtual_environment_is_execd(tmp_path: Path):
    # a venv's bin/python is a symlink to the base interpreter; pyvenv.cfg beside it makes it another sys.prefix
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    (tmp_path / "venv" / "pyvenv.cfg").write_text(f"home = {os.path.dirname(sys.executable)}\n", encoding="utf-8")
    assert launchable(stdio_server(str(venv_bin / "python"))) is None


def test_closing_the_launcher_on_the_event_loop_is_refused_as_it_blocks():
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE) as stand_in, pair[0], pair[1]:  # stands in for a launcher
        launcher = Launcher(stand_in.pid, pair[0], {})

        async def close() -> None:
            launcher.close()

        with pytest.raises(RuntimeError, match=r"Launcher.close\(\) blocks: call it outside the event loop"):
            anyio.run(close)
        assert stand_in.poll() is None  # refused before it did anything


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


# --- contract tests: CPython internals the launcher relies on ---
# Each runs the internal as mcphub/launcher.py does, in a fresh interpreter (calling either would end this
# one's threads or run its exit handlers), and says what changed. The list, and why: launcher.py's
# docstring, "Internals relied on".

PYTHON_VERSION = ".".join(map(str, sys.version_info[:3]))


def fresh_interpreter(script: str, changed: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c script`; a non-zero exit or a hang fails the test with `changed` (what it means for mcphub)."""
    try:
        run = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=CONTRACT, check=False,
                             env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{changed} (It hung for {CONTRACT:g}s.)")
    assert run.returncode == 0, f"{changed}\n{run.stderr}"
    return run


THREADING_SHUTDOWN = """\
import concurrent.futures, inspect, json, os, threading
signature = str(inspect.signature(threading._shutdown))
pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
pool.submit(int).result()  # its worker now waits for more: a non-daemon thread only the pool's exit hook ends
release, done = threading.Event(), []
worker = threading.Thread(target=lambda: (release.wait(), done.append(1)))  # non-daemon
worker.start()
release.set()
threading._shutdown()
left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
print(json.dumps({"signature": signature, "left": left, "joined": done == [1] and not worker.is_alive()}))
os._exit(0)
"""


def test_contract_threading_shutdown_shuts_thread_pools_down_and_joins_non_daemon_threads():
    changed = (f"threading._shutdown is gone or changed in Python {PYTHON_VERSION}: a forked server can no longer "
               f"end as the interpreter would (thread pools shut down, non-daemon threads joined); see 'Internals "
               f"relied on' in mcphub/launcher.py.")
    run = fresh_interpreter(THREADING_SHUTDOWN, changed)
    assert json.loads(run.stdout) == {"signature": "()", "left": [], "joined": True}, f"{changed}\n{run.stdout}"


ATEXIT_RUN_EXITFUNCS = """\
import atexit, json, os
calls = []
atexit.register(calls.append, "registered first")
atexit.register(lambda: 1 / 0)  # reported on stderr; the others still run
atexit.register(calls.append, "registered last")
atexit._run_exitfuncs()
print(json.dumps(calls))
os._exit(0)
"""


def test_contract_atexit_run_exitfuncs_runs_every_handler_last_registered_first():
    changed = (f"atexit._run_exitfuncs is gone or changed in Python {PYTHON_VERSION}: a forked server's atexit "
               f"handlers no longer run as at interpreter exit; see 'Internals relied on' in mcphub/launcher.py.")
    run = fresh_interpreter(ATEXIT_RUN_EXITFUNCS, changed)
    assert json.loads(run.stdout) == ["registered last", "registered first"], f"{changed}\n{run.stdout}"
    assert "ZeroDivisionError" in run.stderr, f"{changed} A failing handler was not reported:\n{run.stderr}"


# Not a CPython internal, but what the launcher relies on of setproctitle (pyproject.toml bounds it).
SETPROCTITLE = """\
import os
from mcphub import launcher
launcher._set_title("mcphub-contract (hub 1)", comm="contract-comm")  # before the environment is cleared
os.environ.clear()
launcher._check_hidden("mcphub-contract (hub 1)")  # raises if ps shows otherwise or the environment block is left
print(open("/proc/self/comm").read().strip())
"""


def test_contract_setproctitle_sets_what_ps_shows_and_overwrites_the_environment_block():
    changed = (f"setproctitle {setproctitle.__version__} no longer does what mcphub/launcher.py relies on "
               f"(_set_title, _check_hidden): the launcher would refuse to run, or forked servers would show the "
               f"hub's command line or environment.")
    run = fresh_interpreter(SETPROCTITLE, changed, MCPHUB_TEST_SECRET=SECRET)
    assert run.stdout.strip() == "contract-comm", f"{changed} /proc/self/comm: {run.stdout!r}"
