"""A hub for a test, in the test's own event loop.

In-process by default: the supervisor connects to our test MCP servers (IN_PROCESS_SERVERS) through the
SDK's in-memory streams via its `connect=` seam, and the app is called through `httpx2.ASGITransport`.
Anything else (third-party servers, remote HTTP servers, test servers that are about the process, e.g.
`garbage`, `procinfo`) still gets the real `transports.connect`.
`running_hub(..., in_process=False)`: real stdio child processes and uvicorn on 127.0.0.1, for the
tests where the process or the socket is the point (kills, hang-ups, streaming, the stdio wire).

The ASGI transport buffers whole responses and never delivers a client hang-up (`http.disconnect`)
the way uvicorn does: tests about those pass `listen=True` (uvicorn on a socket) or `in_process=False`.
"""

from __future__ import annotations

import collections
import importlib
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from starlette.applications import Starlette

from mcphub import state, transports
from mcphub.app import create_app
from mcphub.config import HubConfig, ServerConfig, StdioServer, parse_config
from mcphub.invoker import Invoker
from mcphub.oauth import OAuth, oauth_for
from mcphub.serve import ServeOptions, _Server, plan, running, uvicorn_config
from mcphub.supervisor import Supervisor
from tests.helpers import REPO, free_port

logger = logging.getLogger(__name__)

HUB_START_TIMEOUT = 30.0  # seconds: servers start in parallel; python ones take ~0.5 s each
CLOSE_GRACE = 2.0  # seconds an in-process server gets to end after its client closed (what stdio gives a child)
IN_PROCESS_BASE_URL = "http://hub"  # the ASGI transport's base URL: nothing listens there
TEST_SERVERS = "tests.mcp_servers."
# test servers that can run in-process (a `from_env`); the others are about the process or the wire
# (garbage: stdio framing; procinfo: how a process starts; http_sample: an HTTP server)
IN_PROCESS_SERVERS = frozenset({"tests.mcp_servers.sample"})
FIRST_IN_PROCESS_PID = 4_000_000  # identities of in-process servers: above any real pid (pid_max ≤ 2^22)

_pids = itertools.count(FIRST_IN_PROCESS_PID)

def module_server(module: str, **overrides: Any) -> dict[str, Any]:
    """Config of a test MCP server `tests/mcp_servers/<module>.py` over stdio."""
    server: dict[str, Any] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", f"{TEST_SERVERS}{module}"],
        "cwd": str(REPO),
    }
    server.update(overrides)
    return server


def sample_server(**overrides: Any) -> dict[str, Any]:
    """Config of the test MCP server `tests/mcp_servers/sample.py` over stdio."""
    return module_server("sample", **overrides)


def config_of(raw: dict[str, Any] | str) -> HubConfig:
    return parse_config(raw if isinstance(raw, str) else yaml.safe_dump(raw), source="test config")


# ------------------------------------------------------------------------------ in-process servers


class ServerFactory(Protocol):
    """`from_env` of a test server module: the server `python -m MODULE` would run with `environ`."""

    def __call__(self, environ: Mapping[str, str], *, pid: Callable[[], int],
                 exit: Callable[[int], None]) -> MCPServer: ...


def in_process_factory(cfg: ServerConfig) -> ServerFactory | None:
    """The `from_env` of the test server module a stdio config runs (`python -m tests.mcp_servers.X`),
    or None when the config runs anything else."""
    if not isinstance(cfg, StdioServer) or len(cfg.args) != 2 or cfg.args[0] != "-m":
        return None
    if cfg.command not in (sys.executable, "python", "python3") or cfg.args[1] not in IN_PROCESS_SERVERS:
        return None
    factory: ServerFactory = importlib.import_module(cfg.args[1]).from_env
    return factory


@asynccontextmanager
async def connect(
    name: str,
    cfg: ServerConfig,
    *,
    on_closed: Callable[[], None],
    stderr_tail: collections.deque[str] | None = None,
    on_tools_changed: Callable[[], None] | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    """`Supervisor(connect=...)`: our test servers in this process, anything else as `transports.connect`.

    An in-process server is built fresh for each connection, as each process would be, with an identity
    of its own (`pid`), and runs over the SDK's in-memory streams in the mode the config asks for, the
    same JSON-RPC messages a stdio child gets. Its `exit` ends the connection the way a dying process does:
    the server stops and its side of the stream closes, so `on_closed` is called and calls in flight get
    CONNECTION_CLOSED. An exception out of the server (e.g. refusing to start) goes to `stderr_tail`,
    as a child's last stderr line would, and ends the connection the same way."""
    factory = in_process_factory(cfg)
    if factory is None:
        async with transports.connect(name, cfg, on_closed=on_closed, stderr_tail=stderr_tail,
                                      on_tools_changed=on_tools_changed, **options) as client:
            yield client
        return

    assert isinstance(cfg, StdioServer)
    async with _in_memory(name, cfg, factory, stderr_tail) as streams:
        # the transport wrappers stdio connections get: EOF calls on_closed, notifications reach on_tools_changed
        async with Client(transports._watched(_Ready(streams), on_closed, name), mode=cfg.mode, cache=None,
                          message_handler=transports._NotificationHandler(on_tools_changed),
                          **transports.client_callbacks(options.get("server_requests"))) as client:
            yield client


@asynccontextmanager
async def _in_memory(name: str, cfg: StdioServer, factory: ServerFactory,
                     stderr_tail: collections.deque[str] | None) -> AsyncIterator[tuple[Any, Any]]:
    async with create_client_server_memory_streams() as ((client_read, client_write), (server_read, server_write)):
        alive = anyio.CancelScope()
        ended = anyio.Event()
        identity = next(_pids)
        server = factory(dict(cfg.env), pid=lambda: identity, exit=lambda code: alive.cancel())

        async def serve() -> None:
            lowlevel = server._lowlevel_server
            try:
                with alive:
                    await lowlevel.run(server_read, server_write, lowlevel.create_initialization_options())
            except Exception as exc:  # a child would die with this on its stderr
                logger.warning("in-process server '%s' ended with an exception", name, exc_info=True)
                if stderr_tail is not None:
                    stderr_tail.append(str(exc) or type(exc).__name__)
            finally:
                ended.set()
                await server_write.aclose()  # EOF to the client: the process is gone
                await server_read.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                yield client_read, client_write
            finally:
                await client_write.aclose()  # EOF to the server: its stdin closed
                with anyio.move_on_after(CLOSE_GRACE):
                    await ended.wait()
                alive.cancel()


class _Ready:
    """Streams that exist already, as the transport context manager `Client` takes."""

    def __init__(self, streams: tuple[Any, Any]) -> None:
        self._streams = streams

    async def __aenter__(self) -> tuple[Any, Any]:
        return self._streams

    async def __aexit__(self, *exc: object) -> None:
        return None


# ------------------------------------------------------------------------------------------ the hub


def make_app(supervisor: Supervisor, config: HubConfig, api_keys: tuple[str, ...] = (),
             backend: httpx2.AsyncBaseTransport | None = None, oauth: OAuth | None = None) -> Starlette:
    """The app over a running supervisor: the one place tests build it. `backend`: the runner's transport
    to its model backend (default: the network)."""
    return create_app(Invoker(config, lambda: supervisor.servers, api_keys=api_keys, oauth=oauth),
                      backend_transport=backend)


def core(hub: RunningHub) -> Invoker:
    """The object behind the app that holds the rate limiter and the authenticator (for tests that swap
    the limiter's clock or look at the JWKS cache): the one place tests reach into the app."""
    invoker: Invoker = hub.app.state.invoker
    return invoker


@dataclass
class RunningHub:
    url: str  # where it listens; IN_PROCESS_BASE_URL (nothing listens) for an in-process hub
    client: httpx2.AsyncClient
    supervisor: Supervisor
    app: Any
    _transport: httpx2.AsyncBaseTransport | None = None

    def new_client(self, **options: Any) -> httpx2.AsyncClient:
        """Another HTTP client for this hub (its own limits, timeout, headers), over the same transport."""
        return httpx2.AsyncClient(base_url=self.url, transport=self._transport, **options)


@asynccontextmanager
async def running_hub(raw: dict[str, Any] | str | HubConfig, *, api_keys: tuple[str, ...] = (),
                      headers: dict[str, str] | None = None, in_process: bool = True,
                      listen: bool | None = None,
                      backend: httpx2.AsyncBaseTransport | None = None) -> AsyncIterator[RunningHub]:
    """A hub serving `raw`. `in_process` (default True): our test servers in
    this process and the app through ASGI; False: every server a real process, the app on uvicorn.
    `listen`: serve the app with uvicorn on 127.0.0.1 (default: only when not in_process). `backend`: how
    the runner reaches its model backend (e.g. an ASGI transport into a fake; default: the network)."""
    listen = not in_process if listen is None else listen
    config = raw if isinstance(raw, HubConfig) else config_of(raw)
    connector: Callable[..., Any] = connect if in_process else transports.connect
    user_oauth = oauth_for(config)  # servers with oauth: (MCPHUB_SECRET_KEY from the environment)
    async with Supervisor(config, connect=connector, user_auth=[user_oauth] if user_oauth else []) as supervisor:
        app = make_app(supervisor, config, api_keys, backend, user_oauth)
        if user_oauth is not None and app.state.invoker.state is not None:
            user_oauth.use_redis(app.state.invoker.state)
        async with state.kept(app.state.invoker.state), app.state.mcp.running(), app.state.jobs.running():
            async with _serving(app, config, listen, headers) as hub:
                yield RunningHub(hub.url, hub.client, supervisor, app, hub.transport)


@dataclass
class _Serving:
    url: str
    client: httpx2.AsyncClient
    transport: httpx2.AsyncBaseTransport | None


@asynccontextmanager
async def _serving(app: Starlette, config: HubConfig, listen: bool,
                   headers: dict[str, str] | None) -> AsyncIterator[_Serving]:
    if not listen:
        transport = httpx2.ASGITransport(app=app, root_path=config.hub.root_path)
        async with httpx2.AsyncClient(base_url=IN_PROCESS_BASE_URL, transport=transport, headers=headers,
                                      timeout=30) as client:
            yield _Serving(IN_PROCESS_BASE_URL, client, transport)
        return
    async with _listening(app, config) as url:
        async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            yield _Serving(url, client, None)


@asynccontextmanager
async def running_instances(raw: dict[str, Any] | str | HubConfig, *, instance: str | None = None,
                            api_keys: tuple[str, ...] = ()) -> AsyncIterator[dict[str, RunningHub]]:
    """What `mcphub serve [--instance NAME]` runs for `raw`, in this process: one supervisor (our test
    servers in-process), each listener's mounted hubs polled, and each listener on uvicorn at its own
    address (a mounted hub is reached over HTTP). Yields a RunningHub per listener, by instance name
    ("hub" for a config without `instances:`)."""
    config = raw if isinstance(raw, HubConfig) else config_of(raw)
    servers, sites = plan(config, ServeOptions(instance=instance, api_keys=api_keys))
    async with running(servers, sites, api_keys=api_keys, connect=connect) as hub, AsyncExitStack() as stack:
        hubs = {}
        for site, invoker in zip(sites, hub.invokers, strict=True):
            app = create_app(invoker, hub_id=site.hub_id, mounts=site.mounts)
            await stack.enter_async_context(app.state.mcp.running())
            await stack.enter_async_context(app.state.jobs.running())
            url = await stack.enter_async_context(_listening(app, site.config, port=site.port))
            client = await stack.enter_async_context(httpx2.AsyncClient(base_url=url, timeout=30))
            hubs[site.name] = RunningHub(url, client, hub.supervisor, app)
        yield hubs


@asynccontextmanager
async def _listening(app: Starlette, config: HubConfig, *, port: int | None = None) -> AsyncIterator[str]:
    port = port or free_port()
    server = _Server(uvicorn_config(app, app.state.invoker, host="127.0.0.1", port=port,
                                    root_path=config.hub.root_path))  # serve's own: its connection limits
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(HUB_START_TIMEOUT):
            await _until(lambda: server.started)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True


async def _until(condition: Callable[[], bool]) -> None:
    """uvicorn announces being up with a flag only: look at it between loop turns (bounded by the caller)."""
    while not condition():
        await anyio.sleep(0.01)


def assert_error(response: httpx2.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["type"] == type_, body
    assert isinstance(error["message"], str) and error["message"], body
    assert "Traceback" not in error["message"] and "object at 0x" not in error["message"], body
    return error


@asynccontextmanager
async def mcp_client(url: str, key: str | None, mode: str = "auto", *, headers: dict[str, str] | None = None,
                     **options: Any) -> AsyncIterator[Client]:
    """The MCP SDK's client at one of a hub's MCP endpoints (`key` as Bearer, `headers` on every request;
    `mode`: "auto" speaks 2026-07-28 to the hub, "legacy" 2025-11-25 with a session)."""
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as client:  # type: ignore[arg-type]
            yield client
