"""The benchmark's MCP server: one trivial async tool over stdio. `python bench/server.py`.

No output schema (structured_output=False), so the SDK client does no output validation on either
path: what is measured is transport, hub and JSON-RPC, not the tool.
"""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("bench", version="1.0.0")


@mcp.tool(description="Add two integers.", structured_output=False)
async def add(a: int, b: int) -> str:
    return str(a + b)


if __name__ == "__main__":
    mcp.run()
