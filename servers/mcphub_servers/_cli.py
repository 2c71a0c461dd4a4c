"""The command line every bundled server shares: `python -m mcphub_servers.NAME [--transport ...]`."""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """A parser with the transport options; a server adds its own options before parsing."""
    p = argparse.ArgumentParser(prog=f"python -m mcphub_servers.{name}", description=description)
    p.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="streamable-http only")
    p.add_argument("--port", type=int, default=8000, help="streamable-http only")
    return p


def run(server: MCPServer, args: argparse.Namespace) -> None:
    if args.transport == "stdio":
        server.run()
    else:
        server.run("streamable-http", host=args.host, port=args.port)
