"""A small real MCP server for the hub's tests.

Two ways to run the same server code:
- a process over stdio: `python -m tests.mcp_servers.sample`, its options read from the environment;
- in the test's own process: `from_env(environ, pid=..., exit=...)` builds a fresh server object from the
  same variables (tests/hub.py's `connect` does, for a config naming this module), and
  `build(tools="extra", markers=...)` builds one from arguments.

Env: SAMPLE_START=fail|hang (refuse or stall before serving), SAMPLE_MARKERS=<dir> (tools drop files
there: `started-<tag>` when a sleep starts, `cancelled-<tag>` when it is cancelled, `pid-<pid>` at
start-up), SAMPLE_TOOLS=extra (one more tool, to test tool-list changes on restart).

Besides tools: a resource `memo://one`, a resource template `memo://notes/{name}`, a prompt `greet`
(argument `who`, required; `style`, optional), and tools that ask their client: `ask_name` (elicitation)
and `ask_model` (sampling), each answering with what came back, and `ask_name_resolved` (elicitation by
a resolver: a 2026-07-28 client gets it as an `InputRequiredResult` answer, a 2025 one as a request).
"""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp import MCPError
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Audio,
    Context,
    Elicit,
    ElicitationResult,
    Image,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    EmbeddedResource,
    ResourceLink,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)
from pydantic import BaseModel, Field

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
START_FAILURE_EXIT = 3  # the exit status of `python -m tests.mcp_servers.sample` with SAMPLE_START=fail


class RefusedToStart(Exception):
    """SAMPLE_START=fail: raised where the server would start serving."""


class Sum(BaseModel):
    total: int
    operands: list[int]


class Name(BaseModel):
    name: str


def who_asks() -> Elicit[Name]:
    """The resolver of `ask_name_resolved` (module level: tool annotations are evaluated by name)."""
    return Elicit("What is your name?", Name)


def build(
    *,
    tools: str | None = None,
    markers: str | None = None,
    start: str | None = None,
    pid: Callable[[], int] = os.getpid,
    exit: Callable[[int], None] = os._exit,
    environ: Mapping[str, str] = os.environ,
) -> MCPServer:
    """A new sample server. `tools="extra"` adds the `extra` tool; `markers` is a directory for marker
    files; `start` is "fail" or "hang" (what happens before serving). What the process provides comes in
    as arguments, so an in-process server can be one of several: `pid` (its identity), `exit` (ends it at
    once: a process exits; an in-process server's connection ends), `environ` (what `getenv` reads)."""

    def mark(name: str) -> None:
        if markers:
            Path(markers, name).write_text(str(time.time()), encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        if start == "fail":
            message = "sample: refusing to start (SAMPLE_START=fail)"
            print(message, file=sys.stderr, flush=True)
            raise RefusedToStart(message)
        if start == "hang":
            await anyio.sleep_forever()
        mark(f"pid-{pid()}")
        yield

    mcp = MCPServer("sample", version="1.0.0", lifespan=lifespan)

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
    ) -> dict[str, Any]:
        return {"color": color, "count": count, "note": note}

    @mcp.tool(description="Fail with the given message (an isError result).")
    def fail(message: str) -> str:
        raise ToolError(message)

    @mcp.tool(description="Answer with a JSON-RPC error.")
    def rpc_error(message: str) -> str:
        raise MCPError(code=-32602, message=message)

    @mcp.tool(description="Sleep, then answer. Drops started-<tag>, and cancelled-<tag> if cancelled, in markers.")
    async def sleep(seconds: float, tag: str = "x") -> str:
        mark(f"started-{tag}")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            mark(f"cancelled-{tag}")
            raise
        return f"slept {seconds}"

    @mcp.tool(description="Echo the region, which a 2026 client also sends as the header Mcp-Param-Region.")
    def routed(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return region

    @mcp.tool(description="Report progress `steps` times (i of steps, message 'step i'), then answer.")
    async def count(steps: Annotated[int, Field(ge=0, le=100)], ctx: Context) -> str:  # (bounded: the fuzz
        for i in range(1, steps + 1):                                                 # sends huge numbers)
            await ctx.report_progress(i, steps, f"step {i}")
            await anyio.sleep(0)  # a no-op report (no progress token) does not yield: let other calls in
        return f"counted {steps}"

    @mcp.tool(description="Sleep, then answer with the server's process id.")
    async def slow_pid(seconds: float) -> int:
        await anyio.sleep(seconds)
        return pid()

    @mcp.tool(description="Exit the process at once, mid-call.")
    async def crash() -> str:
        exit(17)
        await anyio.sleep_forever()  # os._exit never returns; an in-process exit cancels this call
        raise AssertionError("unreachable")

    @mcp.tool(name="pid", description="The server's process id.")
    def pid_tool() -> int:
        return pid()

    @mcp.tool(description="Every kind of content block.")
    def mixed() -> CallToolResult:
        return CallToolResult(
            content=[
                TextContent(type="text", text="plain words"),
                TextContent(type="text", text='{"k": [1, 2]}'),
                Image(data=PNG, format="png").to_image_content(),
                Audio(data=b"RIFF0000WAVE", format="wav").to_audio_content(),
                ResourceLink(type="resource_link", uri="file:///tmp/a.txt", name="a.txt", mime_type="text/plain"),
                EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(uri="memo://one", mime_type="text/plain", text="embedded text"),
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
    def meta(ctx: Context) -> dict[str, Any]:
        found = ctx.request_context.meta
        if found is None:
            return {}
        dumped = found if isinstance(found, dict) else found.model_dump(by_alias=True, exclude_none=True)
        return {k: v for k, v in dumped.items() if k.startswith("io.mcphub")}

    @mcp.tool(description="The value of an environment variable in the server's process (null when unset).")
    def getenv(name: str) -> str | None:
        return environ.get(name)

    @mcp.tool(description="Write the text to stderr.")
    def shout(text: str) -> str:
        print(text, file=sys.stderr, flush=True)
        return "ok"

    @mcp.resource("memo://one", name="one", description="The first memo.", mime_type="text/plain")
    def memo_one() -> str:
        return "memo one"

    @mcp.resource("memo://notes/{name}", name="note", description="A note by name.", mime_type="text/plain")
    def note(name: str) -> str:
        return f"note {name}"

    @mcp.prompt(description="Greet someone.")
    def greet(who: str, style: str = "plain") -> str:
        return f"Hello, {who}!" if style == "plain" else f"Dear {who}, greetings."

    @mcp.tool(description="Ask the client for a name (elicitation); answer with what came back.")
    async def ask_name(ctx: Context) -> str:
        try:
            answer = await ctx.elicit("What is your name?", Name)
        except MCPError as exc:  # the client refused, or (2026) there is no channel to ask on
            return f"elicitation refused: {exc.message}"
        if answer.action == "accept":
            return f"hello {answer.data.name}"
        return f"elicitation {answer.action}"

    @mcp.tool(description="Ask the client's model (sampling); answer with its text.")
    async def ask_model(prompt: str, ctx: Context) -> str:
        message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
        request = CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=50))
        try:  # (session.create_message warns that sampling is deprecated in 2026-07-28)
            reply = await ctx.session.send_request(request, CreateMessageResult,
                                                   metadata=ServerMessageMetadata(related_request_id=ctx.request_id))
        except MCPError as exc:
            return f"sampling refused: {exc.message}"
        content = reply.content
        return f"model says: {content.text}" if isinstance(content, TextContent) else "model says something else"

    @mcp.tool(description="Ask the client for a name through a resolver; answer with what came back.")
    def ask_name_resolved(name: Annotated[ElicitationResult[Name], Resolve(who_asks)]) -> str:
        return f"hello {name.data.name}" if isinstance(name, AcceptedElicitation) else f"elicitation {name.action}"

    if tools == "extra":

        @mcp.tool(description="Only there when SAMPLE_TOOLS=extra.")
        def extra() -> str:
            return "extra"

    return mcp


def from_env(
    environ: Mapping[str, str],
    *,
    pid: Callable[[], int] = os.getpid,
    exit: Callable[[int], None] = os._exit,
) -> MCPServer:
    """The server `python -m tests.mcp_servers.sample` would run with `environ` as its environment."""
    return build(
        tools=environ.get("SAMPLE_TOOLS"),
        markers=environ.get("SAMPLE_MARKERS"),
        start=environ.get("SAMPLE_START"),
        pid=pid,
        exit=exit,
        environ=environ,
    )


def main() -> None:
    try:
        from_env(os.environ).run()
    except* RefusedToStart:  # its message is on stderr already; no traceback
        sys.exit(START_FAILURE_EXIT)


if __name__ == "__main__":
    main()
