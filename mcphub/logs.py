"""Logging set-up for the command line. Library modules only get loggers; this is called from cli.py.

One event, one line: `LineFormatter` escapes the control characters of every value a log call
interpolates (`%s` arguments: a path a caller sent, a tool name, an exception's message), so a caller
cannot end a line and write a forged one after it (`POST /x%0A2026-... INFO mcphub.access: ...`), nor
hide text with a NUL, a terminal escape or a bidi override. What is left are the hub's own newlines
(a multi-line message template, a traceback): every line after a record's first is indented, so only
a record's first line starts at column 0, and no text of a caller's, wherever it hides, can pass for
one.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONTINUATION = "\n    "  # a record's second and later lines (a traceback, a multi-line message) are indented
# Third-party loggers that narrate every request at INFO (httpx2 logs each HTTP call, the SDK each
# session id): quiet by default so the hub's own lifecycle lines stay readable.
NOISY = ("httpx2", "httpx", "httpcore2", "httpcore", "mcp", "uvicorn.access")

# C0 and C1 controls and DEL; line and paragraph separators; bidi embeddings, overrides and isolates; lone
# surrogates (no encoding can write them: a line holding one would be lost as a "Logging error")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\\x0a`, `\\u202e`): one line, as sent."""
    return _UNSAFE.sub(_escaped, text) if _UNSAFE.search(text) else text


def _safe_argument(value: object) -> object:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, int | float | bool) or value is None:
        return value  # %d / %.1f keep working
    return printable(str(value))  # an exception, a path, a list: its text, escaped


class LineFormatter(logging.Formatter):
    """A Formatter whose records cannot be forged by what they quote (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if args:
            safe: tuple[object, ...] | Mapping[str, object]
            if isinstance(args, Mapping):
                safe = {key: _safe_argument(value) for key, value in args.items()}
            else:
                safe = tuple(_safe_argument(value) for value in args)
            record.args = safe
        try:
            text = super().format(record)
        finally:
            record.args = args  # other handlers (structured ones) see the record as it was logged
        return CONTINUATION.join(printable(line) for line in text.split("\n"))


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # The SDK logs every non-JSON line a server prints to stdout at ERROR, with a traceback; the hub
    # reports those itself, once per burst and tagged with the server (transports._WatchedRead).
    logging.getLogger("mcp.client.stdio").setLevel(logging.CRITICAL)


def plural(count: int, noun: str) -> str:
    """`1 tool`, `2 tools`: counts in messages and log lines."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
