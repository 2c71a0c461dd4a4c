"""Logging set-up for the command line. Library modules only get loggers; this is called from cli.py."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Third-party loggers that narrate every request at INFO (httpx2 logs each HTTP call, the SDK each
# session id): quiet by default so the hub's own lifecycle lines stay readable.
NOISY = ("httpx2", "httpx", "httpcore2", "httpcore", "mcp", "uvicorn.access")


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # The SDK logs every non-JSON line a server prints to stdout at ERROR, with a traceback; the hub
    # reports those itself, once per burst and tagged with the server (transports._WatchedRead).
    logging.getLogger("mcp.client.stdio").setLevel(logging.CRITICAL)
