"""Web search through a SearXNG instance (`SEARXNG_URL`), with mcp-searxng's `searxng_web_search` tool.
Run with `python -m mcphub_servers.searxng`."""
