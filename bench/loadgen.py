"""A lean HTTP/1.1 load generator for the benchmark's HTTP targets (the hub, mcpo).

Why lean: like wrk, the apparatus must not be the bottleneck. On a 2-core machine the load generator, the
proxy under test and its MCP server share the CPU, so each millisecond the generator spends is one the
proxy does not get. A general-purpose client (httpx2) costs about 0.6 ms of CPU per call here, enough to
make the hub look about 40% slower than it is; this one costs about 0.1 ms. The direct target is not driven
by this: it is the SDK's `Client`, because what a direct session costs is the ceiling being compared with.

It does only what the benchmark needs, and checks all of it:

* HTTP/1.1 keep-alive, one connection per concurrent caller, opened before timing starts;
* POST of a small JSON body; the request bytes are formatted once, except for the body and its length;
* the response: status line, headers, and a body framed by Content-Length or `Transfer-Encoding: chunked`
  (anything else is refused with `LoadError`, as is a 1xx or an HTTP/1.0 answer);
* every wait is bounded: connecting by CONNECT_TIMEOUT, each call by CALL_TIMEOUT; bodies and headers by size.

Whether an answer is the right one is the caller's check (bench/run.py: `{"a": i, "b": 1}` → `i + 1`, so a
response given to the wrong request is caught). Not here: TLS, redirects, proxies, compression, pipelining;
and only loopback addresses are accepted, because the benchmark's traffic never leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

IDLE_REOPEN = 2.0  # seconds idle after which refresh() reopens a connection (uvicorn closes one idle for 5 s)
CONNECT_TIMEOUT = 10.0  # seconds to open a loopback connection: only a wedged server takes longer
CALL_TIMEOUT = 60.0  # seconds for one request/response: a busy 2-core box answers within ~1 s at c=50
MAX_HEAD = 64 * 1024  # bytes of status line + headers (asyncio's StreamReader limit)
MAX_BODY = 8 * 2**20  # bytes of body: the benchmark's answers are a few bytes
MAX_TRAILERS = 64  # trailer lines after a chunked body
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LoadError(Exception):
    """A response the benchmark cannot accept: bad framing, a dropped connection, a timeout, a wrong answer."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-cased names; a repeated header keeps its last value
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; opened on first use, and again after the server closes it
    (uvicorn closes a connection idle for 5 s, as the benchmark's may be while other targets run)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.opened = 0  # times connected
        self._used = 0.0  # time.monotonic() of the last open or response
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def usable(self) -> bool:
        """Open, and not closed by the server (whose EOF the event loop has already read)."""
        return self._reader is not None and not self._reader.at_eof()

    @property
    def fresh(self) -> bool:
        """Usable, and used within IDLE_REOPEN: not about to be closed by the server's keep-alive timeout
        (which would race the next request: the server closes as it arrives, and the call fails)."""
        return self.usable and time.monotonic() - self._used < IDLE_REOPEN

    async def open(self) -> None:
        self.close()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        self.opened += 1
        self._used = time.monotonic()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, data: bytes) -> Response:
        """Send one complete request and read its response. Any failure closes the connection."""
        if not self.usable:
            await self.open()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(data)  # one small request in flight per connection: no backpressure to drain
            response = await _read_response(self._reader)
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise LoadError(f"{self.host}:{self.port}: {type(e).__name__}: {e}") from e
        except BaseException:  # LoadError, timeout, cancellation: the stream is at an unknown position
            self.close()
            raise
        if response.headers.get(b"connection", b"").lower() == b"close":
            self.close()
        self._used = time.monotonic()
        return response


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")  # IncompleteReadError (an EOFError) if the server hangs up
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if version != b"HTTP/1.1":
        raise LoadError(f"expected an HTTP/1.1 status line, got {lines[0][:80]!r}")
    status = int(rest[:3])
    if status < 200:
        raise LoadError(f"informational response {status} is not supported")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise LoadError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if b"transfer-encoding" in headers:
        if headers[b"transfer-encoding"].lower() != b"chunked":
            raise LoadError(f"unsupported Transfer-Encoding {headers[b'transfer-encoding']!r}")
        body = await _read_chunked(reader)
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if not 0 <= length <= MAX_BODY:
            raise LoadError(f"Content-Length {length} outside 0..{MAX_BODY}")
        body = await reader.readexactly(length)
    elif status in (204, 304):
        body = b""
    else:
        raise LoadError(f"HTTP {status} with neither Content-Length nor chunked encoding (a close-delimited body)")
    return Response(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)  # ValueError if not hex
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise LoadError(f"chunked body over {MAX_BODY} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise LoadError("chunk not followed by CRLF")
    for _ in range(MAX_TRAILERS):
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return b"".join(parts)
    raise LoadError(f"more than {MAX_TRAILERS} trailer lines after a chunked body")


class JSONPoster:
    """POSTs JSON bodies to one URL over `concurrency` keep-alive connections, one per concurrent caller.

        async with JSONPoster("http://127.0.0.1:8000/bench/add", concurrency=10, api_key=key) as poster:
            response = await poster.post(b'{"a": 1, "b": 1}')

    At most `concurrency` posts may be in flight at once; each takes a connection of its own and gives it
    back when its response is read.
    """

    def __init__(self, url: str, *, concurrency: int, api_key: str | None = None, timeout: float = CALL_TIMEOUT,
                 headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK or parts.port is None:
            raise ValueError(f"{url!r}: the load generator speaks plain http to a loopback host:port only")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.timeout = timeout
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        auth += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n{auth}Content-Length: "
        ).encode("latin-1")
        self._idle = [Connection(parts.hostname, parts.port) for _ in range(concurrency)]
        self._all = list(self._idle)

    async def __aenter__(self) -> JSONPoster:
        try:
            for connection in self._all:
                await connection.open()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._all:
            connection.close()

    async def refresh(self) -> int:
        """Reopen the connections the server has closed, or may close any moment, so that a measurement
        does not time it; how many."""
        stale = [c for c in self._idle if not c.fresh]
        for connection in stale:
            await connection.open()
        return len(stale)

    @property
    def reconnects(self) -> int:
        """Connections opened again after the first time, by `refresh` or on a call."""
        return sum(c.opened for c in self._all) - len(self._all)

    async def post(self, body: bytes) -> Response:
        if not self._idle:
            raise RuntimeError(f"more than {len(self._all)} posts in flight: one connection per concurrent caller")
        connection = self._idle.pop()
        try:
            async with asyncio.timeout(self.timeout):
                return await connection.request(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
        except TimeoutError:
            raise LoadError(f"no complete response within {self.timeout:g}s") from None
        finally:
            self._idle.append(connection)


def add_call(poster: JSONPoster, *, work: int | None = None) -> Callable[[int], Awaitable[None]]:
    """The benchmark's call i: POST `{"a": i, "b": 1}` (plus `"work": N` for the CPU-bound tool), expect
    200 and `i + 1`: its own answer, not another's."""
    extra = b"" if work is None else b', "work": %d' % work

    async def call(i: int) -> None:
        response = await poster.post(b'{"a": %d, "b": 1%s}' % (i, extra))
        if response.status != 200:
            raise LoadError(f"call {i}: HTTP {response.status} {response.body[:200]!r}")
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = response.body
        if answer != i + 1:
            raise LoadError(f"call {i}: expected {i + 1}, got {response.body[:200]!r}")

    return call


MCP_HEADERS = {  # what a 2026-07-28 client sends with a tools/call (the SDK's client sends the same)
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "add",
}
_MCP_META = b'"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", ' \
            b'"io.modelcontextprotocol/clientCapabilities": {}}'


def mcp_add_call(poster: JSONPoster) -> Callable[[int], Awaitable[None]]:
    """The same call i through an MCP endpoint (`JSONPoster(..., headers=MCP_HEADERS)`): a 2026-07-28
    JSON-RPC `tools/call` of `add` with id i, expect its own id back and the text `i + 1`."""

    async def call(i: int) -> None:
        body = b'{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": {"name": "add", ' \
               b'"arguments": {"a": %d, "b": 1}, %s}}' % (i, i, _MCP_META)
        response = await poster.post(body)
        if response.status != 200:
            raise LoadError(f"MCP call {i}: HTTP {response.status} {response.body[:200]!r}")
        try:
            answer = json.loads(response.body)
            text = answer["result"]["content"][0]["text"]
            ok = answer["id"] == i and text == str(i + 1) and not answer["result"].get("isError")
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            raise LoadError(f"MCP call {i}: expected id {i} and text {i + 1}, got {response.body[:200]!r}")

    return call
