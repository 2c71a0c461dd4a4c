"""One HTTP connection's limits: what only the connection can enforce, before the app sees a request.

uvicorn's httptools protocol (the hub's HTTP/1.1 parser) has no limit on the size or number of request
headers and no read timeouts: a connection that sends nothing, half a request line, headers a byte at
a time, or a body that stalls stays open for as long as the client likes (uvicorn's own
`timeout_keep_alive` starts only once a response has been sent). `protocol(limits)` is the class
uvicorn builds each connection with (`uvicorn.Config(http=...)`, public): httptools' protocol plus

    hub.limits.max_header_bytes  request line + headers of one request, counted as the bytes arrive
                                 (before httptools gathers a huge header in memory) → 431, closed
    hub.limits.max_headers       header lines of one request → 431, closed
    hub.limits.header_timeout    seconds from the connection (or a new request's first byte) to the end
                                 of its headers → 408 and closed; a connection that sent nothing is closed
    hub.limits.body_timeout      seconds a request body may stall between two packets → closed (the app
                                 sees the client leave: a tool call is audited 499). Time while the hub
                                 itself is not reading (uvicorn pauses reading while the app has not taken
                                 what arrived) does not count.

What uvicorn offers instead, and why not: `h11_max_incomplete_event_size` limits headers for the h11
parser only (the hub runs httptools: twice the throughput); `timeout_keep_alive` (kept at its 5 s)
covers only the idle time after a response; `limit_concurrency` answers every caller a plain-text 503
once one client holds enough connections, which is the outcome to avoid (per-caller limits live in
the invoker: hub.limits.max_concurrent_calls).

The limits are read from the running config for each new connection, so a reload applies to the next
connection. Every answer is in the one error shape (an invalid request too: uvicorn's plain-text 400).

Fenced (tests/test_contracts.py): this subclasses uvicorn's `HttpToolsProtocol` and relies on its
`connection_made`, `data_received`, `connection_lost`, the parser callbacks `on_message_begin`,
`on_header`, `on_headers_complete`, `on_message_complete`, on a parser callback that raises ending up in
`send_400_response(msg)`, and on its `transport`, `flow.read_paused`, `loop` and `cycle.response_complete`
attributes.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from asyncio import TimerHandle
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mcphub.config import HubLimits
from mcphub.errors import BadRequest, HeadersTooLarge, HubError, RequestTimeout

logger = logging.getLogger(__name__)

# seconds a refused connection's further input is read and dropped before it is closed: closing a socket
# with unread input sends a reset, which can make the client lose the answer it was sent (lingering close)
LINGER = 2.0


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; uvicorn then calls send_400_response."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    limits: Callable[[], HubLimits] = HubLimits  # replaced per listener by `protocol(...)`

    _limits: HubLimits
    _refusal: HubError | None = None
    _header_timer: TimerHandle | None = None
    _body_timer: TimerHandle | None = None
    _in_headers = True  # until a request's headers are complete (also before its first byte)
    _in_body = False  # from a request's headers to the end of its body
    _begun = False  # a request has begun on this connection since the last one's headers ended
    _header_bytes = 0  # bytes received while a request's headers were incomplete
    _headers = 0
    _lingering = False  # refused: the answer is sent, input is dropped until LINGER ends
    _parsed_bytes = 0  # request line and headers of the request being parsed, as the parser hands them over
    _last_body = 0.0  # loop time of the last packet while a body was incomplete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._limits = type(self).limits()
        self._header_timer = self.loop.call_later(self._limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._lingering or self.transport.is_closing():
            return
        if self._in_headers and self._header_bytes:
            if self._header_bytes > self._limits.max_header_bytes:  # a request still arriving
                self._refuse(self._too_large())
                return
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self._limits.header_timeout, self._headers_late)
        if self._in_body:
            self._last_body = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self._limits.body_timeout, self._body_late)

    # ------------------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        self._headers = self._parsed_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self._limits.max_headers:
            self._refusal = HeadersTooLarge(
                f"more than {self._limits.max_headers} request headers (hub.limits.max_headers)")
            raise _Refused
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        """Header bytes a packet brought whole (a request that arrived in one piece)."""
        self._parsed_bytes += size
        if self._parsed_bytes > self._limits.max_header_bytes:
            self._refusal = self._too_large()
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_headers, self._begun, self._header_bytes = False, False, 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_headers = True  # the next request's bytes, if any, are headers
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        refusal, self._refusal = self._refusal, None
        self._refuse(refusal or BadRequest(f"invalid HTTP request: {msg.rstrip('.')}"))

    # ----------------------------------------------------------------------------------- timeouts

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_headers or self._lingering or self.transport.is_closing():
            return
        if not self._begun and not self._header_bytes:
            self.transport.close()  # connected and said nothing: there is no request to answer
            return
        if self._answering():  # a pipelined request behind one still being answered: its turn has not come
            self._header_timer = self.loop.call_later(self._limits.header_timeout, self._headers_late)
            return
        self._refuse(RequestTimeout(f"request headers not complete within {self._limits.header_timeout:g}s "
                                    "(hub.limits.header_timeout)"))

    def _body_late(self) -> None:
        self._body_timer = None
        if not self._in_body or self._lingering or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the hub is not reading (the app has not taken what arrived): not a stall
            self._last_body = now
        idle = now - self._last_body
        if idle < self._limits.body_timeout:
            self._body_timer = self.loop.call_later(self._limits.body_timeout - idle, self._body_late)
            return
        logger.info("closing a connection whose request body stalled for %.1fs (hub.limits.body_timeout)", idle)
        self.transport.close()

    # -------------------------------------------------------------------------------------- helpers

    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(f"request headers of more than {self._limits.max_header_bytes} bytes "
                               "(hub.limits.max_header_bytes)")

    def _refuse(self, error: HubError) -> None:
        """Answer `error` in the one error shape and close the connection (after LINGER, or when the client does)."""
        self._cancel_timers()
        if self._answering():  # an answer to an earlier request is being written: ours would corrupt it
            self.transport.close()
            return
        body = json.dumps(error.body(), separators=(",", ":")).encode()
        phrase = http.HTTPStatus(error.status_code).phrase
        head = (f"HTTP/1.1 {error.status_code} {phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode("ascii") + body)
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then EOF, and hangs up itself
        self._header_timer = self.loop.call_later(LINGER, self.transport.close)

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def protocol(limits: Callable[[], HubLimits]) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`: each connection reads `limits()` when it opens."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": staticmethod(limits)})
