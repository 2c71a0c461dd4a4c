"""The HTTP/1.1 protocol uvicorn runs for the hub: httptools, with a response's writes combined.

uvicorn writes a response's status line and headers, then its body, as two `transport.write` calls.
On a connection that is not backed up, each is a `send` of its own: two system calls and two TCP
segments, and a client that wakes on the first to find half a response. A tool call's whole answer is
one JSONResponse, so on loopback that second write was one seventh of the hub's CPU per call. Here the
writes a handler makes in one turn of the event loop leave as one `send`, at the end of that turn.

Everything else is uvicorn's `HttpToolsProtocol` unchanged; `http_protocol()` says which class to hand
`uvicorn.Config(http=...)`, falling back to uvicorn's own choice when httptools is not installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools missing: uvicorn serves with h11, writes uncombined
    HttpToolsProtocol = None


class _CombinedWrites:
    """A transport whose writes within one event-loop turn leave as one write at the end of it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()  # a response sent just before `connection: close` still leaves, in order
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self._transport, name)


if HttpToolsProtocol is not None:

    class CombiningHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = _CombinedWrites(transport, self.loop)


def http_protocol() -> Any:
    """What to pass as `uvicorn.Config(http=...)`."""
    return "auto" if HttpToolsProtocol is None else CombiningHttpToolsProtocol
