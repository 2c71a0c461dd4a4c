"""Test plumbing shared by every test module: real HTTP servers on 127.0.0.1, random ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import anyio
import httpx2
import psutil  # type: ignore[import-untyped]
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_START_TIMEOUT = 10.0  # seconds for a uvicorn server in a thread to bind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_in_thread(app: Any, *, port: int | None = None, http: Any = "auto", lifespan: str = "off") -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread; yield its base URL.

    A thread (not the test's event loop) so that child processes and synchronous code can reach it
    while the test's own loop is blocked, and so one fixture serves sync and async tests alike.
    """
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"test server on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT)


PROCESS_EXIT_TIMEOUT = 20.0  # seconds for a hub process to stop after SIGTERM


def stop_process(proc: subprocess.Popen[Any], timeout: float = PROCESS_EXIT_TIMEOUT) -> None:
    """SIGTERM a process still running, then SIGKILL it if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextlib.contextmanager
def mcphub_process(*args: str, stdout: Any = subprocess.PIPE) -> Iterator[subprocess.Popen[str]]:
    """`python -m mcphub ARGS` from the repo root (so `tests.mcp_servers.*` import in its children);
    stdout and stderr together, as text. Stopped with SIGTERM (then SIGKILL) if still running at the end."""
    proc = subprocess.Popen([PYTHON, "-m", "mcphub", *args], cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8")
    try:
        yield proc
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll another process's state (its HTTP answers, the process table), bounded. A connection
    error counts as 'not yet'. Returns the predicate's first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx2.TransportError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def alive(pids: list[int]) -> list[int]:
    """The pids among `pids` that are still running (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


PROCESS_START_TIMEOUT = 20.0  # seconds for a server process (python importing the SDK, node) to bind its port


class ServerProcess:
    """A server process listening on a fixed 127.0.0.1 port that a test can kill (SIGKILL), pause
    (SIGSTOP) and start again on the same port. Its output goes to `log`."""

    def __init__(self, argv: list[str], *, port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.port = port
        self._log = log
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = None if self._env is None else {**os.environ, **self._env}
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=log, stderr=log)
        with anyio.fail_after(PROCESS_START_TIMEOUT):
            while True:  # polling an external process: bounded, and it fails at once if the process dies
                assert self.process.poll() is None, f"{self.argv[0]} exited at start:\n{self.logs()}"
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                await stream.aclose()
                return

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGCONT)

    def logs(self) -> str:
        return self._log.read_text(encoding="utf-8", errors="replace")[-4000:]


class Front:
    """One ASGI app a uvicorn thread serves for a whole module; each test puts its own fresh fake behind
    it (a uvicorn thread per test cost ~0.2 s to start and stop)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no fake behind this front for the running test"
        await self.app(scope, receive, send)

    @contextlib.contextmanager
    def behind(self, app: ASGIApp) -> Iterator[None]:
        self.app = app
        try:
            yield
        finally:
            self.app = None


@contextlib.contextmanager
def child_environment(env: dict[str, str], *, drop: Callable[[str], bool]) -> Iterator[None]:
    """os.environ as a stdio child given only `env` sees it, for a server run in-process: the variables
    `drop` names (the server's own settings, proxies) are removed, then `env` is set; restored on exit."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if drop(name):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def missing(message: str) -> NoReturn:
    """Something a test needs is not installed: under CI (CI=true, where .ci/run installs it) the test
    fails, elsewhere it is skipped."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
