"""The lifecycle of every MCP server the hub talks to.

One anyio task group; per server a `ServerHandle` (name, state, tools, last error) and per replica one
task that owns its connection: connect → initialize → list tools → ready → wait until the connection
dies or a stop is asked for → restart with exponential backoff. A failure is caught inside its own
task and never reaches the task group, so one server cannot take another down. Calls come from other
tasks (HTTP handlers) and share a replica's `Client` concurrently.

Knows nothing of HTTP, URLs, OpenAPI or auth.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio
import httpx2
import pydantic
from anyio.abc import TaskStatus
from mcp import Client, MCPError
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    CallToolRequestParams,
    CallToolResult,
    GetPromptResult,
    PaginatedRequestParams,
    Prompt,
    ReadResourceResult,
    RequestParamsMeta,
    Resource,
    ResourceTemplate,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcphub import backchannel, resources, stdio, transports, upstream_tasks, user_servers
from mcphub.backchannel import ServerRequests
from mcphub.config import HttpServer, HubConfig, ServerConfig
from mcphub.errors import BadUpstreamResponse, NotFound, ServerUnavailable, ToolTimeout, exception_line
from mcphub.logs import plural
from mcphub.toolserver import BackChannel, CallContext, Json, ProgressFn, State, ToolServer, same_tools, unavailable
from mcphub.user_servers import UserAuthSource, UserPool

logger = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a server gets to close cleanly (SDK: stdin close, 2 s, SIGTERM, SIGKILL) before we cancel
STABLE_AFTER = 30.0  # seconds of uptime after which a crash restarts from the initial backoff again
CALL_GRACE = 2.0  # seconds past a call's own timeout before the hub stops waiting on the SDK
REREADY_WAIT = 5.0  # seconds a call waits for a re-initialised session after the old one expired
MAX_TOOL_PAGES = 100  # bound on tools/list pagination (a server that loops its cursor)
PROBE_TIMEOUT = 10.0  # seconds a remote server gets to answer a health probe (capped at its ping_interval)
PROBE_CLOSE_GRACE = 2.0  # seconds to close a connection a probe found dead (a hung server never answers DELETE)
DRAIN_GRACE = 1.0  # seconds the calls in flight on an ended connection get to receive their answers before it closes
DRAIN_POLL = 0.01  # seconds between looks at a draining connection's calls in flight
SDK_BARE_HTTP_ERROR = "Server returned an error response"  # the SDK's text for an HTTP error without a JSON-RPC body

Connect = Callable[..., AbstractAsyncContextManager[Client]]
T = TypeVar("T")


@dataclass(eq=False)
class _Replica:
    index: int
    state: State = State.STARTING
    client: Client | None = None
    in_flight: int = 0
    closed: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    requests: ServerRequests = field(default_factory=lambda: ServerRequests("?"))  # elicitation/sampling


@dataclass(eq=False)
class ServerHandle:
    """One local server: its replicas, state and tools. A `toolserver.ToolServer`."""

    name: str
    config: ServerConfig
    state: State = State.STARTING
    tools: dict[str, Tool] = field(default_factory=dict)
    version: int = 0  # bumps whenever `tools` changes
    last_error: str | None = None
    restarts: int = 0
    next_retry_at: float | None = None  # anyio clock
    replicas: list[_Replica] = field(default_factory=list)
    _turn: int = 0
    _stopping: anyio.Event = field(default_factory=anyio.Event)
    _done: anyio.Event = field(default_factory=anyio.Event)
    _ready: anyio.Event = field(default_factory=anyio.Event)
    _reported: set[str] = field(default_factory=set)  # unexpected errors already logged with a traceback
    users: UserPool | None = None  # a per-user server (user_servers.py): this handle is its listing instance
    auth: httpx2.Auth | None = field(default=None, repr=False)  # a user instance's own auth (HTTP servers)

    @property
    def user_instances(self) -> int | None:
        """User instances running now; None for a server that is not per-user."""
        return None if self.users is None else self.users.running

    # ----------------------------------------------------------------------- the ToolServer protocol

    @property
    def description(self) -> str | None:
        return self.config.description

    @property
    def region(self) -> str | None:
        return self.config.region

    @property
    def transport(self) -> str:
        return self.config.transport

    @property
    def required(self) -> bool:
        return self.config.required

    @property
    def hub(self) -> None:
        return None

    @property
    def via(self) -> tuple[str, ...]:
        return ()

    async def call(self, tool: str, arguments: dict[str, Json], context: CallContext) -> CallToolResult:
        return await self.call_tool(tool, arguments, caller=context.caller, progress=context.progress,
                                    timeout=context.timeout, back_channel=context.back_channel)

    def unavailable(self, tool: str | None, reason: str | None = None) -> ServerUnavailable:
        return unavailable(self, tool, reason, retry_after=self.retry_after())

    # ---------------------------------------------------------------------------------------- calls

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], *, timeout: float | None = None, caller: str | None = None,
        progress: ProgressFn | None = None, back_channel: BackChannel | None = None,
    ) -> CallToolResult:
        """Call a tool on the least busy ready replica.

        Returns the server's CallToolResult (isError included) unchanged. Raises ServerUnavailable,
        ToolTimeout, BadUpstreamResponse, or MCPError for the server's own error answer.
        """
        timeout = self.config.timeout_for(tool) if timeout is None else timeout
        # RequestParamsMeta is an open map (extra_items): forward_identity names a key of its own
        meta = cast(RequestParamsMeta, {self.config.forward_identity: caller}) \
            if self.config.forward_identity and caller else None
        try:
            return await self._call_once(tool, arguments, timeout, meta, progress, back_channel)
        except _SessionExpired:
            # The server refused the request before running it: re-initialise and send it once more.
            with anyio.move_on_after(REREADY_WAIT):
                await self._wait_ready()
            try:
                return await self._call_once(tool, arguments, timeout, meta, progress, back_channel)
            except _SessionExpired:
                raise self.unavailable(tool, "the server dropped the session again") from None

    async def _call_once(
        self, tool: str, arguments: dict[str, Any], timeout: float, meta: RequestParamsMeta | None,
        progress: ProgressFn | None, back_channel: BackChannel | None = None,
    ) -> CallToolResult:
        replica = self._pick()
        client = replica.client
        assert client is not None
        params = CallToolRequestParams(name=tool, arguments=arguments, meta=meta) if meta else \
            CallToolRequestParams(name=tool, arguments=arguments)
        replica.in_flight += 1
        try:
            with anyio.fail_after(timeout + CALL_GRACE), replica.requests.during(back_channel):
                if upstream_tasks.runs_as_task(client.server_capabilities, client.protocol_version,
                                               self.tools.get(tool)):
                    return await upstream_tasks.call_tool(client.session, params, timeout=timeout, progress=progress,
                                                          closed=replica.closed)
                # send_request, not Client.call_tool: results pass through verbatim, without the SDK
                # rejecting structured content that disagrees with the tool's own outputSchema.
                return await backchannel.call_tool(client.session, params, timeout=timeout, progress=progress,
                                                   back_channel=back_channel)
        except MCPError as exc:
            if exc.code in (INVALID_REQUEST, REQUEST_TIMEOUT) and _is_session_gone(exc.message):
                self._lost(replica)  # (TypeScript servers answer -32001, the timeout code, for this)
                raise _SessionExpired from None
            if exc.code == REQUEST_TIMEOUT:
                raise ToolTimeout(
                    f"tool '{tool}' on server '{self.name}' did not answer within {timeout:g}s",
                    server=self.name,
                    tool=tool,
                ) from None
            if exc.code == CONNECTION_CLOSED:
                self._lost(replica)
                raise self.unavailable(tool, "the connection to the server closed during the call") from None
            if exc.code == INTERNAL_ERROR and exc.data == stdio.UNREADABLE:  # made by stdio.py, not the server
                raise BadUpstreamResponse(f"server '{self.name}' answered tool '{tool}' with a line that could not "
                                          f"be read as MCP ({exc.message.split(': ', 1)[-1]})",
                                          server=self.name, tool=tool) from None
            if exc.code == INTERNAL_ERROR and exc.message == SDK_BARE_HTTP_ERROR:
                # an HTTP error status without a JSON-RPC body: a proxy in front of the server (nginx's
                # 502 page), or the server failing before MCP. Not the tool's answer.
                raise BadUpstreamResponse(
                    f"server '{self.name}' answered tool '{tool}' with an HTTP error status instead of an MCP "
                    "answer (a proxy in front of it, or the server failing)",
                    server=self.name,
                    tool=tool,
                ) from None
            raise
        except TimeoutError:
            raise ToolTimeout(
                f"tool '{tool}' on server '{self.name}' did not answer within {timeout:g}s",
                server=self.name,
                tool=tool,
            ) from None
        except (pydantic.ValidationError, ValueError) as exc:
            raise BadUpstreamResponse(
                f"server '{self.name}' answered tool '{tool}' with something that is not a valid MCP result "
                f"({exception_line(exc)})",
                server=self.name,
                tool=tool,
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.TransportError) as exc:
            self._lost(replica)
            raise self.unavailable(tool, f"connection lost ({exception_line(exc)})") from None
        finally:
            replica.in_flight -= 1

    # ------------------------------------------------------------------- resources and prompts

    def declares(self) -> frozenset[str]:
        for replica in self.replicas:
            if replica.state is State.READY and replica.client is not None:
                return resources.declared(replica.client)
        return frozenset()

    async def list_resources(self, context: CallContext | None = None) -> list[Resource]:
        return await self._ask("resources/list", resources.list_resources)

    async def list_resource_templates(self, context: CallContext | None = None) -> list[ResourceTemplate]:
        return await self._ask("resources/templates/list", resources.list_resource_templates)

    async def list_prompts(self, context: CallContext | None = None) -> list[Prompt]:
        return await self._ask("prompts/list", resources.list_prompts)

    async def read_resource(self, uri: str, context: CallContext) -> ReadResourceResult:
        async def read(client: Client) -> ReadResourceResult:
            return await client.session.read_resource(uri)

        return await self._ask("resources/read", read, context.back_channel)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None, context: CallContext) -> GetPromptResult:
        async def get(client: Client) -> GetPromptResult:
            return await client.session.get_prompt(name, arguments)

        return await self._ask("prompts/get", get, context.back_channel)

    async def _ask(self, method: resources.Method, request: Callable[[Client], Awaitable[T]],
                   back_channel: BackChannel | None = None) -> T:
        """One resources/prompts request on the least busy ready replica, failures mapped as for calls."""
        replica = self._pick()
        client = replica.client
        assert client is not None
        if method in ("resources/read", "prompts/get") and not resources.declares(client, method):
            kind = method.partition("/")[0]
            raise NotFound(f"server '{self.name}' has no {kind} (it does not declare the capability)",
                           server=self.name)
        timeout = self.config.timeout
        replica.in_flight += 1
        try:
            with anyio.fail_after(timeout), replica.requests.during(back_channel):
                return await request(client)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._lost(replica)
                raise self.unavailable(None, "the connection to the server closed during the request") from None
            if exc.code in (INVALID_REQUEST, REQUEST_TIMEOUT) and _is_session_gone(exc.message):
                self._lost(replica)  # reconnects; unlike a call, a list or read is not resent here
                raise self.unavailable(None, "the server dropped the session; it is being reconnected") from None
            if exc.code == REQUEST_TIMEOUT:
                raise ToolTimeout(f"server '{self.name}' did not answer {method} within {timeout:g}s",
                                  server=self.name) from None
            raise
        except TimeoutError:
            raise ToolTimeout(f"server '{self.name}' did not answer {method} within {timeout:g}s",
                              server=self.name) from None
        except (pydantic.ValidationError, ValueError, RuntimeError) as exc:
            raise BadUpstreamResponse(f"server '{self.name}' answered {method} with something that is not a valid "
                                      f"MCP result ({exception_line(exc)})", server=self.name) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.TransportError) as exc:
            self._lost(replica)
            raise self.unavailable(None, f"connection lost ({exception_line(exc)})") from None
        finally:
            replica.in_flight -= 1

    def _lost(self, replica: _Replica) -> None:
        """A caller saw the connection die: stop routing calls to it now, and let its task reconnect."""
        if replica.state is State.READY:
            replica.state = State.RESTARTING
            self._refresh_state()
        replica.closed.set()

    def _pick(self) -> _Replica:
        """The ready replica with the fewest calls in flight; ties go round-robin."""
        ready = [r for r in self.replicas if r.state is State.READY and r.client is not None]
        if not ready:
            raise self.unavailable(None, None)
        if len(ready) == 1:
            return ready[0]
        self._turn += 1
        start = self._turn % len(ready)
        rotated = ready[start:] + ready[:start]
        return min(rotated, key=lambda r: r.in_flight)

    async def _wait_ready(self) -> None:
        while not any(r.state is State.READY for r in self.replicas):
            if self._ready.is_set():  # re-arm only a spent event: a fresh one would strand earlier waiters
                self._ready = anyio.Event()
            await self._ready.wait()

    def retry_after(self) -> int:
        if self.next_retry_at is None:
            return 1
        return max(1, math.ceil(self.next_retry_at - anyio.current_time()) + 1)

    # ----------------------------------------------------------------------------------- lifecycle

    def _set_tools(self, tools: list[Tool]) -> None:
        allowed = {t.name: t for t in tools if self.config.tools.allows(t.name)}
        if not same_tools(allowed, self.tools):
            self.tools = allowed
            self.version += 1

    def _refresh_state(self) -> None:
        states = {r.state for r in self.replicas}
        for state in (State.READY, State.STARTING, State.RESTARTING, State.FAILED):
            if state in states:
                self.state = state
                break
        else:
            self.state = State.STOPPED
        if self.state is State.READY:
            self._ready.set()


class _SessionExpired(Exception):
    pass


def _is_session_gone(message: str) -> bool:
    """The server no longer knows our session (it restarted, or expired it): `Session terminated`,
    which is how the SDK reports a bare 404 and how transports.py reports every stale-session answer
    it recognises (404 or 400, whatever the server's wording); `Session not found` from a server's
    own 404 body, for a connection made by another `connect`."""
    text = message.lower()
    return "session terminated" in text or "session not found" in text


class Supervisor:
    """Starts, watches, restarts and stops MCP servers. `async with Supervisor(config) as sup:`."""

    def __init__(self, config: HubConfig | None = None, *, connect: Connect = transports.connect,
                 servers: Mapping[str, ServerConfig] | None = None,
                 user_auth: Sequence[UserAuthSource] = ()) -> None:
        self._initial = dict(servers if servers is not None else (config.servers if config else {}))
        self._connect = connect
        self._user_auth = tuple(user_auth)  # where per-user HTTP connections get their auth (user_servers.py)
        self.servers: dict[str, ServerHandle] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Supervisor:
        """Start every server; return once each is ready or has failed once. Whatever ends the start
        early (a cancellation: a signal; an error) stops what was started before it propagates."""
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._close)
            started = time.monotonic()
            await self.apply(self._initial)
            ready = sum(1 for h in self.servers.values() if h.state is State.READY)
            logger.info("%d of %s ready in %.2fs", ready, plural(len(self.servers), "server"),
                        time.monotonic() - started)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        return bool(await stack.__aexit__(*exc))

    async def _close(self) -> None:
        """Stop every server (bounded by STOP_GRACE each, shielded from the cancellation that may have
        brought us here), then end the task group's tasks."""
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self._stop_all(list(self.servers))
        self._tg.cancel_scope.cancel()

    async def apply(self, servers: Mapping[str, ServerConfig]) -> None:
        """Make the running set match `servers`: stop removed and changed ones, start new and changed ones.

        A changed server's old process is stopped before its new one starts, so it never keeps serving.
        Starts run in parallel; returns once every server is ready or has recorded its first failure.
        """
        removed = [n for n, h in self.servers.items() if n not in servers or servers[n] != h.config]
        await self._stop_all(removed)
        added = {n: c for n, c in servers.items() if n not in self.servers}
        async with anyio.create_task_group() as starters:
            for name, cfg in added.items():
                starters.start_soon(self._start, name, cfg)

    async def _start(self, name: str, cfg: ServerConfig) -> None:
        assert self._tg is not None
        handle = ServerHandle(name=name, config=cfg)
        handle.replicas = [_Replica(index=i, requests=ServerRequests(name)) for i in range(cfg.replicas)]
        self.servers[name] = handle
        if user_servers.is_per_user(name, cfg, self._user_auth):
            handle.users = UserPool(handle, cfg, launch=self, spawn=self._tg.start_soon,
                                    source=user_servers.source_for(name, self._user_auth),
                                    adopt_tools=lambda tools: handle._set_tools(list(tools.values())))
        logger.info("starting '%s' (%s%s%s)", name, transports.describe(cfg),
                    f", {cfg.replicas} replicas" if cfg.replicas > 1 else "",
                    ", per user: this one lists tools" if handle.users is not None else "")
        await self._tg.start(self._supervise, handle)

    async def start_instance(self, name: str, config: ServerConfig, auth: httpx2.Auth | None) -> ToolServer:
        """A user's instance of a per-user server (user_servers.py): run like any server, but not listed
        in `servers`; returns once it is ready or has failed once."""
        assert self._tg is not None
        handle = ServerHandle(name=name, config=config, auth=auth)
        handle.replicas = [_Replica(index=i, requests=ServerRequests(name)) for i in range(config.replicas)]
        await self._tg.start(self._supervise, handle)
        return handle

    async def stop_instance(self, server: ToolServer) -> None:
        assert isinstance(server, ServerHandle)
        await self._stop(server)

    async def _stop_all(self, names: list[str]) -> None:
        async with anyio.create_task_group() as stoppers:
            for name in names:
                stoppers.start_soon(self._stop, self.servers[name])
        for name in names:
            self.servers.pop(name, None)

    async def _stop(self, handle: ServerHandle) -> None:
        if handle.users is not None:
            await handle.users.close()
        handle._stopping.set()
        for replica in handle.replicas:
            replica.closed.set()
            if replica.client is None:  # connecting or backing off: nothing to close gracefully
                replica.scope.cancel()
        with anyio.move_on_after(STOP_GRACE) as grace:
            await handle._done.wait()
        if grace.cancelled_caught:
            logger.warning("'%s' did not stop within %.0fs; cancelling", handle.name, STOP_GRACE)
            for replica in handle.replicas:
                replica.scope.cancel()
            await handle._done.wait()
        logger.info("'%s' stopped", handle.name)

    async def _supervise(self, handle: ServerHandle, *, task_status: TaskStatus[ServerHandle]) -> None:
        first_round = anyio.Event()
        pending = set(handle.replicas)

        def reporter(replica: _Replica) -> Callable[[], None]:
            def reported() -> None:  # this replica is ready, has failed once, or has ended
                pending.discard(replica)
                if not pending:
                    first_round.set()

            return reported

        try:
            async with anyio.create_task_group() as tg:
                for replica in handle.replicas:
                    tg.start_soon(self._run_replica, handle, replica, reporter(replica))
                await first_round.wait()
                task_status.started(handle)
        finally:
            handle.state = State.STOPPED
            handle._done.set()

    async def _run_replica(self, handle: ServerHandle, replica: _Replica, reported: Callable[[], None]) -> None:
        label = handle.name if len(handle.replicas) == 1 else f"{handle.name}#{replica.index}"
        try:
            if handle.users is not None and handle.users.source is not None:
                # each user's own auth (OAuth): nothing to connect with before a user does; ready, and the
                # tools come from the first user's instance (user_servers.UserPool adopts them)
                replica.state = State.READY
                handle._refresh_state()
                reported()
                await handle._stopping.wait()
                return
            await self._replica_loop(handle, replica, label, reported)
        finally:
            reported()
            replica.state = State.STOPPED
            handle._refresh_state()

    async def _replica_loop(
        self, handle: ServerHandle, replica: _Replica, label: str, reported: Callable[[], None]
    ) -> None:
        cfg = handle.config
        delay = cfg.restart.initial_delay
        first = True
        with replica.scope:
            while not handle._stopping.is_set():
                replica.closed = anyio.Event()
                up_since, error = await self._connect_once(handle, replica, label, first, reported)
                replica.client = None
                if handle._stopping.is_set():
                    replica.state = State.STOPPED
                    break
                if first:
                    first = False
                    if up_since is None:
                        reported()
                handle.last_error = _redact(error or "the server closed the connection")
                if up_since is not None and anyio.current_time() - up_since > STABLE_AFTER:
                    delay = cfg.restart.initial_delay
                replica.state = State.RESTARTING if up_since is not None else State.FAILED
                if cfg.restart.policy == "never":
                    replica.state = State.FAILED
                    handle._refresh_state()
                    logger.error("'%s' is down and restart policy is 'never': %s", label, handle.last_error)
                    await handle._stopping.wait()
                    break
                handle.next_retry_at = anyio.current_time() + delay
                handle._refresh_state()
                log = logger.warning if up_since is not None else logger.error
                log("'%s' %s: %s; restart in %.1fs", label, "exited" if up_since is not None else "failed",
                    handle.last_error, delay)
                with anyio.move_on_after(delay):
                    await handle._stopping.wait()
                handle.next_retry_at = None
                delay = min(delay * 2, cfg.restart.max_delay)
                if not handle._stopping.is_set():
                    handle.restarts += 1

    async def _connect_once(
        self, handle: ServerHandle, replica: _Replica, label: str, first: bool, reported: Callable[[], None]
    ) -> tuple[float | None, str | None]:
        """One connection's life. Returns (time it became ready or None, error text or None)."""
        cfg = handle.config
        started = anyio.current_time()
        up_since: float | None = None
        tail: collections.deque[str] = collections.deque(maxlen=transports.STDERR_TAIL_LINES)
        probe_failed: list[str] = []  # why the health probe gave up on this connection
        try:
            with anyio.CancelScope(deadline=started + cfg.connect_timeout) as scope:
                changed = _Flag()
                own = user_servers.for_listing(cfg) if handle.users is not None else cfg  # no user's secrets
                auth = {"auth": handle.auth} if handle.auth is not None else {}
                async with self._connect(handle.name, own, on_closed=replica.closed.set, stderr_tail=tail,
                                         on_tools_changed=changed.set, server_requests=replica.requests,
                                         **auth) as client:
                    tools = await _list_tools(client)
                    scope.deadline = math.inf
                    up_since = anyio.current_time()
                    handle._set_tools(tools)
                    replica.client = client
                    replica.state = State.READY
                    handle.last_error = None
                    handle._refresh_state()
                    logger.info("'%s' ready: %s (%.2fs)", label, plural(len(handle.tools), "tool"), up_since - started)
                    if first:
                        reported()
                    async with anyio.create_task_group() as watchers:
                        watchers.start_soon(_listen_for_tool_changes, handle, label, client, changed.set)
                        if isinstance(cfg, HttpServer) and cfg.ping_interval > 0:
                            watchers.start_soon(_probe, handle, replica, client, label, probe_failed)
                        while not replica.closed.is_set():
                            await _wait_either(replica.closed, changed)
                            if changed.take() and not replica.closed.is_set():
                                await self._relist(handle, client, label)
                        watchers.cancel_scope.cancel()
                    replica.client = None
                    if replica.state is State.READY and not handle._stopping.is_set():
                        replica.state = State.RESTARTING
                        handle._refresh_state()
                    if probe_failed:  # dead or hung: a polite close (DELETE) may never be answered
                        scope.deadline = anyio.current_time() + PROBE_CLOSE_GRACE
                    elif not handle._stopping.is_set():
                        await _drain(replica)
            if scope.cancelled_caught and up_since is None:
                return None, _with_tail(
                    f"no answer within {cfg.connect_timeout:g}s (connect, initialize, list tools)", tail)
            return up_since, (probe_failed[0] if probe_failed else None)
        except Exception as exc:  # every failure of one connection stays inside this task
            _log_unexpected(handle, label, exc)
            return up_since, _with_tail(_describe(exc, cfg), tail)
        except BaseExceptionGroup as group:
            _log_unexpected(handle, label, group)
            return up_since, _with_tail(_describe(group, cfg), tail)


    async def _relist(self, handle: ServerHandle, client: Client, label: str) -> None:
        """The server said its tools changed: list them again (a failure leaves the old list)."""
        try:
            with anyio.fail_after(handle.config.connect_timeout):
                tools = await _list_tools(client)
        except (Exception, BaseExceptionGroup) as exc:
            _log_unexpected(handle, label, exc)
            logger.warning("'%s' announced new tools but listing them failed: %s", label, _describe(exc, handle.config))
            return
        before = handle.version
        handle._set_tools(tools)
        if handle.version != before:
            logger.info("'%s' tools changed: %s", label, plural(len(handle.tools), "tool"))


class _Flag:
    """A re-armable event: `set` from callbacks, `take` to consume, `wait` for the next `set`."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def take(self) -> bool:
        was = self._event.is_set()
        if was:
            self._event = anyio.Event()
        return was

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def _wait_either(first: anyio.Event | _Flag, second: anyio.Event | _Flag) -> None:
    if first.is_set() or second.is_set():
        return
    async with anyio.create_task_group() as tg:
        async def wake(on: anyio.Event | _Flag) -> None:
            await on.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wake, first)
        tg.start_soon(wake, second)


async def _drain(replica: _Replica) -> None:
    """Let the calls still in flight on a connection that ended get their answers before it closes.
    After a restarted server refused our session, every call sent since gets a quick "no such session",
    which call_tool resends on the new connection; closing first would turn those into 503s. A dead
    server's calls have failed already, so this returns at once; a hung one's are cut off after the grace."""
    with anyio.move_on_after(DRAIN_GRACE):
        while replica.in_flight:
            await anyio.sleep(DRAIN_POLL)


async def _probe(handle: ServerHandle, replica: _Replica, client: Client, label: str, failed: list[str]) -> None:
    """Every `ping_interval` seconds while no call is in flight, ask a remote server for a sign of
    life: a server that died or hung while idle is otherwise noticed only by the next caller. A
    failure marks the replica lost (calls stop going to it, /readyz says why) and ends the connection;
    the supervisor reconnects with its usual backoff. (A call in flight notices a death by itself.)"""
    assert isinstance(handle.config, HttpServer)
    interval = handle.config.ping_interval
    timeout = min(PROBE_TIMEOUT, interval)
    while True:
        await anyio.sleep(interval)
        if replica.in_flight:
            continue
        failure = await _ping(client, timeout)
        if failure is not None:
            break
    failed.append(f"health probe failed: {failure}")
    handle.last_error = _redact(failed[0])  # at once in /readyz; the restart line logs it
    handle._lost(replica)


async def _ping(client: Client, timeout: float) -> str | None:
    """None if the server answered an MCP `ping`, else why not. Any JSON-RPC answer counts: a
    2026-07-28 server has no `ping` and answers -32601, which is as good a sign of life."""
    try:
        with anyio.fail_after(timeout):
            await client.session.send_ping()
    except TimeoutError:
        return f"no answer to ping within {timeout:g}s"
    except MCPError as exc:
        if exc.code == CONNECTION_CLOSED:
            return "the connection closed"
        if _is_session_gone(exc.message):
            return "the server no longer knows this session (it restarted, or expired it)"
        if exc.code == INTERNAL_ERROR and exc.message == SDK_BARE_HTTP_ERROR:
            return "the server answered with an HTTP error"
        return None
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.TransportError) as exc:
        return exception_line(exc)
    return None


async def _listen_for_tool_changes(handle: ServerHandle, label: str, client: Client,
                                   changed: Callable[[], None]) -> None:
    """2026-era servers announce tool-list changes on a `subscriptions/listen` stream (2025-era ones send
    a notification, which transports hands to `on_tools_changed`). Quietly nothing where unsupported."""
    caps = client.server_capabilities
    if caps is None or caps.tools is None or not caps.tools.list_changed:
        return
    if client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:  # 2025-era: the notification, not a stream
        return
    try:
        async with client.listen(tools_list_changed=True) as subscription:
            async for _event in subscription:
                changed()
    except (Exception, BaseExceptionGroup) as exc:  # not supported, or the stream dropped: reconnects relist anyway
        _log_unexpected(handle, label, exc)
        logger.debug("tool-change subscription ended: %s", exception_line(exc))


async def _list_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


# What a connection is expected to end with (a server that exits, hangs, answers garbage, or is not
# there): `last_error` and a log line say enough. Anything else is a bug, here or in a library.
_EXPECTED = (OSError, TimeoutError, MCPError, httpx2.HTTPError, pydantic.ValidationError, ValueError,
             anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


def _log_unexpected(handle: ServerHandle, label: str, exc: BaseException) -> None:
    """Log a failure that is none of the expected ones with its traceback, once per server and kind of
    error (the restart loop goes on, and `last_error` has its one line every time)."""
    cancelled = anyio.get_cancelled_exc_class()
    odd = [e for e in _leaves(exc) if not isinstance(e, (cancelled, *_EXPECTED))]
    if odd and exception_line(odd[0]) not in handle._reported:
        handle._reported.add(exception_line(odd[0]))
        logger.error("'%s': unexpected error (%s)", label, exception_line(odd[0]), exc_info=exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _describe(exc: BaseException, cfg: ServerConfig) -> str:
    """One line a user can act on, from whatever a failed connection raised."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, anyio.get_cancelled_exc_class())] or [exc]
    leaf = leaves[0]
    if isinstance(leaf, FileNotFoundError):
        return f"command not found: {getattr(cfg, 'command', leaf.filename)!r} (is it installed and on PATH?)"
    if isinstance(leaf, PermissionError):
        return f"cannot execute {getattr(cfg, 'command', '')!r}: permission denied"
    if isinstance(leaf, httpx2.ConnectError):
        return f"cannot connect to {getattr(cfg, 'url', '?')}: {exception_line(leaf)}"
    if isinstance(leaf, httpx2.HTTPStatusError):
        return f"{getattr(cfg, 'url', '?')} answered HTTP {leaf.response.status_code}"
    if isinstance(leaf, MCPError):
        if leaf.code == CONNECTION_CLOSED:
            return "the server closed the connection during start-up; see its stderr in the hub's log"
        return f"MCP error {leaf.code}: {leaf.message}"
    return exception_line(leaf)


def _with_tail(error: str | None, tail: collections.deque[str]) -> str | None:
    """The error, pointing at the child's stderr when it wrote any: in the hub's log only, never in
    `last_error`, which /readyz shows to anyone (a line may hold a caller's arguments)."""
    if not tail or (error and "stderr" in error):
        return error
    where = "see its stderr in the hub's log"
    return f"{error}; {where}" if error else f"the server exited; {where}"


def _redact(text: str) -> str:
    """Strip userinfo from URLs in an error text (`https://user:pass@host` → `https://host`)."""
    return re.sub(r"(https?://)[^/@\s]+@", r"\1", text)
