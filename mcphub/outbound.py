"""What the hub sends an MCP server must encode; a message that does not fails alone.

Every transport encodes each outbound JSON-RPC message in a task of its own (the stdio writer; the
SDK's streamable-HTTP and SSE post writers), where an encode error ends the whole connection: every
caller's call in flight fails, and the server restarts. So each message is encoded, or test-encoded the
way its transport will encode it, in the task that sends it, before it is handed over: a request that
cannot be encoded raises `Unsendable` (a 422) to its own caller; a notification or answer of the hub's
own that cannot is logged and dropped. The connection and everyone else's calls are untouched.

The invoker refuses such arguments before they get this far (`validation.sendable`); this is the
backstop for whatever slips past it, on every transport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from mcp.shared.message import SessionMessage  # the SDK's transport item type (fenced: tests/test_contracts.py)
from mcp.types import JSONRPCMessage, JSONRPCRequest

from mcphub.errors import InvalidArguments, exception_line

logger = logging.getLogger(__name__)

Encoding = Callable[[JSONRPCMessage], bytes]


class Unsendable(InvalidArguments):
    """A request that no transport could encode (422): its arguments, the only part a caller chose."""


def stdio_line(message: JSONRPCMessage) -> bytes:
    """One message as a stdio line (what the SDK's stdio client writes)."""
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def http_body(message: JSONRPCMessage) -> bytes:
    """One message as the SDK's HTTP transports POST it (`httpx2`'s `json=`: no NaN, UTF-8)."""
    data = message.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encoded(item: SessionMessage, encoding: Encoding) -> bytes | None:
    """`item` encoded with `encoding`; None for a message that is not a request and cannot be (dropped).
    Raises Unsendable for a request that cannot be."""
    message = item.message
    try:
        return encoding(message)
    except Exception as exc:  # any failure to encode is this message's alone
        if isinstance(message, JSONRPCRequest):
            logger.warning("a '%s' request could not be encoded for its MCP server (%s); refused to its caller",
                           message.method, type(exc).__name__)
            raise _unsendable(message, exc) from None
        logger.warning("dropped an outbound %s that could not be encoded (%s)", type(message).__name__,
                       type(exc).__name__)
        return None


def _unsendable(request: JSONRPCRequest, exc: Exception) -> Unsendable:
    text = exception_line(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    if "surrogates not allowed" in text:
        why = "a string holds a lone surrogate, which is not Unicode text and cannot be sent as UTF-8"
    elif isinstance(exc, RecursionError) or "depth exceeded" in text or "recursion" in text.lower():
        why = "they are nested too deeply to encode"
    else:
        why = f"they cannot be encoded as JSON ({text})"
    params = request.params or {}
    tool = params.get("name") if request.method == "tools/call" else None
    if isinstance(tool, str):
        tool = tool.encode("utf-8", "backslashreplace").decode("utf-8")
        return Unsendable(f"arguments of tool '{tool}' cannot be sent to its server: {why}",
                          [{"loc": ["body"], "msg": why}], tool=tool)
    return Unsendable(f"a '{request.method}' request cannot be sent to the server: {why}",
                      [{"loc": ["body"], "msg": why}])
