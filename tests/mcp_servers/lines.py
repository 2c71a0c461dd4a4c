"""What the hand-written JSON-RPC stdio servers here share: one JSON message per line, each way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def result(request_id: Any, value: dict[str, Any]) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": value})


def method_not_found(request_id: Any, method: object) -> None:
    """-32601: what these servers answer a method they do not have (`server/discover` among others, so a
    2026 client falls back to `initialize`)."""
    send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"method not found: {method}"}})


def serve(handle: Callable[[dict[str, Any]], None]) -> None:
    """Hand each JSON object read from stdin, one per line, to `handle`; skip what is not one."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            handle(message)
