"""arXiv search over the export API (Atom), as an MCP server: `python -m mcphub_servers.arxiv`."""
