"""The MCP face (`/mcp`, `/{server}/mcp`) driven by the SDK's own client, in both protocol generations,
over real sockets (uvicorn on 127.0.0.1; the test servers in-process). What an MCP client must see:
tools as the upstream gave them, calls answered verbatim, the hub's keys and scopes, 401 with RFC 9728
metadata, progress and cancellation passed through, a dead upstream as a clean error then recovery, and
list_changed for session clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent, ToolListChangedNotification

from tests.helpers import free_port
from tests.hub import RunningHub, running_hub, running_instances, sample_server
from tests.hub import mcp_client as hub_mcp_client

pytestmark = pytest.mark.anyio

FULL_KEY = "mcp-face-full-key-0123456789"
NARROW_KEY = "mcp-face-narrow-key-0123456789"
OTHER_KEY = "mcp-face-other-key-0123456789"
LIMITED_KEY = "mcp-face-limited-key-0123456789"
MODES = ["auto", "legacy"]  # 2026-07-28 (no session) and 2025-11-25 (initialize, Mcp-Session-Id)
ERA = {"auto": "2026-07-28", "legacy": "2025-11-25"}
WAIT = 10.0  # seconds for anything announced to arrive


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def config(markers: Path | None = None) -> dict[str, Any]:
    env = {"SAMPLE_MARKERS": str(markers)} if markers else {}
    return {
        "auth": {"api_keys": [
            {"name": "full", "key": FULL_KEY},
            {"name": "narrow", "key": NARROW_KEY, "servers": ["sample"], "tools": ["echo", "add"]},
            {"name": "other", "key": OTHER_KEY},
            {"name": "limited", "key": LIMITED_KEY, "rate_limit": {"requests": 1, "per": 3600}},
        ]},
        "servers": {"sample": sample_server(env=env, restart={"initial_delay": 0.1, "max_delay": 0.5}),
                    "second": sample_server(), "slow": sample_server(timeout=0.5)},
    }


@pytest.fixture(scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningHub]:
    markers = tmp_path_factory.mktemp("markers")
    async with running_hub(config(markers), listen=True) as running:
        running.markers = markers  # type: ignore[attr-defined]
        yield running


def mcp_client(url: str, key: str | None = FULL_KEY, mode: str = "auto",
               **options: Any) -> AbstractAsyncContextManager[Client]:
    return hub_mcp_client(url, key, mode, **options)  # (with this module's full key by default)


def dumped(tools: Any) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


# ------------------------------------------------------------------------------------ tools, calls


@pytest.mark.parametrize("mode", MODES)
async def test_one_server_lists_its_tools_unchanged_and_answers_calls_verbatim(hub: RunningHub, mode: str):
    handle = hub.supervisor.servers["sample"]
    async with mcp_client(f"{hub.url}/sample/mcp", mode=mode) as client:
        assert client.protocol_version == ERA[mode]
        listed = (await client.list_tools()).tools
        assert dumped(listed) == dumped(handle.tools.values())  # schemas, outputSchema, annotations, title
        direct = await handle.call_tool("mixed", {})
        through = await client.session.call_tool("mixed", {})
        assert through.model_dump(mode="json") == direct.model_dump(mode="json")  # every block kind, verbatim
        added = await client.call_tool("add", {"a": 2, "b": 3})
        assert added.structured_content == {"total": 5, "operands": [2, 3]} and not added.is_error
        failed = await client.call_tool("fail", {"message": "the tool's own words"})
        assert failed.is_error and "the tool's own words" in text_of(failed)


@pytest.mark.parametrize("mode", MODES)
async def test_all_servers_as_one_endpoint_name_tools_server_underscore_tool(hub: RunningHub, mode: str):
    async with mcp_client(f"{hub.url}/mcp", mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        expected = {f"{s}_{t}" for s in ("sample", "second", "slow") for t in hub.supervisor.servers[s].tools}
        assert names == expected
        answer = await client.call_tool("second_echo", {"text": "through /mcp"})
        assert text_of(answer) == "through /mcp"
        spec = (await hub.client.get("/openapi.json", headers={"Authorization": f"Bearer {FULL_KEY}"})).json()
        operation_ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
        assert names == operation_ids  # the same names as the combined OpenAPI document


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path,name", [("/mcp", "sample_no_such_tool"), ("/sample/mcp", "no_such_tool")])
async def test_an_unknown_tool_is_a_json_rpc_invalid_params_error(hub: RunningHub, mode: str, path: str, name: str):
    async with mcp_client(f"{hub.url}{path}", mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(name, {})
        assert caught.value.code == INVALID_PARAMS
        assert "no_such_tool" in caught.value.message


async def test_bad_arguments_are_a_tool_error_naming_the_problem(hub: RunningHub):
    async with mcp_client(f"{hub.url}/sample/mcp") as client:
        result = await client.call_tool("add", {"a": "two", "b": 3})
        assert result.is_error
        assert "a" in text_of(result) and "integer" in text_of(result), text_of(result)


async def test_a_timeout_and_a_rate_limit_are_tool_errors_with_the_hub_s_reason(hub: RunningHub):
    async with mcp_client(f"{hub.url}/slow/mcp") as client:
        late = await client.call_tool("sleep", {"seconds": 5})
        assert late.is_error and text_of(late) == "tool 'sleep' on server 'slow' did not answer within 0.5s"
    async with mcp_client(f"{hub.url}/mcp", key=LIMITED_KEY) as client:
        assert text_of(await client.call_tool("second_echo", {"text": "one"})) == "one"
        limited = await client.call_tool("second_echo", {"text": "two"})
        assert limited.is_error and "rate limit" in text_of(limited) and "retry after" in text_of(limited)


@pytest.mark.parametrize("path,name", [("/sample/mcp", "routed"), ("/mcp", "sample_routed")])
async def test_a_2026_request_whose_mcp_param_header_disagrees_with_its_argument_is_refused(
        hub: RunningHub, path: str, name: str):
    def call(region_header: str) -> dict[str, Any]:
        return {"json": {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                    "name": name, "arguments": {"region": "eu"},
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                              "io.modelcontextprotocol/clientCapabilities": {}}}},
                "headers": {"Authorization": f"Bearer {FULL_KEY}", "MCP-Protocol-Version": "2026-07-28",
                            "Accept": "application/json, text/event-stream", "Mcp-Method": "tools/call",
                            "Mcp-Name": name, "Mcp-Param-Region": region_header}}

    agreed = await hub.client.post(path, **call("eu"))
    assert agreed.status_code == 200 and agreed.json()["result"]["content"][0]["text"] == "eu", agreed.text
    refused = await hub.client.post(path, **call("us"))
    assert refused.status_code == 400, refused.text
    assert "Mcp-Param-Region" in refused.json()["error"]["message"], refused.text


async def test_the_server_s_own_json_rpc_error_passes_through(hub: RunningHub):
    async with mcp_client(f"{hub.url}/sample/mcp") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("rpc_error", {"message": "bad params, says the server"})
        assert caught.value.code == INVALID_PARAMS and caught.value.message == "bad params, says the server"


# ------------------------------------------------------------------------------- access control


@pytest.mark.parametrize("mode", MODES)
async def test_a_scoped_key_lists_and_calls_only_what_it_may(hub: RunningHub, mode: str):
    async with mcp_client(f"{hub.url}/mcp", key=NARROW_KEY, mode=mode) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"sample_echo", "sample_add"}
        assert text_of(await client.call_tool("sample_echo", {"text": "ok"})) == "ok"
        for forbidden in ("sample_fail", "second_echo"):
            with pytest.raises(MCPError) as caught:
                await client.call_tool(forbidden, {"message": "x", "text": "x"})
            assert caught.value.code == INVALID_PARAMS
    async with mcp_client(f"{hub.url}/sample/mcp", key=NARROW_KEY, mode=mode) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"echo", "add"}
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fail", {"message": "x"})
        assert caught.value.code == INVALID_PARAMS and "may not call tool 'fail'" in caught.value.message


async def test_a_server_the_key_may_not_use_is_403_and_an_unknown_one_404(hub: RunningHub):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Authorization": f"Bearer {NARROW_KEY}", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28"}
    forbidden = await hub.client.post("/second/mcp", json=body, headers=headers)
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.json()["error"]["message"] == "credential 'narrow' may not use server 'second'"
    missing = await hub.client.post("/nosuch/mcp", json=body, headers=headers)
    assert missing.status_code == 404 and "no server named 'nosuch'" in missing.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/mcp", "/sample/mcp"])
async def test_no_credential_is_401_pointing_at_the_resource_metadata(hub: RunningHub, path: str):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    response = await hub.client.post(path, json=body, headers={"Accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer resource_metadata=")
    metadata_url = challenge.split('"')[1]
    assert metadata_url == f"{hub.url}/.well-known/oauth-protected-resource{path}"
    metadata = (await hub.client.get(metadata_url)).json()
    assert metadata["resource"] == f"{hub.url}{path}"
    assert metadata["bearer_methods_supported"] == ["header"]
    assert "authorization_servers" not in metadata  # no JWT issuer configured
    wrong = await hub.client.post(path, json=body, headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid credential"


async def test_the_metadata_names_the_jwt_issuer_where_one_is_configured():
    raw = {"auth": {"jwt": {"secret": "s" * 32, "issuer": "https://id.example"}},
           "servers": {"sample": sample_server()}}
    async with running_hub(raw) as hub:
        metadata = (await hub.client.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert metadata["authorization_servers"] == ["https://id.example"]


async def test_a_session_stays_with_the_key_that_opened_it(hub: RunningHub):
    seen: list[str] = []

    async def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            seen.append(response.headers["mcp-session-id"])

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {FULL_KEY}"},
                                  event_hooks={"response": [remember]}) as http:
        async with Client(streamable_http_client(f"{hub.url}/sample/mcp", http_client=http), mode="legacy") as client:
            await client.list_tools()
            assert seen
            body = {"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}
            stolen = await hub.client.post("/sample/mcp", json=body, headers={
                "Authorization": f"Bearer {OTHER_KEY}", "Mcp-Session-Id": seen[0],
                "MCP-Protocol-Version": "2025-11-25", "Accept": "application/json, text/event-stream"})
            assert stolen.status_code == 404  # as if the session did not exist


async def test_calls_are_audited_and_counted_with_the_mcp_face_label(hub: RunningHub, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="mcphub.access")
    async with mcp_client(f"{hub.url}/mcp", key=NARROW_KEY) as client:
        await client.call_tool("sample_add", {"a": 40, "b": 2})
    assert any(r.getMessage().startswith("key:narrow sample/add 200") for r in caplog.records)
    metrics = (await hub.client.get("/metrics")).text
    assert 'mcphub_tool_calls_total{face="mcp",server="sample",status="200",tool="add"}' in metrics


# --------------------------------------------------------------------------- progress and cancel


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_the_client(hub: RunningHub, mode: str):
    updates: list[tuple[float, float | None, str | None]] = []
    done = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))
        if len(updates) == 3:
            done.set()

    async with mcp_client(f"{hub.url}/sample/mcp", mode=mode) as client:
        result = await client.call_tool("count", {"steps": 3}, progress_callback=on_progress)
        assert text_of(result) == "counted 3"
        with anyio.fail_after(WAIT):  # (the SDK runs progress callbacks as tasks of their own)
            await done.wait()
    assert updates == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_cancels_cancels_the_upstream_call(hub: RunningHub, mode: str):
    markers: Path = hub.markers  # type: ignore[attr-defined]
    tag = f"mcp-cancel-{mode}"
    async with mcp_client(f"{hub.url}/mcp", mode=mode) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "sample_sleep", {"seconds": 60, "tag": tag})
                await _until(lambda: (markers / f"started-{tag}").exists())
                scope.cancel()
        await _until(lambda: (markers / f"cancelled-{tag}").exists())
        assert text_of(await client.call_tool("sample_echo", {"text": "still here"})) == "still here"


async def test_a_killed_upstream_is_a_clean_tool_error_then_it_serves_again(hub: RunningHub):
    async with mcp_client(f"{hub.url}/sample/mcp") as client:
        crashed = await client.call_tool("crash", {})
        assert crashed.is_error
        assert "MCP server 'sample' is not available" in text_of(crashed), text_of(crashed)
        with anyio.fail_after(WAIT):
            while True:
                answer = await client.call_tool("echo", {"text": "back"})
                if not answer.is_error:
                    break
                assert "not available" in text_of(answer)
                await anyio.sleep(0.05)  # polling the server's restart (no event reaches a client)
        assert text_of(answer) == "back"


async def test_a_session_client_is_told_when_the_tools_change():
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    async with running_hub(config(), listen=True) as hub:
        async with mcp_client(f"{hub.url}/mcp", mode="legacy", message_handler=on_message) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            await client.call_tool("second_grow", {"name": "sprouted"})
            with anyio.fail_after(WAIT):
                await changed.wait()
            after = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
            assert after - before == {"second_sprouted"}
            assert text_of(await client.call_tool("second_sprouted", {})) == "I am sprouted"


async def test_a_mounted_hub_s_tools_are_on_the_combined_endpoint():
    cn_port, global_port = free_port(), free_port()
    raw = {"auth": {"api_keys": [{"name": "owui", "key": FULL_KEY}]},
           "servers": {"clock": sample_server(), "local": sample_server()},
           "instances": {"global": {"port": global_port, "servers": ["local"], "mount": ["cn"]},
                         "cn": {"port": cn_port, "servers": ["clock"], "url": f"http://127.0.0.1:{cn_port}"}}}
    async with running_instances(raw) as hubs:
        invoker = hubs["global"].app.state.invoker
        await _until(lambda: "clock" in invoker.servers() and invoker.servers()["clock"].tools)  # the mount's poll
        async with mcp_client(f"{hubs['global'].url}/mcp") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"clock_add", "local_add"} <= names
            answer = await client.call_tool("clock_add", {"a": 20, "b": 22})
            assert answer.structured_content == {"total": 42, "operands": [20, 22]} and not answer.is_error


async def _until(condition: Any, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)  # a marker file another task writes: no event to wait on
