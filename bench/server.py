"""The benchmark's MCP server over stdio: `add`, a trivial async tool, and `crunch`, the same answer after
some CPU-bound work. `python bench/server.py`.

No output schema (structured_output=False), so the SDK client does no output validation on either
path: what is measured is transport, hub and JSON-RPC, not the tool.
"""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("bench", version="1.0.0")


@mcp.tool(description="Add two integers.", structured_output=False)
async def add(a: int, b: int) -> str:
    return str(a + b)


@mcp.tool(description="Add two integers after `work` rounds of pure-Python arithmetic.", structured_output=False)
async def crunch(a: int, b: int, work: int) -> str:
    # CPU that holds the GIL and the server's event loop: one server process does one of these at a
    # time, which is what `replicas:` is for.
    sum(i * i for i in range(work))
    return str(a + b)


if __name__ == "__main__":
    mcp.run()
