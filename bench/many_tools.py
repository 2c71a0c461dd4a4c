"""A generated MCP server over stdio for bench/cost.py: N tools, and with --payload two more to time results.

    python -m bench.many_tools N [--payload]        (from the repository root; the hub forks it via `launch`)

* N generated tools `tool_0000` ... : each with a one-sentence description and four parameters (a string,
  an integer with bounds, an enum, an optional boolean), roughly what a real tool declares; they answer "ok".
* --payload: `blob(size)` answers a string of `size` bytes ("x" * size), and `hold(seconds)` answers "held"
  after sleeping that long (a slow tool: the 1,000-concurrent-calls measurement).

The low-level SDK `Server` with a tool list built once: listing 1,000 tools costs the server nothing
worth measuring, so what bench/cost.py times is the hub's side.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

MAX_BLOB = 16 * 2**20  # bytes: the largest result `blob` will make (the benchmark asks for up to 1 MB)
MAX_HOLD = 60.0  # seconds: the longest `hold` will sleep (the benchmark holds for 5 s)


def generated(n: int) -> list[types.Tool]:
    return [
        types.Tool(
            name=f"tool_{i:04d}",
            description=f"Generated tool number {i}: looks a record up by name and returns a short summary.",
            input_schema={
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The record's name.", "maxLength": 200},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many."},
                    "order": {"type": "string", "enum": ["asc", "desc", "none"], "description": "Sort order."},
                    "verbose": {"type": "boolean", "description": "Include every field."},
                },
                "required": ["name", "limit", "order"],
            },
        )
        for i in range(n)
    ]


PAYLOAD = [
    types.Tool(
        name="blob",
        description="A string of `size` bytes.",
        input_schema={"type": "object", "properties": {"size": {"type": "integer", "minimum": 0, "maximum": MAX_BLOB}},
                      "required": ["size"]},
    ),
    types.Tool(
        name="hold",
        description="Answers 'held' after `seconds`.",
        input_schema={"type": "object",
                      "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_HOLD}},
                      "required": ["seconds"]},
    ),
]


def build(n: int, *, payload: bool) -> Server[Any]:
    tools = generated(n) + (PAYLOAD if payload else [])
    names = {t.name for t in tools}

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        if params.name not in names:
            text, error = f"unknown tool {params.name!r}", True
        elif params.name == "blob":
            text, error = "x" * min(int(args["size"]), MAX_BLOB), False
        elif params.name == "hold":
            await anyio.sleep(min(float(args["seconds"]), MAX_HOLD))
            text, error = "held", False
        else:
            text, error = "ok", False
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)

    return Server("many-tools", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv and not argv[0].startswith("-") else 0
    server = build(n, payload="--payload" in argv)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
