"""A small real MCP server over HTTP for the hub's transport tests.

    python -m tests.mcp_servers.http_sample --transport sse|streamable-http --port P [--stateless]

Serves on 127.0.0.1:P at the SDK's default paths: `/sse` (+ `/messages/`) for SSE, `/mcp` for
streamable HTTP. Run as a separate process so a test can SIGKILL it and start it again on the same port.
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

mcp = MCPServer("http-sample", version="1.0.0")


class Sum(BaseModel):
    total: int


@mcp.tool(description="Add two integers.")
def add(a: int, b: int) -> Sum:
    return Sum(total=a + b)


@mcp.tool(description="The request headers this call arrived with (authorization and x-* only).")
def whoami(ctx: Context) -> dict[str, str | None]:
    headers = ctx.headers or {}
    return {
        "authorization": headers.get("authorization"),
        "x-region": headers.get("x-region"),
    }


@mcp.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mcp_servers.http_sample")
    parser.add_argument("--transport", choices=["sse", "streamable-http"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stateless", action="store_true", help="streamable HTTP without sessions")
    args = parser.parse_args()
    if args.transport == "sse":
        mcp.run("sse", host="127.0.0.1", port=args.port)
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port, stateless_http=args.stateless)


if __name__ == "__main__":
    main()
