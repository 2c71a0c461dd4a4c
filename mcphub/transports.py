"""ServerConfig → a connected MCP `Client`.

Owns the mapping from config to transport (stdio: ours, in stdio.py; streamable HTTP / SSE: the SDK's),
how a stdio child starts (exec, or forked from the preloaded launcher), the child environment (an
allowlist of the hub's environment plus the server's own `env:`), capture of each child's stderr tagged
with its server name, and noticing when a connection's read side ends. Holds no state between
connections, retries nothing, decides nothing about restarts: the supervisor does.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import IO, Any, Protocol, Self

import anyio
import httpx2
from mcp import Client
from mcp.client import IncomingMessage, Transport
from mcp.client.sse import sse_client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage  # the SDK's transport item type (fenced: tests/test_contracts.py)
from mcp.types import INVALID_REQUEST, ErrorData, JSONRPCError, ToolListChangedNotification

from mcphub import outbound
from mcphub.backchannel import ServerRequests
from mcphub.config import HttpServer, ServerConfig, StdioServer
from mcphub.errors import exception_line
from mcphub.launcher import Launcher, LauncherUnavailable
from mcphub.stdio import Child, Spawn, exec_spawner, stdio_transport

logger = logging.getLogger(__name__)
stderr_logger = logging.getLogger("mcphub.stderr")

# What a child inherits from the hub's environment; everything else it gets from its own `env:`.
# (The SDK adds HOME, LOGNAME, PATH, SHELL, TERM and USER itself.)
CHILD_ENV_ALLOWLIST = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "NODE_PATH")
HTTP_READ_TIMEOUT = 300.0  # seconds an idle SSE / streamable-HTTP stream may stay silent
HTTP_CONNECT_TIMEOUT = 10.0  # seconds to open a TCP+TLS connection to a remote server
_PYTHON_ALIASES = ("python", "python3")

BAD_OUTPUT_REPORT_INTERVAL = 10.0  # seconds between warnings about a server's non-MCP output
STDERR_TAIL_LINES = 5  # lines of a child's stderr kept to explain a failed start
STDERR_DRAIN = 1.0  # seconds to wait for a stopped child's last stderr lines (a grandchild may hold the pipe)

OnClosed = Callable[[], None]
Item = SessionMessage | Exception  # what a transport's read stream yields: a message, or a line that was not one


def child_env(cfg: StdioServer) -> dict[str, str]:
    """The environment a stdio child gets: the allowlist, its proxy, then its own `env:` on top."""
    env = {name: os.environ[name] for name in CHILD_ENV_ALLOWLIST if name in os.environ}
    if cfg.proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = cfg.proxy
        env.setdefault("NO_PROXY", "localhost,127.0.0.1,::1")
    env.update(cfg.env)
    return env


def describe(cfg: ServerConfig) -> str:
    """A one-line, secret-free description for logs: `stdio: python -m x` or `sse: http://host/sse`."""
    if isinstance(cfg, StdioServer):
        return f"stdio: {' '.join([cfg.command, *cfg.args])}"
    return f"{cfg.transport}: {cfg.url}"


@asynccontextmanager
async def connect(
    name: str,
    cfg: ServerConfig,
    *,
    on_closed: OnClosed,
    stderr_tail: collections.deque[str] | None = None,
    on_tools_changed: Callable[[], None] | None = None,
    launcher: Launcher | None = None,
    server_requests: ServerRequests | None = None,
    auth: httpx2.Auth | None = None,
) -> AsyncIterator[Client]:
    """Open one MCP connection and yield an initialised `Client`.

    `on_closed` is called (from the transport's task) when the server's side of the connection
    ends: the stdio child exited, or the HTTP stream closed. Calls in flight then fail with
    CONNECTION_CLOSED on their own; the callback lets the supervisor notice an idle death too.
    A stdio child's last stderr lines are appended to `stderr_tail` (to explain a failed start).
    `on_tools_changed` is called when a (2025-era) server sends notifications/tools/list_changed.
    `launcher`: where `python -m MODULE` stdio servers are forked from, when it can (see `launchable`).
    `server_requests`: where the server's elicitation and sampling requests go (see backchannel.py).
    `auth`: a user's own auth on an HTTP connection (user_servers.UserAuthSource); stdio takes none.
    """
    handler = _NotificationHandler(on_tools_changed)
    callbacks = client_callbacks(server_requests)
    if isinstance(cfg, StdioServer):
        async with _stderr_pipe(name, stderr_tail) as errlog:
            stdio = stdio_transport(_spawner(cfg, launcher), stderr=errlog.fileno())
            async with Client(_watched(stdio, on_closed, name), mode=cfg.mode, cache=None,
                              message_handler=handler, **callbacks) as client:
                yield client
        return
    async with _http_transport(cfg, on_closed, auth) as transport:
        async with Client(_watched(transport, on_closed, name), mode=cfg.mode, cache=None,
                          message_handler=handler, **callbacks) as client:
            yield client


def client_callbacks(server_requests: ServerRequests | None) -> dict[str, Any]:
    """The `Client` keywords that declare elicitation and sampling and route them to `server_requests`."""
    if server_requests is None:
        return {}
    return {"elicitation_callback": server_requests.elicitation, "sampling_callback": server_requests.sampling}


class _NotificationHandler:
    """The `message_handler` of a `Client`: a (2025-era) tools/list_changed calls `on_tools_changed`."""

    def __init__(self, on_tools_changed: Callable[[], None] | None) -> None:
        self._on_tools_changed = on_tools_changed

    async def __call__(self, message: IncomingMessage) -> None:
        if self._on_tools_changed is not None and isinstance(message, ToolListChangedNotification):
            self._on_tools_changed()


def _command(cfg: StdioServer) -> str:
    # `python` means the hub's own interpreter, so `python -m mcphub_servers.x` works from a venv or a
    # container without relying on which python is first on PATH.
    return sys.executable if cfg.command in _PYTHON_ALIASES else cfg.command


def launchable(cfg: ServerConfig) -> str | None:
    """The module of a stdio server the launcher may fork (`launch: auto`, the hub's own interpreter however
    its path is spelled, `-m MODULE ...` with no interpreter options, an existing cwd, no PYTHON* in its
    `env:`), else None."""
    if not isinstance(cfg, StdioServer) or cfg.launch != "auto":
        return None
    if len(cfg.args) < 2 or cfg.args[0] != "-m" or any(name.startswith("PYTHON") for name in cfg.env):
        return None
    if cfg.cwd is not None and not os.path.isdir(cfg.cwd):
        return None  # exec says "no such directory" properly
    search_path = cfg.env.get("PATH", os.environ.get("PATH"))  # where exec looks a bare name up (_spawner's env)
    if not Launcher.is_hub_interpreter(_command(cfg), cwd=cfg.cwd, search_path=search_path):
        return None
    return cfg.args[1]


def _spawner(cfg: StdioServer, launcher: Launcher | None) -> Spawn:
    env = get_default_environment() | child_env(cfg)  # the SDK's inherited basics (PATH, HOME, ...), then ours
    by_exec = exec_spawner(_command(cfg), list(cfg.args), env, cfg.cwd)
    module = launchable(cfg)
    if launcher is None or module is None:
        return by_exec

    async def spawn(stdin: int, stdout: int, stderr: int) -> Child:
        if launcher.can_run(env):
            try:
                return await launcher.spawn(module, list(cfg.args[2:]), env=env, cwd=cfg.cwd,
                                            stdin=stdin, stdout=stdout, stderr=stderr)
            except LauncherUnavailable:
                pass  # logged by the launcher: it is gone (exec from now on) or behind (exec until it answers)
        return await by_exec(stdin, stdout, stderr)

    return spawn


@asynccontextmanager
async def _http_transport(cfg: HttpServer, on_closed: OnClosed,
                          auth: httpx2.Auth | None = None) -> AsyncIterator[Transport]:
    timeout = httpx2.Timeout(HTTP_READ_TIMEOUT, connect=HTTP_CONNECT_TIMEOUT)
    if cfg.transport == "sse":

        def factory(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                headers=headers, timeout=timeout, auth=auth, proxy=cfg.proxy, follow_redirects=True
            )

        yield _WithRead(sse_client(
            cfg.url,
            headers=dict(cfg.headers),
            timeout=HTTP_CONNECT_TIMEOUT,
            sse_read_timeout=HTTP_READ_TIMEOUT,
            httpx_client_factory=factory,
            auth=auth,
        ), _ReadStream, _HttpWrite)
        return

    # Requests whose answer said "no such session": the SDK reports each to its caller as some error
    # (its text varies by server), and `_SessionGoneRead` turns that into one recognisable error.
    stale: set[Any] = set()

    async def notice_lost_session(response: httpx2.Response) -> None:
        # A 400 or 404 to a request that carries a session id, saying the server no longer knows the
        # session (it restarted, or expired it). The SDK would keep sending the dead id; treat it as
        # the end of this connection. A request nobody waits on (the GET stream, a notification)
        # ends it here; a request's caller first gets its error, then the connection ends.
        request = response.request
        if response.status_code not in (400, 404) or request.method == "DELETE":
            return
        if "mcp-session-id" not in request.headers:
            return
        if not _says_session_gone(response.status_code, await _error_body(response)):
            return
        request_id = _request_id(request)
        if request_id is None:
            on_closed()
        else:
            stale.add(request_id)

    async with httpx2.AsyncClient(
        headers=dict(cfg.headers), timeout=timeout, proxy=cfg.proxy, follow_redirects=True, auth=auth,
        event_hooks={"response": [notice_lost_session]},
    ) as http:
        yield _WithRead(streamable_http_client(cfg.url, http_client=http),
                        lambda read: _SessionGoneRead(read, stale, on_closed), _HttpWrite)


# Words that, next to "session", say a server no longer knows the session id it was sent. Measured:
# the Python SDK answers 404 `Session not found` (-32600), the TypeScript SDK 404 `Session not found`
# (-32001), and TypeScript servers built on its example (server-everything) 400 `Bad Request: No
# valid session ID provided` (-32000, with no `id`, so the SDK reports only "Server returned an error
# response"). Other 400s (bad arguments, `Server not initialized`) say nothing about the session.
_SESSION_GONE_WORDS = re.compile(r"not found|no valid|invalid|unknown|expired|terminated|missing|required", re.I)
ERROR_BODY_LIMIT = 64 * 1024  # bytes of a 400/404 answer read to see whether it is about the session
SESSION_GONE = "Session terminated"  # what the SDK itself reports for a bare 404 to a request with a session


async def _error_body(response: httpx2.Response) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > ERROR_BODY_LIMIT):
        return b""
    try:
        body = await response.aread()  # kept by the response: the SDK reads the same bytes after us
    except httpx2.HTTPError:
        return b""
    return body[:ERROR_BODY_LIMIT]


def _says_session_gone(status: int, body: bytes) -> bool:
    """Whether a 400/404 answer to a request that carried a session id says the session is unknown.

    404 is the spec's answer for that, with or without a body; only a JSON-RPC error about something
    else (e.g. -32601 for a method) is not. A 400 counts only when its text says so."""
    message = _jsonrpc_error_message(body)
    if message is None:
        if status == 404:
            return True
        message = body[:1000].decode("utf-8", "replace")
    return "session" in message.lower() and _SESSION_GONE_WORDS.search(message) is not None


def _jsonrpc_error_message(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _request_id(request: httpx2.Request) -> Any:
    """The JSON-RPC id of the request a POST carried, or None (a GET, a notification)."""
    if request.method != "POST":
        return None
    try:
        data = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return None
    return data.get("id") if isinstance(data, dict) and "method" in data else None


class _Receiver(Protocol):
    """What `_ReadStream` uses of the read stream it wraps (a transport's, typed by the SDK as its
    ReadStream protocol)."""

    async def receive(self) -> Item: ...

    async def aclose(self) -> None: ...


class _Sender(Protocol):
    """A transport's write stream, as `_WithRead` passes it on: the SDK's WriteStream protocol."""

    async def send(self, item: SessionMessage, /) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


class _ReadStream:
    """Wraps a transport's read stream; a subclass overrides `receive`. The rest of the SDK's
    ReadStream protocol is delegation, `last_context` (which the SDK reads with getattr) included."""

    def __init__(self, inner: _Receiver) -> None:
        self._inner = inner

    async def receive(self) -> Item:
        return await self._inner.receive()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:  # e.g. `last_context`
        return getattr(self._inner, name)


class _HttpWrite:
    """An SDK HTTP transport's write stream, with each message test-encoded the way its post writer will
    encode it, in the sender's task (see outbound.py): one that cannot be encoded fails that send alone,
    instead of the writer's task and with it the connection."""

    def __init__(self, inner: _Sender) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        if outbound.encoded(item, outbound.http_body) is not None:
            await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _WithRead:
    """Wraps a transport context manager, passing the read stream it yields through `wrap` (and the write
    stream through `wrap_write`, when given)."""

    def __init__(self, transport: Transport, wrap: Callable[[_Receiver], _ReadStream],
                 wrap_write: Callable[[_Sender], _Sender] | None = None) -> None:
        self._transport = transport
        self._wrap = wrap
        self._wrap_write = wrap_write

    async def __aenter__(self) -> tuple[_ReadStream, _Sender]:
        read, write = await self._transport.__aenter__()
        return self._wrap(read), write if self._wrap_write is None else self._wrap_write(write)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._transport.__aexit__(exc_type, exc, tb)


class _SessionGoneRead(_ReadStream):
    """The streamable-HTTP read stream, with the answer to a request the server refused for a stale
    session (its id in `stale`) rewritten to INVALID_REQUEST `Session terminated` (as the SDK reports a
    spec-conforming bare 404); then the connection ends. The request did not run: it may be resent."""

    def __init__(self, inner: _Receiver, stale: set[Any], on_closed: OnClosed) -> None:
        super().__init__(inner)
        self._stale = stale
        self._on_closed = on_closed

    async def receive(self) -> Item:
        item = await self._inner.receive()
        if not isinstance(item, SessionMessage):
            return item
        message = item.message
        if isinstance(message, JSONRPCError) and message.id in self._stale:
            self._stale.discard(message.id)
            error = ErrorData(code=INVALID_REQUEST, message=SESSION_GONE)
            item = SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=error), metadata=item.metadata)
            self._on_closed()  # sets an event: the connection ends after the caller has its answer
        return item


def _watched(transport: Transport, on_closed: OnClosed, name: str) -> _WithRead:
    """`transport`, with the end of its read stream calling `on_closed`."""
    return _WithRead(transport, lambda read: _WatchedRead(read, on_closed, name))


class _WatchedRead(_ReadStream):
    """A read stream that reports EOF, and rate-limits warnings about lines that are not MCP."""

    def __init__(self, inner: _Receiver, on_closed: OnClosed, name: str) -> None:
        super().__init__(inner)
        self._on_closed = on_closed
        self._name = name
        self._reported = False
        self._bad_items = 0
        self._last_report = -math.inf

    def _report(self) -> None:
        if not self._reported:
            self._reported = True
            self._on_closed()

    async def receive(self) -> Item:
        try:
            item = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._report()
            raise
        if isinstance(item, Exception):
            self._bad_items += 1
            now = time.monotonic()
            if now - self._last_report >= BAD_OUTPUT_REPORT_INTERVAL:
                logger.warning("'%s' sent something that is not MCP (%d since the last report): %s",
                               self._name, self._bad_items, exception_line(item))
                self._last_report, self._bad_items = now, 0
        return item


@asynccontextmanager
async def _stderr_pipe(name: str, tail: collections.deque[str] | None) -> AsyncIterator[IO[str]]:
    """A file for the child's stderr; each line it writes is logged as `[name] line`. On exit, waits
    (at most STDERR_DRAIN) until every line the child wrote is in `tail`: a failed start is explained
    by its last line, which the reader thread may not have read yet when the child has just exited."""
    read_fd, write_fd = os.pipe()
    reader = threading.Thread(target=_pump_stderr, args=(name, read_fd, tail), name=f"stderr:{name}", daemon=True)
    reader.start()
    errlog = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
    try:
        yield errlog
    finally:
        errlog.close()  # the child (now exited) holds the only other write end → the reader sees EOF
        with anyio.CancelScope(shield=True):  # a grandchild may keep the pipe open: the wait is bounded
            await anyio.to_thread.run_sync(reader.join, STDERR_DRAIN, abandon_on_cancel=True)


def _pump_stderr(name: str, fd: int, tail: collections.deque[str] | None) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            line = line.rstrip()
            if line:
                stderr_logger.info("[%s] %s", name, line, extra={"mcp_server": name})
                if tail is not None:
                    tail.append(line)
