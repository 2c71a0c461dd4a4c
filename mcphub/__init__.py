"""mcphub: a supervised MCP tool hub."""

__version__ = "0.1.0"
