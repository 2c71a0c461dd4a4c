"""GitHub REST as an MCP server (tools named as github-mcp-server): `python -m mcphub_servers.github`."""
