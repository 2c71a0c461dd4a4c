"""A small real MCP server for the hub's tests, run over stdio: `python -m tests.mcp_servers.sample`.

Env: SAMPLE_START=fail|hang (exit or stall before serving), SAMPLE_MARKERS=<dir> (tools drop files
there: `cancelled-<tag>` when a sleep is cancelled, `pid-<pid>` at start-up), SAMPLE_TOOLS=extra (one
more tool, to test tool-list changes on restart).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from mcp import MCPError
from mcp.server.mcpserver import Audio, Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, EmbeddedResource, ResourceLink, TextContent, TextResourceContents
from pydantic import BaseModel, Field

MARKERS = os.environ.get("SAMPLE_MARKERS")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

mcp = MCPServer("sample", version="1.0.0")


def _mark(name: str) -> None:
    if MARKERS:
        Path(MARKERS, name).write_text(str(time.time()), encoding="utf-8")


class Sum(BaseModel):
    total: int
    operands: list[int]


@mcp.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@mcp.tool(description="Add two integers.")
def add(a: int, b: int) -> Sum:
    return Sum(total=a + b, operands=[a, b])


@mcp.tool(description="A tool with a constrained schema.")
def order(
    color: Literal["red", "green", "blue"],
    count: Annotated[int, Field(ge=1, le=10)] = 1,
    note: str | None = None,
) -> dict:
    return {"color": color, "count": count, "note": note}


@mcp.tool(description="Fail with the given message (an isError result).")
def fail(message: str) -> str:
    raise ToolError(message)


@mcp.tool(description="Answer with a JSON-RPC error.")
def rpc_error(message: str) -> str:
    raise MCPError(code=-32602, message=message)


@mcp.tool(description="Sleep, then answer. Drops cancelled-<tag> in SAMPLE_MARKERS if cancelled.")
async def sleep(seconds: float, tag: str = "x") -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _mark(f"cancelled-{tag}")
        raise
    return f"slept {seconds}"


@mcp.tool(description="Sleep, then answer with the server's process id.")
async def slow_pid(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


@mcp.tool(description="Exit the process at once, mid-call.")
def crash() -> str:
    os._exit(17)


@mcp.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


@mcp.tool(description="Every kind of content block.")
def mixed() -> CallToolResult:
    return CallToolResult(
        content=[
            TextContent(type="text", text="plain words"),
            TextContent(type="text", text='{"k": [1, 2]}'),
            Image(data=PNG, format="png").to_image_content(),
            Audio(data=b"RIFF0000WAVE", format="wav").to_audio_content(),
            ResourceLink(type="resource_link", uri="file:///tmp/a.txt", name="a.txt", mimeType="text/plain"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri="memo://one", mimeType="text/plain", text="embedded text"),
            ),
        ]
    )


@mcp.tool(description="Add a tool named `name` and announce that the tool list changed.")
async def grow(name: str, ctx: Context) -> str:
    def grown() -> str:
        return f"I am {name}"

    mcp.add_tool(grown, name=name, description="Added at run time.")
    await ctx.notify_tools_changed()  # 2026 protocol: to subscriptions/listen streams
    send = getattr(ctx.session, "send_tool_list_changed", None)
    if send is not None:
        try:
            await send()  # 2025 protocol: a notification
        except Exception:  # noqa: BLE001  (a 2026 connection has no notification channel for it)
            pass
    return "grown"


@mcp.tool(description="The `_meta` the call arrived with (what the hub forwards).")
def meta(ctx: Context) -> dict:
    found = ctx.request_context.meta
    if found is None:
        return {}
    dumped = found if isinstance(found, dict) else found.model_dump(by_alias=True, exclude_none=True)
    return {k: v for k, v in dumped.items() if k.startswith("io.mcphub")}


@mcp.tool(description="The value of an environment variable in the server's process (null when unset).")
def getenv(name: str) -> str | None:
    return os.environ.get(name)


@mcp.tool(description="Write the text to stderr.")
def shout(text: str) -> str:
    print(text, file=sys.stderr, flush=True)
    return "ok"


if os.environ.get("SAMPLE_TOOLS") == "extra":

    @mcp.tool(description="Only there when SAMPLE_TOOLS=extra.")
    def extra() -> str:
        return "extra"


def main() -> None:
    start = os.environ.get("SAMPLE_START")
    if start == "fail":
        print("sample: refusing to start (SAMPLE_START=fail)", file=sys.stderr, flush=True)
        sys.exit(3)
    if start == "hang":
        time.sleep(3600)
    _mark(f"pid-{os.getpid()}")
    mcp.run()


if __name__ == "__main__":
    main()
