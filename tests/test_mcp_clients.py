"""The MCP face with parts nobody here wrote: the official TypeScript SDK's client (npm) against the hub,
and @modelcontextprotocol/server-everything (npm, a real stdio process) behind it, driven by the Python
SDK's client in both protocol generations. `.ci/install-thirdparty` installs both into `.tp/npm`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult, TextContent

from tests.helpers import missing
from tests.hub import RunningHub, running_hub, sample_server
from tests.test_mcp_face import FULL_KEY, MODES, NARROW_KEY, config, dumped, mcp_client, text_of
from tests.test_thirdparty import TP_DIR, everything_server, installed

pytestmark = pytest.mark.anyio

TS_CLIENT = os.path.join(os.path.dirname(__file__), "clients", "ts_client.cjs")
NODE_RUN = 60.0  # seconds for one run of the TypeScript client (node start-up included)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def ts_client(url: str, key: str | None, tool: str,
                    arguments: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    return await run_node(TS_CLIENT, url, key or "-", tool, json.dumps(arguments))


async def run_node(script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`node script args` with the TypeScript SDK from .ci/install-thirdparty on its module path."""
    installed("npm/node_modules/.bin/mcp-server-everything")  # the same npm install brings the SDK
    node = shutil.which("node")
    if node is None or not (TP_DIR / "npm/node_modules/@modelcontextprotocol/sdk").is_dir():
        missing("node or @modelcontextprotocol/sdk missing: run .ci/install-thirdparty")
    env = {**os.environ, "NODE_PATH": str(TP_DIR / "npm/node_modules")}
    with anyio.fail_after(NODE_RUN):  # run as a task: the hub answering it lives in this event loop
        return await anyio.run_process([node, script, *args], env=env, check=False)


def unwrapped(result: CallToolResult) -> dict[str, Any]:
    """A result without the 2026-07-28 envelope (`_meta` naming the server that answered: here the hub)."""
    dumped = result.model_dump(mode="json")
    meta = {k: v for k, v in (dumped.pop("meta") or {}).items() if k != "io.modelcontextprotocol/serverInfo"}
    return {**dumped, "meta": meta or None}


# ------------------------------------------------------------------------------ the TypeScript client


async def test_the_typescript_sdk_client_lists_and_calls_with_progress_through_the_combined_endpoint():
    async with running_hub(config(), listen=True) as hub:
        done = await ts_client(f"{hub.url}/mcp", FULL_KEY, "sample_count", {"steps": 3})
        assert done.returncode == 0, done.stderr.decode()
        seen = json.loads(done.stdout)
        assert seen["protocolVersion"] == "2025-11-25" and seen["sessionId"]  # a session client
        assert {"sample_echo", "second_add", "sample_count"} <= set(seen["tools"])
        assert seen["result"]["content"] == [{"type": "text", "text": "counted 3"}]
        assert [p["progress"] for p in seen["progress"]] == [1, 2, 3]
        assert seen["progress"][-1] == {"progress": 3, "total": 3, "message": "step 3"}


async def test_the_typescript_sdk_client_sees_a_scoped_key_s_view_and_is_refused_without_a_key():
    async with running_hub(config(), listen=True) as hub:
        done = await ts_client(f"{hub.url}/sample/mcp", NARROW_KEY, "add", {"a": 1, "b": 2})
        assert done.returncode == 0, done.stderr.decode()
        seen = json.loads(done.stdout)
        assert seen["tools"] == ["echo", "add"]
        assert seen["result"]["structuredContent"] == {"total": 3, "operands": [1, 2]}
        refused = await ts_client(f"{hub.url}/sample/mcp", None, "add", {"a": 1, "b": 2})
        assert refused.returncode == 1
        assert "missing credential: send 'Authorization: Bearer <key>'" in refused.stderr.decode()


# -------------------------------------------------------------------------- server-everything behind


@pytest.fixture(scope="module")
async def everything_hub() -> Any:
    raw = {"servers": {"everything": everything_server(), "sample": sample_server()}}
    async with running_hub(raw, listen=True) as hub:
        yield hub


@pytest.mark.parametrize("mode", MODES)
async def test_server_everything_through_the_mcp_face_is_what_a_direct_session_sees(everything_hub: RunningHub,
                                                                                  mode: str):
    handle = everything_hub.supervisor.servers["everything"]
    async with mcp_client(f"{everything_hub.url}/everything/mcp", key=None, mode=mode) as client:
        expected = dumped(handle.tools.values())
        if mode == "auto":  # the 2026-07-28 wire has no `execution` (tasks became an extension): the SDK drops it
            expected = [{k: v for k, v in t.items() if k != "execution"} for t in expected]
        assert dumped((await client.list_tools()).tools) == expected
        for tool, arguments in [("get-tiny-image", {}), ("get-structured-content", {"location": "New York"}),
                                ("get-annotated-message", {"messageType": "success", "includeImage": True}),
                                ("get-resource-links", {"count": 2})]:
            direct = await handle.call_tool(tool, arguments)
            through: CallToolResult = await client.session.call_tool(tool, arguments)
            assert unwrapped(through) == unwrapped(direct), tool
        assert text_of(await client.call_tool("get-sum", {"a": 2, "b": 40})) == "The sum of 2 and 40 is 42."


@pytest.mark.parametrize("mode", MODES)
async def test_server_everything_progress_reaches_an_mcp_client_through_the_hub(everything_hub: RunningHub,
                                                                                mode: str):
    updates: list[float] = []
    three = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)
        if len(updates) == 3:
            three.set()

    async with mcp_client(f"{everything_hub.url}/mcp", key=None, mode=mode) as client:
        result = await client.call_tool("everything_trigger-long-running-operation", {"duration": 0.3, "steps": 3},
                                        progress_callback=on_progress)
        assert not result.is_error, result
        assert any(isinstance(b, TextContent) and "completed" in b.text.lower() for b in result.content), result
        with anyio.fail_after(10):
            await three.wait()
    assert updates == [1, 2, 3]
