"""Remote upstreams over real HTTP: the hub in front of `tests/mcp_servers/http_sample.py` run as a
separate process (SSE and streamable HTTP), killed with SIGKILL and started again on the same port."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import PYTHON, REPO, free_port
from tests.hub import assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

UPSTREAM_START_TIMEOUT = 20.0  # seconds for a python MCP server process to import the SDK and bind
PROMPT = 5.0  # seconds within which the hub must notice a dead upstream and say so
RECOVERY_TIMEOUT = 20.0  # seconds for the hub to reconnect by itself (restart backoff is capped at 1 s here)
FAST_RESTART = {"initial_delay": 0.2, "max_delay": 1.0}
PATHS = {"streamable-http": "/mcp", "sse": "/sse"}


class Upstream:
    """`python -m tests.mcp_servers.http_sample` on a fixed port, restartable after a SIGKILL."""

    def __init__(self, transport: str, log: Path, *, stateless: bool = False) -> None:
        self.transport = transport
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PATHS[transport]}"
        self._log = log
        self._stateless = stateless
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        args = [PYTHON, "-m", "tests.mcp_servers.http_sample", "--transport", self.transport, "--port", str(self.port)]
        if self._stateless:
            args.append("--stateless")
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log)
        with anyio.fail_after(UPSTREAM_START_TIMEOUT):
            while True:  # polling an external process: bounded, and it fails at once if the process dies
                assert self.process.poll() is None, f"upstream exited at start:\n{self.logs()}"
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

    def logs(self) -> str:
        return self._log.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[Any]:
    started: list[Upstream] = []

    def make(transport: str, *, stateless: bool = False) -> Upstream:
        upstream = Upstream(transport, tmp_path / f"upstream-{len(started)}.log", stateless=stateless)
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.kill()


def remote(upstream: Upstream, **overrides: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"transport": upstream.transport, "url": upstream.url, "restart": FAST_RESTART}
    server.update(overrides)
    return server


async def readiness(hub: Any) -> tuple[int, dict[str, Any]]:
    response = await hub.client.get("/readyz")
    return response.status_code, response.json()


async def wait_until_ready(hub: Any) -> dict[str, Any]:
    with anyio.fail_after(RECOVERY_TIMEOUT):
        while True:
            status, body = await readiness(hub)
            if status == 200:
                return body
            await anyio.sleep(0.1)


# ------------------------------------------------------------------------------------------------ serving


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_upstream_serves_its_tools_and_gets_only_its_configured_headers(
    upstreams: Any, mode: str
) -> None:
    upstream = upstreams("streamable-http")
    await upstream.start()
    config = {
        "auth": {"api_keys": [{"name": "caller", "key": "hub-key"}]},
        "servers": {
            "up": remote(upstream, mode=mode, headers={"Authorization": "Bearer upstream-secret", "X-Region": "home"}),
            "bare": remote(upstream, mode=mode),
        },
    }
    async with running_hub(config, headers={"Authorization": "Bearer hub-key"}) as hub:
        spec = (await hub.client.get("/up/openapi.json")).json()
        assert set(spec["paths"]) == {"/add", "/whoami", "/pid"}

        response = await hub.client.post("/up/add", json={"a": 2, "b": 3})
        assert response.status_code == 200, response.text
        assert response.json() == {"total": 5}

        # whoami answers with the headers the upstream process itself received
        response = await hub.client.post("/up/whoami", json={})
        assert response.status_code == 200, response.text
        assert response.json() == {"authorization": "Bearer upstream-secret", "x-region": "home"}

        # the caller's credential to the hub is never forwarded to an MCP server
        response = await hub.client.post("/bare/whoami", json={})
        assert response.status_code == 200, response.text
        assert response.json() == {"authorization": None, "x-region": None}


async def test_sse_upstream_serves_its_tools_with_its_configured_headers(upstreams: Any) -> None:
    upstream = upstreams("sse")
    await upstream.start()
    config = {"servers": {"legacy": remote(upstream, headers={"Authorization": "Bearer sse-secret"})}}
    async with running_hub(config) as hub:
        spec = (await hub.client.get("/openapi.json")).json()
        assert {op["post"]["operationId"] for op in spec["paths"].values()} == {
            "legacy_add", "legacy_whoami", "legacy_pid"
        }

        response = await hub.client.post("/legacy/add", json={"a": 40, "b": 2})
        assert response.status_code == 200, response.text
        assert response.json() == {"total": 42}

        response = await hub.client.post("/legacy/whoami", json={})
        assert response.status_code == 200, response.text
        assert response.json()["authorization"] == "Bearer sse-secret"


# ------------------------------------------------------------------------------------ death and return


@pytest.mark.parametrize(
    ("transport", "mode"), [("streamable-http", "auto"), ("streamable-http", "legacy"), ("sse", "auto")]
)
async def test_killed_upstream_answers_503_then_the_hub_reconnects_when_it_is_back(
    upstreams: Any, transport: str, mode: str
) -> None:
    upstream = upstreams(transport)
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream, mode=mode)}}) as hub:
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        first_pid = response.json()

        upstream.kill()
        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/add", json={"a": 1, "b": 1})
        error = assert_error(response, 503, "server_unavailable")
        assert error["server"] == "up"
        assert int(response.headers["Retry-After"]) >= 1

        # /readyz: not ready, and once a reconnect has been tried the error names the URL
        with anyio.fail_after(PROMPT):
            while True:
                status, body = await readiness(hub)
                last_error = body["servers"]["up"]["last_error"] or ""
                if upstream.url in last_error:
                    break
                await anyio.sleep(0.1)
        assert status == 503, body
        assert body["servers"]["up"]["state"] in ("restarting", "failed"), body

        await upstream.start()  # same port, new process
        body = await wait_until_ready(hub)
        assert body["servers"]["up"]["restarts"] >= 1, body
        assert body["servers"]["up"]["last_error"] is None, body

        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        assert response.json() != first_pid
        response = await hub.client.post("/up/add", json={"a": 1, "b": 1})
        assert response.status_code == 200, response.text
        assert response.json() == {"total": 2}


async def test_expired_streamable_http_session_is_replaced_without_restarting_the_hub(upstreams: Any) -> None:
    # `mode: legacy` speaks the 2025 protocol, which has sessions (Mcp-Session-Id). A new upstream
    # process does not know the hub's session id: it answers 404 with a JSON-RPC error "Session not
    # found". Measured: the hub answers that one call 503 + Retry-After, opens a new session, and the
    # next calls succeed. (Before the fix in transports.py, every call answered 400 "Session not found"
    # until the hub itself was restarted.)
    upstream = upstreams("streamable-http")
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream, mode="legacy")}}) as hub:
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        first_pid = response.json()

        upstream.kill()
        await upstream.start()  # back on the same port before the hub has noticed anything

        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/add", json={"a": 2, "b": 2})
        if response.status_code != 200:
            assert_error(response, 503, "server_unavailable")
            assert int(response.headers["Retry-After"]) >= 1

        with anyio.fail_after(RECOVERY_TIMEOUT):
            while True:
                response = await hub.client.post("/up/pid", json={})
                if response.status_code == 200:
                    break
                assert_error(response, 503, "server_unavailable")
                await anyio.sleep(0.1)
        assert response.json() != first_pid
        status, body = await readiness(hub)
        assert status == 200, body


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_restarted_upstream_without_sessions_answers_the_very_next_call(
    upstreams: Any, stateless: bool
) -> None:
    # The 2026 protocol (mode: auto against an SDK 2.x server) and a stateless server carry no session,
    # so a restart between two calls is invisible to the caller.
    upstream = upstreams("streamable-http", stateless=stateless)
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream)}}) as hub:
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        first_pid = response.json()

        upstream.kill()
        await upstream.start()

        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        assert response.json() != first_pid


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_upstream_url_where_nothing_listens_leaves_the_hub_up_and_other_servers_serving(
    transport: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}{PATHS[transport]}"
    config = {
        "servers": {
            "nowhere": {"transport": transport, "url": url, "restart": FAST_RESTART},
            "sample": sample_server(),
        }
    }
    async with running_hub(config) as hub:
        status, body = await readiness(hub)
        assert status == 503, body
        nowhere = body["servers"]["nowhere"]
        assert nowhere["state"] in ("failed", "restarting"), body
        assert url in nowhere["last_error"], body
        assert body["servers"]["sample"]["state"] == "ready", body

        response = await hub.client.post("/nowhere/add", json={"a": 1, "b": 2})
        assert_error(response, 503, "server_unavailable")
        assert int(response.headers["Retry-After"]) >= 1

        response = await hub.client.post("/sample/echo", json={"text": "still here"})
        assert response.status_code == 200, response.text
        assert response.json() == {"result": "still here"}

