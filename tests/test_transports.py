"""Remote upstreams over real HTTP: the hub in front of `tests/mcp_servers/http_sample.py` run as a
separate process (SSE and streamable HTTP), killed with SIGKILL and started again on the same port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mcphub.outbound import Unsendable
from tests.helpers import PYTHON, ServerProcess, free_port, serve_in_thread
from tests.hub import assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

PROMPT = 5.0  # seconds within which the hub must notice a dead upstream and say so
RECOVERY_TIMEOUT = 20.0  # seconds for the hub to reconnect by itself (restart backoff is capped at 1 s here)
FAST_RESTART = {"initial_delay": 0.2, "max_delay": 1.0}
PATHS = {"streamable-http": "/mcp", "sse": "/sse"}


class Upstream(ServerProcess):
    """`python -m tests.mcp_servers.http_sample` on a fixed port, restartable after a SIGKILL."""

    def __init__(self, transport: str, log: Path, *, stateless: bool = False) -> None:
        port = free_port()
        argv = [PYTHON, "-m", "tests.mcp_servers.http_sample", "--transport", transport, "--port", str(port)]
        super().__init__([*argv, "--stateless"] if stateless else argv, port=port, log=log)
        self.transport = transport
        self.url = f"http://127.0.0.1:{port}{PATHS[transport]}"


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
    # found". Measured: the hub opens a new session and resends the call, which answers 200; a 503 +
    # Retry-After is possible only if the SDK's GET stream notices the new process first and the call
    # lands while the hub reconnects. (Before transports.py knew about 404s, every call answered 400
    # "Session not found" until the hub itself was restarted.)
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


PROBE_INTERVAL = 0.5  # seconds between health probes in these tests (ping_interval)
PROBE_SLACK = 3.0  # seconds past the interval for the probe's answer and /readyz polling on a loaded box
# An SSE ping to a paused server: the probe gives up after its timeout (= the interval here), then the SDK
# spends up to ~5 s trying to send notifications/cancelled down the blocked stream before it lets go.
PAUSED_NOTICE = 12.0


async def wait_until_not_ready(hub: Any, *, timeout: float) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            status, body = await readiness(hub)
            if body["servers"]["up"]["state"] != "ready":
                assert status == 503, body
                return body["servers"]["up"]
            await anyio.sleep(0.05)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_upstream_that_dies_while_idle_leaves_ready_within_the_probe_interval(
    upstreams: Any, mode: str
) -> None:
    # Nothing calls the server between its death and /readyz saying so: only the health probe can
    # notice. (An SSE upstream's death ends its event stream, which the hub sees at once.)
    upstream = upstreams("streamable-http")
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream, mode=mode, ping_interval=PROBE_INTERVAL)}}) as hub:
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        first_pid = response.json()

        # probes of a live server change nothing (on the 2026 protocol, `mode: auto`, it answers
        # ping with -32601, which still proves it is there)
        posts = upstream.logs().count('"POST /mcp')
        with anyio.fail_after(20 * PROBE_INTERVAL):
            while upstream.logs().count('"POST /mcp') < posts + 3:  # three probes answered (uvicorn's access log)
                await anyio.sleep(PROBE_INTERVAL / 10)
        status, body = await readiness(hub)
        assert status == 200, body
        assert body["servers"]["up"]["restarts"] == 0, body

        upstream.kill()
        state = await wait_until_not_ready(hub, timeout=PROBE_INTERVAL + PROBE_SLACK)
        assert state["state"] in ("restarting", "failed"), state
        assert state["last_error"], state

        await upstream.start()  # same port, new process
        body = await wait_until_ready(hub)
        assert body["servers"]["up"]["restarts"] >= 1, body
        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        assert response.json() != first_pid


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_upstream_that_hangs_while_idle_is_noticed_by_the_probe_and_served_again_when_it_answers(
    upstreams: Any, transport: str
) -> None:
    # SIGSTOP: the port still accepts connections, nothing answers. Only a probe with a timeout notices.
    upstream = upstreams(transport)
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream, ping_interval=1.0)}}) as hub:
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        pid = response.json()

        upstream.pause()
        state = await wait_until_not_ready(hub, timeout=PAUSED_NOTICE)
        assert state["state"] == "restarting", state
        assert state["last_error"] == "health probe failed: no answer to ping within 1s", state
        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/pid", json={})
        assert_error(response, 503, "server_unavailable")

        upstream.resume()
        body = await wait_until_ready(hub)
        assert body["servers"]["up"]["restarts"] >= 1, body
        with anyio.fail_after(PROMPT):
            response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200, response.text
        assert response.json() == pid  # the same process, reached over a new connection


def _refusing_proxy(target: str) -> Starlette:
    """In front of a real upstream: answers a `tools/call` of `add` with a=13 itself, with HTTP 400 and
    a JSON-RPC invalid-params error (as a server that checks arguments at the HTTP layer might), to a
    request that carries a valid session id; passes every other request through. It offers no GET
    stream (405, which the spec allows)."""

    async def mcp(request: Request) -> Response:
        if request.method == "GET":
            return Response(status_code=405)
        body = await request.body()
        message = json.loads(body) if body else {}
        if message.get("method") == "tools/call" and message["params"].get("arguments", {}).get("a") == 13:
            assert "mcp-session-id" in request.headers
            error = {"code": -32602, "message": "Invalid params: a must not be 13"}
            return JSONResponse({"jsonrpc": "2.0", "id": message["id"], "error": error}, status_code=400)
        if message.get("method") == "tools/call" and message["params"].get("arguments", {}).get("a") == 502:
            return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502)
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        async with httpx2.AsyncClient() as client:
            answer = await client.request(request.method, target, content=body, headers=headers)
        kept = {k: v for k, v in answer.headers.items() if k in ("content-type", "mcp-session-id")}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    return Starlette(routes=[Route("/mcp", mcp, methods=["GET", "POST", "DELETE"])])


async def test_a_400_about_the_arguments_is_the_tools_error_not_a_lost_session(upstreams: Any) -> None:
    upstream = upstreams("streamable-http")
    await upstream.start()
    with serve_in_thread(_refusing_proxy(upstream.url)) as proxy:
        config = {"servers": {"up": {"transport": "streamable-http", "url": f"{proxy}/mcp", "mode": "legacy",
                                     "restart": FAST_RESTART, "ping_interval": 0}}}
        async with running_hub(config) as hub:
            response = await hub.client.post("/up/add", json={"a": 12, "b": 1})
            assert response.status_code == 200, response.text

            with anyio.fail_after(PROMPT):
                response = await hub.client.post("/up/add", json={"a": 13, "b": 1})
            error = assert_error(response, 400, "tool_error")
            assert error["message"] == "Invalid params: a must not be 13"

            # the session was kept: no reconnect, and the next call goes through on it
            response = await hub.client.post("/up/add", json={"a": 14, "b": 1})
            assert response.status_code == 200, response.text
            assert response.json() == {"total": 15}
            status, body = await readiness(hub)
            assert status == 200, body
            assert body["servers"]["up"]["restarts"] == 0, body


async def test_an_http_error_page_from_a_proxy_is_a_502_not_the_tools_error(upstreams: Any) -> None:
    upstream = upstreams("streamable-http")
    await upstream.start()
    with serve_in_thread(_refusing_proxy(upstream.url)) as proxy:
        config = {"servers": {"up": {"transport": "streamable-http", "url": f"{proxy}/mcp", "mode": "legacy",
                                     "restart": FAST_RESTART, "ping_interval": 0}}}
        async with running_hub(config) as hub:
            with anyio.fail_after(PROMPT):
                response = await hub.client.post("/up/add", json={"a": 502, "b": 1})
            error = assert_error(response, 502, "bad_gateway")
            assert "HTTP error status" in error["message"] and "'up'" in error["message"], error
            response = await hub.client.post("/up/add", json={"a": 1, "b": 1})
            assert response.status_code == 200, response.text


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



# ------------------------------------------------------------------------------------ hostile arguments


@pytest.mark.parametrize(
    ("transport", "mode"), [("streamable-http", "auto"), ("streamable-http", "legacy"), ("sse", "auto")]
)
async def test_arguments_no_transport_can_encode_fail_that_call_alone_and_the_connection_carries_on(
    upstreams: Any, transport: str, mode: str
) -> None:
    # Straight at the server handle, past the invoker's own check (validation.sendable): the transport's
    # backstop. The SDK's HTTP writers encode in a task of their own, where the error would end the connection.
    upstream = upstreams(transport)
    await upstream.start()
    async with running_hub({"servers": {"up": remote(upstream, mode=mode)}}) as hub:
        handle = hub.supervisor.servers["up"]
        first_pid = (await hub.client.post("/up/pid", json={})).json()
        honest: list[httpx2.Response] = []

        async def honest_call(n: int) -> None:
            honest.append(await hub.client.post("/up/add", json={"a": n, "b": 1}))

        with anyio.fail_after(PROMPT):
            async with anyio.create_task_group() as tg:
                for n in range(5):  # other callers' calls, in flight around the hostile one
                    tg.start_soon(honest_call, n)
                with pytest.raises(Unsendable) as refused:
                    await handle.call_tool("add", {"a": 1, "b": "\ud800"})
        assert refused.value.status_code == 422
        assert refused.value.message == ("arguments of tool 'add' cannot be sent to its server: a string holds a "
                                         "lone surrogate, which is not Unicode text and cannot be sent as UTF-8")
        assert sorted(r.json()["total"] for r in honest) == [1, 2, 3, 4, 5], [r.text for r in honest]
        response = await hub.client.post("/up/pid", json={})
        assert response.status_code == 200 and response.json() == first_pid, response.text
        status, body = await readiness(hub)
        assert status == 200 and body["servers"]["up"]["restarts"] == 0, body
