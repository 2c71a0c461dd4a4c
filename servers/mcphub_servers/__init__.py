"""mcphub's bundled MCP servers. Each runs standalone: `python -m mcphub_servers.NAME`."""
