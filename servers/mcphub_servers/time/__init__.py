"""Time and timezone conversion: the two tools of the reference `mcp-server-time`, same names, arguments,
outputs and error texts. Run with `python -m mcphub_servers.time [--local-timezone ZONE]`."""
