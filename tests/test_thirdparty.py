"""MCP servers nobody here wrote, behind a real hub: mcp-server-time, mcp-server-fetch (PyPI, a venv
each) and @modelcontextprotocol/server-everything (npm, TypeScript SDK). `.ci/install-thirdparty`
installs them into `.tp/` (or `$MCPHUB_TP_DIR`)."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.streamable_http import DEFAULT_RECONNECTION_DELAY_MS, MAX_RECONNECTION_ATTEMPTS
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mcphub.config import load_config
from tests.helpers import REPO, ServerProcess, free_port, missing, serve_in_thread
from tests.hub import assert_error, running_hub

# The SDK's debug line once its GET stream stops reconnecting (mcp/client/streamable_http.py; fenced in
# tests/test_contracts.py): the one sign that it has given up, which the restart test waits for.
SDK_GAVE_UP = "GET stream max reconnection attempts"

pytestmark = pytest.mark.anyio

TP_DIR = Path(os.environ.get("MCPHUB_TP_DIR") or REPO / ".tp")
CALL_PROMPTLY = 5.0  # seconds: a quick tool through the hub, node / python start-up excluded
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def installed(relative: str) -> str:
    path = TP_DIR / relative
    if not os.access(path, os.X_OK):
        missing(f"{path} is not installed: run .ci/install-thirdparty (or set MCPHUB_TP_DIR)")
    return str(path)


def time_server(**overrides: Any) -> dict[str, Any]:
    server = {
        "transport": "stdio",
        "command": installed("venvs/mcp-server-time/bin/mcp-server-time"),
        "args": ["--local-timezone", "UTC"],
    }
    return {**server, **overrides}


def fetch_server(*args: str) -> dict[str, Any]:
    return {"transport": "stdio", "command": installed("venvs/mcp-server-fetch/bin/mcp-server-fetch"),
            "args": list(args)}


def everything_server(**overrides: Any) -> dict[str, Any]:
    server = {
        "transport": "stdio",
        "command": installed("npm/node_modules/.bin/mcp-server-everything"),
        "args": ["stdio"],
    }
    return {**server, **overrides}


async def spec_of(hub: Any, path: str) -> dict[str, Any]:
    response = await hub.client.get(path)
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document)
    return document


# ---------------------------------------------------------------------------------------- mcp-server-time


async def test_time_server_answers_the_current_utc_time_as_its_structured_output() -> None:
    async with running_hub({"servers": {"time": time_server()}}) as hub:
        before = datetime.now().astimezone()
        response = await hub.client.post("/time/get_current_time", json={"timezone": "UTC"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"timezone", "datetime", "day_of_week", "is_dst"}, body
        assert body["timezone"] == "UTC"
        assert body["is_dst"] is False
        now = datetime.fromisoformat(body["datetime"])
        assert now.utcoffset() == timedelta(0)
        assert abs(now - before) < timedelta(minutes=1)
        assert body["day_of_week"] == now.strftime("%A")


async def test_time_server_errors_are_400_tool_errors_with_its_own_message() -> None:
    async with running_hub({"servers": {"time": time_server()}}) as hub:
        response = await hub.client.post("/time/get_current_time", json={"timezone": "Mars/Olympus_Mons"})
        error = assert_error(response, 400, "tool_error")
        assert "Invalid timezone" in error["message"] and "Mars/Olympus_Mons" in error["message"]
        assert (error["server"], error["tool"]) == ("time", "get_current_time")

        response = await hub.client.post(
            "/time/convert_time",
            json={"source_timezone": "UTC", "time": "25:99", "target_timezone": "Europe/Berlin"},
        )
        error = assert_error(response, 400, "tool_error")
        assert "Invalid time format" in error["message"]

        # and the server still works after its errors
        response = await hub.client.post(
            "/time/convert_time",
            json={"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["target"]["datetime"].endswith("T21:00:00+09:00")


async def test_time_server_specs_are_valid_openapi_with_its_output_schema() -> None:
    async with running_hub({"servers": {"time": time_server()}}) as hub:
        combined = await spec_of(hub, "/openapi.json")
        assert {op["post"]["operationId"] for op in combined["paths"].values()} == {
            "time_get_current_time", "time_convert_time"
        }
        own = await spec_of(hub, "/time/openapi.json")
        assert set(own["paths"]) == {"/get_current_time", "/convert_time"}
        operation = own["paths"]["/get_current_time"]["post"]
        assert json.dumps(operation["responses"]["200"]).count("day_of_week") >= 1  # from its outputSchema


# --------------------------------------------------------------------------------------- mcp-server-fetch


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse("<html><head><title>t</title></head><body><h1>Hub test page</h1>"
                        "<p>The marker is zebra-4417.</p></body></html>")


PAGES = Starlette(routes=[Route("/page", _page)])


async def test_fetch_server_fetches_a_loopback_page_when_started_to_allow_it() -> None:
    # It refuses private addresses unless given --allow-private-ips; --ignore-robots-txt saves a
    # request for /robots.txt.
    config = {"servers": {"fetch": fetch_server("--ignore-robots-txt", "--allow-private-ips")}}
    with serve_in_thread(PAGES) as base:
        async with running_hub(config) as hub:
            own = await spec_of(hub, "/fetch/openapi.json")
            schema = own["paths"]["/fetch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            assert schema["required"] == ["url"]

            response = await hub.client.post("/fetch/fetch", json={"url": f"{base}/page"})
            assert response.status_code == 200, response.text
            text = response.json()
            assert text.startswith(f"Contents of {base}/page")
            assert "Hub test page" in text and "The marker is zebra-4417." in text
            assert "<p>" not in text  # simplified to markdown


async def test_fetch_server_refusing_a_loopback_url_is_a_400_with_its_reason() -> None:
    with serve_in_thread(PAGES) as base:
        async with running_hub({"servers": {"fetch": fetch_server()}}) as hub:
            response = await hub.client.post("/fetch/fetch", json={"url": f"{base}/page"})
            error = assert_error(response, 400, "tool_error")
            assert "--allow-private-ips" in error["message"]


# ------------------------------------------------------------------------------------- server-everything


async def test_everything_server_text_tools_answer_through_the_hub() -> None:
    async with running_hub({"servers": {"everything": everything_server()}}) as hub:
        await spec_of(hub, "/everything/openapi.json")
        response = await hub.client.post("/everything/echo", json={"message": "hello, hub"})
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: hello, hub"

        response = await hub.client.post("/everything/get-sum", json={"a": 19, "b": 23})
        assert response.status_code == 200, response.text
        assert response.json() == "The sum of 19 and 23 is 42."


async def test_everything_server_rich_content_is_mapped_without_loss() -> None:
    async with running_hub({"servers": {"everything": everything_server()}}) as hub:
        response = await hub.client.post("/everything/get-tiny-image", json={})
        assert response.status_code == 200, response.text
        images = [block for block in response.json() if isinstance(block, dict) and block.get("type") == "image"]
        assert len(images) == 1, response.json()
        assert images[0]["mimeType"] == "image/png"
        assert base64.b64decode(images[0]["data"]).startswith(PNG_SIGNATURE)

        response = await hub.client.post("/everything/get-resource-links", json={"count": 2})
        assert response.status_code == 200, response.text
        links = [block for block in response.json() if isinstance(block, dict)]
        assert len(links) == 2, response.json()
        for link in links:
            assert link["type"] == "resource_link"
            assert link["uri"].startswith("demo://resource/")
            assert link["name"]

        response = await hub.client.post("/everything/get-resource-reference",
                                         json={"resourceType": "Text", "resourceId": 1})
        assert response.status_code == 200, response.text
        embedded = [block for block in response.json() if isinstance(block, dict)]
        assert len(embedded) == 1, response.json()
        assert embedded[0]["type"] == "resource"
        assert embedded[0]["uri"] == "demo://resource/dynamic/text/1"
        assert embedded[0]["text"].startswith("Resource 1:")


async def test_everything_server_structured_content_is_the_body() -> None:
    async with running_hub({"servers": {"everything": everything_server()}}) as hub:
        response = await hub.client.post("/everything/get-structured-content", json={"location": "Chicago"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"temperature", "conditions", "humidity"}, body
        # the same call straight on the session carries it as structuredContent
        result = await hub.supervisor.servers["everything"].call_tool(
            "get-structured-content", {"location": "Chicago"})
        assert result.structured_content is not None
        assert set(result.structured_content) == set(body)

        own = await spec_of(hub, "/everything/openapi.json")
        response_schema = own["paths"]["/get-structured-content"]["post"]["responses"]["200"]
        assert "humidity" in json.dumps(response_schema)  # from the tool's outputSchema


async def test_everything_server_call_past_the_server_timeout_is_504_and_the_hub_stays_responsive() -> None:
    async with running_hub({"servers": {"everything": everything_server(timeout=1)}}) as hub:
        started = anyio.current_time()
        with anyio.fail_after(CALL_PROMPTLY):
            response = await hub.client.post("/everything/trigger-long-running-operation",
                                             json={"duration": 10, "steps": 5})
        error = assert_error(response, 504, "timeout")
        assert (error["server"], error["tool"]) == ("everything", "trigger-long-running-operation")
        assert anyio.current_time() - started >= 1.0

        with anyio.fail_after(CALL_PROMPTLY):
            response = await hub.client.post("/everything/echo", json={"message": "after the timeout"})
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: after the timeout"


async def test_everything_server_arguments_that_break_the_schema_are_422() -> None:
    async with running_hub({"servers": {"everything": everything_server()}}) as hub:
        response = await hub.client.post("/everything/get-sum", json={"a": "nineteen", "b": 23})
        error = assert_error(response, 422, "invalid_arguments")
        assert response.json()["error"]["errors"] == [
            {"loc": ["body", "a"], "msg": "'nineteen' is not of type 'number'"}
        ]
        assert error["tool"] == "get-sum"

        response = await hub.client.post("/everything/echo", json={})
        assert_error(response, 422, "invalid_arguments")
        assert response.json()["error"]["errors"][0]["msg"] == "'message' is a required property"

        # An extra argument does not break echo's schema (no additionalProperties: false), so it is
        # passed on, and the server ignores it.
        response = await hub.client.post("/everything/echo", json={"message": "hi", "volume": 11})
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: hi"


async def test_everything_server_concurrent_calls_each_get_their_own_answer() -> None:
    answers: dict[int, Any] = {}
    async with running_hub({"servers": {"everything": everything_server()}}) as hub:

        async def echo(i: int) -> None:
            response = await hub.client.post("/everything/echo", json={"message": f"message {i}"})
            assert response.status_code == 200, response.text
            answers[i] = response.json()

        with anyio.fail_after(CALL_PROMPTLY * 2):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(echo, i)
    assert answers == {i: f"Echo: message {i}" for i in range(20)}


# ------------------------------------------------------------------- server-everything over streamable HTTP

FAST_RESTART = {"initial_delay": 0.2, "max_delay": 1.0}
RECOVERY_TIMEOUT = 20.0  # seconds for the hub to reconnect once the server is back (backoff capped at 1 s)
PROBE_INTERVAL = 0.5  # seconds between health probes where a test turns them on
PROBE_SLACK = 3.0  # seconds past the interval for the probe's answer and /readyz polling on a loaded box


@pytest.fixture
def everything_http(tmp_path: Path) -> Iterator[ServerProcess]:
    """server-everything in streamableHttp mode (its example transport: sessions kept in a map, a
    request with an unknown session id answered 400 "Bad Request: No valid session ID provided").
    It listens on PORT, on every interface: it has no host setting."""
    port = free_port()
    server = ServerProcess([installed("npm/node_modules/.bin/mcp-server-everything"), "streamableHttp"],
                           port=port, log=tmp_path / "everything.log", env={"PORT": str(port)})
    yield server
    server.kill()


def everything_remote(server: ServerProcess, **overrides: Any) -> dict[str, Any]:
    return {"transport": "streamable-http", "url": f"http://127.0.0.1:{server.port}/mcp",
            "restart": FAST_RESTART, **overrides}


async def readyz(hub: Any, name: str = "everything") -> tuple[int, dict[str, Any]]:
    response = await hub.client.get("/readyz")
    return response.status_code, response.json()["servers"][name]


async def wait_for_state(hub: Any, ready: bool, *, timeout: float) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            status, state = await readyz(hub)
            if (state["state"] == "ready") == ready:
                assert status == (200 if ready else 503), state
                return state
            await anyio.sleep(0.05)


async def echo(hub: Any, message: str) -> Any:
    with anyio.fail_after(CALL_PROMPTLY):
        return await hub.client.post("/everything/echo", json={"message": message})


async def test_everything_server_over_http_restarted_between_calls_answers_the_next_call(
    everything_http: ServerProcess,
) -> None:
    # The restarted server answers the hub's old session id with HTTP 400 (not the spec's 404): the hub
    # must take that as the end of the session, re-initialise and send the call again. Probes off, so
    # only the call itself can find out. Measured: the first call answers 200 (about 0.3 s); a 503 +
    # Retry-After is possible only if the SDK's GET stream meets the new process first and the call
    # lands while the hub reconnects, and then the next call succeeds. Before: 400 "Server returned an
    # error response" to every call until the hub was restarted.
    await everything_http.start()
    async with running_hub({"servers": {"everything": everything_remote(everything_http, ping_interval=0)}}) as hub:
        response = await echo(hub, "before")
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: before"

        everything_http.kill()
        await everything_http.start()  # same port, new process, no sessions

        response = await echo(hub, "after")
        if response.status_code != 200:
            assert_error(response, 503, "server_unavailable")
            await wait_for_state(hub, True, timeout=RECOVERY_TIMEOUT)  # what Retry-After asks a client to wait for
            response = await echo(hub, "after")
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: after"
        status, state = await readyz(hub)
        assert status == 200 and state["restarts"] >= 1, state


async def test_everything_server_over_http_restarted_answers_concurrent_calls_on_one_new_session(
    everything_http: ServerProcess, caplog: pytest.LogCaptureFixture,
) -> None:
    # Every call sent on the old session is refused with 400; each must be resent on the one new
    # session, none answered 503 because the old connection closed under it. The server comes back
    # only after the SDK's GET stream has given up reconnecting (it would otherwise race the calls to
    # find out first, and calls arriving while the hub reconnects answer 503), so only calls notice.
    caplog.set_level(logging.DEBUG, logger="mcp.client.streamable_http")
    await everything_http.start()
    async with running_hub({"servers": {"everything": everything_remote(everything_http, ping_interval=0)}}) as hub:
        response = await echo(hub, "before")
        assert response.status_code == 200, response.text

        everything_http.kill()
        with anyio.move_on_after(MAX_RECONNECTION_ATTEMPTS * DEFAULT_RECONNECTION_DELAY_MS / 1000 + 10) as waited:
            while not any(SDK_GAVE_UP in record.getMessage() for record in caplog.records):
                await anyio.sleep(0.05)
        if waited.cancelled_caught:
            pytest.fail(f"the SDK no longer logs {SDK_GAVE_UP!r} when its GET stream gives up (see test_contracts.py)")
        await everything_http.start()

        answers: dict[int, Any] = {}

        async def call(i: int) -> None:
            response = await echo(hub, f"call {i}")
            answers[i] = (response.status_code, response.json())

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(call, i)
        assert answers == {i: (200, f"Echo: call {i}") for i in range(8)}
        status, state = await readyz(hub)
        assert status == 200 and state["restarts"] == 1, state


async def test_everything_server_over_http_that_dies_while_idle_leaves_ready_within_the_probe_interval(
    everything_http: ServerProcess,
) -> None:
    await everything_http.start()
    config = {"servers": {"everything": everything_remote(everything_http, ping_interval=PROBE_INTERVAL)}}
    async with running_hub(config) as hub:
        response = await echo(hub, "before")
        assert response.status_code == 200, response.text

        everything_http.kill()
        state = await wait_for_state(hub, False, timeout=PROBE_INTERVAL + PROBE_SLACK)
        assert state["state"] in ("restarting", "failed"), state
        assert state["last_error"], state

        await everything_http.start()
        state = await wait_for_state(hub, True, timeout=RECOVERY_TIMEOUT)
        assert state["restarts"] >= 1, state
        response = await echo(hub, "back")
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: back"


async def test_everything_server_over_http_restarted_while_idle_has_a_new_session_before_the_next_call(
    everything_http: ServerProcess,
) -> None:
    # Killed and back before anyone calls: the next probe's ping meets the new process, which answers
    # the old session with 400; the hub reconnects then, so the next caller never sees the old session.
    await everything_http.start()
    config = {"servers": {"everything": everything_remote(everything_http, ping_interval=PROBE_INTERVAL)}}
    async with running_hub(config) as hub:
        response = await echo(hub, "before")
        assert response.status_code == 200, response.text

        everything_http.kill()
        await everything_http.start()
        with anyio.fail_after(PROBE_INTERVAL + PROBE_SLACK + RECOVERY_TIMEOUT):
            while True:
                status, state = await readyz(hub)
                if state["restarts"] >= 1 and state["state"] == "ready":
                    break
                await anyio.sleep(0.05)
        response = await echo(hub, "after")
        assert response.status_code == 200, response.text
        assert response.json() == "Echo: after"


# ------------------------------------------------------------------------------------ mcpServers files


async def test_claude_desktop_config_file_serves_both_servers_without_disabled_tools(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps({
        "mcpServers": {
            "time": {"command": installed("venvs/mcp-server-time/bin/mcp-server-time"),
                     "args": ["--local-timezone", "UTC"]},
            "everything": {"command": installed("npm/node_modules/.bin/mcp-server-everything"),
                           "args": ["stdio"], "disabledTools": ["echo"]},
        }
    }), encoding="utf-8")
    config = load_config(path)
    async with running_hub(config) as hub:
        response = await hub.client.post("/time/get_current_time", json={"timezone": "UTC"})
        assert response.status_code == 200, response.text
        assert response.json()["timezone"] == "UTC"

        response = await hub.client.post("/everything/get-sum", json={"a": 1, "b": 2})
        assert response.status_code == 200, response.text

        response = await hub.client.post("/everything/echo", json={"message": "hidden"})
        error = assert_error(response, 404, "not_found")
        assert error["tool"] == "echo"

        combined = await spec_of(hub, "/openapi.json")
        assert "/everything/echo" not in combined["paths"]
        assert "/everything/get-sum" in combined["paths"]
        assert "/time/get_current_time" in combined["paths"]
