"""What every bundled server does the same way at the MCP level, whatever its tools."""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS


def reject_unknown_tools(server: MCPServer) -> None:
    """Answer a call to an unknown tool with JSON-RPC -32602, as the spec and the reference servers
    (mcp-server-time, mcp-searxng) do; `MCPServer` by itself answers with an `isError` result."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params is not None:
            name = ctx.params.get("name")
            if isinstance(name, str) and name not in {tool.name for tool in await server.list_tools()}:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        return await call_next(ctx)

    server.middleware.append(middleware)
