"""A stdio MCP server that lists the hand-written hard schemas in tools.json, raw, exactly as written.

Standalone (imports only the SDK): the schemas travel over real stdio and through the SDK's own
validation before tests/test_schema.py turns them into OpenAPI. Run: python hard_server.py
"""

import json
from pathlib import Path
from typing import Any

import anyio
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

CASES = Path(__file__).with_name("tools.json")


def wire_tools() -> list[Tool]:
    """Every case whose input schema the protocol allows (it must say "type": "object")."""
    cases = json.loads(CASES.read_text(encoding="utf-8"))
    return [Tool.model_validate(case["tool"]) for case in cases if case["tool"]["inputSchema"].get("type") == "object"]


async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
    return ListToolsResult(tools=wire_tools())


async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(params.arguments))])


server = Server("hard-schemas", version="0.0.1", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
