"""Mounting another hub's servers: a sibling instance run in a process of its own, or a `remotes:` hub.

A `RemoteMount` polls the other hub's `GET /_mcphub/servers` (raw MCP tool definitions, per-server
state, and the chain of hubs each server came through) and keeps one `RemoteServer` per server it
serves. The app treats a `RemoteServer` like a local handle for listing, specs and scopes, and
forwards calls to `POST {url}/{server}/{tool}`: the other hub's statuses and error bodies pass
through unchanged. A hub that finds its own id in a server's chain refuses it: that is a mount loop.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import anyio
import httpx2
from anyio.abc import TaskStatus
from mcp.types import GetPromptResult, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool

from mcphub.errors import BadUpstreamResponse, ErrorBody, HubError, ServerUnavailable, ToolTimeout, exception_line
from mcphub.logs import plural
from mcphub.toolserver import CallContext, Json, Relayed, State, same_tools, unavailable

logger = logging.getLogger(__name__)

LISTING_PATH = "/_mcphub/servers"
EVENT_STREAM = "text/event-stream"
POLL_INTERVAL = 10.0  # seconds between listings of a reachable remote (tools, states, reachability)
RETRY_MAX = 5.0  # seconds: cap on the retry interval while a remote is unreachable
LIST_TIMEOUT = 10.0  # seconds for one listing request
# seconds without a byte on a forwarded event stream before it counts as lost: the other hub writes at
# least a comment line every jobs_http.KEEPALIVE (15 s) while a call runs
STREAM_IDLE_TIMEOUT = 60.0


@dataclass(eq=False)
class RemoteServer:
    """A server another hub runs, as this hub serves it. A `toolserver.ToolServer`."""

    name: str
    mount: RemoteMount
    description: str | None = None
    region: str | None = None
    required: bool = False
    state: State = State.STARTING
    tools: dict[str, Tool] = field(default_factory=dict)
    version: int = 0
    last_error: str | None = None
    restarts: int = 0
    via: list[str] = field(default_factory=list)
    transport: str = "hub"

    @property
    def hub(self) -> str:
        return self.mount.name

    def retry_after(self) -> int:
        return self.mount.retry_after()

    def unavailable(self, tool: str | None, reason: str | None = None) -> ServerUnavailable:
        return unavailable(self, tool, reason, retry_after=self.retry_after())

    async def call(self, tool: str, arguments: dict[str, Json], context: CallContext) -> Relayed:
        if context.timeout is not None:  # a job (jobs.job_timeout): that hub runs it under its own job_timeout
            return await self.mount.forward_streamed(self, tool, arguments, context)
        return await self.mount.forward(self, tool, arguments, context)

    # Resources and prompts: asked of the other hub's HTTP routes (`GET /{server}/resources`, ...), with
    # the credential a call would carry; its errors pass on with their status and body. (Whether it has
    # any is not in its listing: a mounted server is taken to declare both.) A server's elicitation during
    # a read or get is declined there: the other hub's HTTP face has no back-channel.

    def declares(self) -> frozenset[str]:
        return frozenset({"resources", "prompts"})

    async def list_resources(self, context: CallContext | None = None) -> list[Resource]:
        body = await self.mount.fetch(self, "resources", {}, context)
        return [Resource.model_validate(r, by_name=False) for r in _items(body, "resources")]

    async def list_resource_templates(self, context: CallContext | None = None) -> list[ResourceTemplate]:
        body = await self.mount.fetch(self, "resources", {}, context)
        return [ResourceTemplate.model_validate(r, by_name=False) for r in _items(body, "resourceTemplates")]

    async def list_prompts(self, context: CallContext | None = None) -> list[Prompt]:
        body = await self.mount.fetch(self, "prompts", {}, context)
        return [Prompt.model_validate(p, by_name=False) for p in _items(body, "prompts")]

    async def read_resource(self, uri: str, context: CallContext) -> ReadResourceResult:
        return ReadResourceResult.model_validate(await self.mount.fetch(self, "resources/read", {"uri": uri}, context),
                                                 by_name=False)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None, context: CallContext) -> GetPromptResult:
        body = await self.mount.fetch(self, f"prompts/{quote(name, safe='')}", arguments or {}, context)
        return GetPromptResult.model_validate(body, by_name=False)


class MountState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"  # reachable, but some of its servers are refused (a loop, a name clash)
    FAILED = "failed"  # unreachable


class RemoteMount:
    """One mounted hub. `api_key` None: forward each caller's own credential (a sibling sharing auth)."""

    def __init__(self, name: str, url: str, *, hub_id: str, api_key: str | None, timeout: float,
                 required: bool = False, proxy: str | None = None, reserved: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.hub_id = hub_id
        self.api_key = api_key
        self.timeout = timeout
        self.required = required
        self.proxy = proxy
        self.reserved = reserved  # names of the mounting hub's own servers: a remote one never shadows them
        self.servers: dict[str, RemoteServer] = {}
        self.state = MountState.STARTING
        self.last_error: str | None = None
        self.next_poll_at: float | None = None
        self._poll_now = anyio.Event()
        self._client: httpx2.AsyncClient | None = None

    def retry_after(self) -> int:
        if self.next_poll_at is None:
            return 1
        return max(1, math.ceil(self.next_poll_at - anyio.current_time()))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled. `started` after the first listing, successful or not."""
        async with self._http_client() as client:
            self._client = client
            delay = 1.0
            first = True
            while True:
                ok = await self._poll()
                if first:
                    task_status.started()
                    first = False
                delay = POLL_INTERVAL if ok else min(RETRY_MAX, delay * 2 if delay < POLL_INTERVAL else 1.0)
                self.next_poll_at = anyio.current_time() + delay
                self._poll_now = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._poll_now.wait()

    async def probe(self) -> bool:
        """List the remote once (for `mcphub check`): fills `servers`, `state` and `last_error`."""
        async with self._http_client() as client:
            self._client = client
            try:
                return await self._poll()
            finally:
                self._client = None

    def _http_client(self) -> httpx2.AsyncClient:
        limits = httpx2.Limits(max_connections=200, max_keepalive_connections=50)
        # read timeout a little past the remote's own call timeout, so its 504 reaches the caller first
        return httpx2.AsyncClient(timeout=httpx2.Timeout(self.timeout + 5.0, connect=5.0), proxy=self.proxy,
                                  limits=limits, follow_redirects=False)

    def _headers(self, context: CallContext | None) -> dict[str, str]:
        """The mount's credential, else the caller's own (a sibling sharing this hub's auth); and the
        headers that named a forwarded user, so that the other hub acts as the same user."""
        headers = {"X-Mcphub-Via": self.hub_id}
        if context is not None:
            headers.update(context.user_headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif context is not None and context.authorization:
            headers["Authorization"] = context.authorization
        return headers

    async def _poll(self) -> bool:
        assert self._client is not None
        try:
            with anyio.fail_after(LIST_TIMEOUT):
                response = await self._client.get(self.url + LISTING_PATH, headers=self._headers(None))
            if response.status_code != 200:
                raise _ListingError(f"{self.url}{LISTING_PATH} answered HTTP {response.status_code}: "
                                    f"{_error_message(response)}")
            listing = response.json()
            servers = listing["servers"]
            if not isinstance(servers, dict):
                raise ValueError("'servers' is not an object")
        except (httpx2.HTTPError, TimeoutError, ValueError, KeyError, TypeError, _ListingError) as exc:
            self._unreachable(_reason(exc, self.url))
            return False
        self._update(servers)
        return True

    def _unreachable(self, reason: str) -> None:
        if self.state is not MountState.FAILED or self.last_error != reason:
            logger.warning("remote hub '%s' unreachable: %s", self.name, reason)
        self.state, self.last_error = MountState.FAILED, reason
        for server in self.servers.values():
            server.state, server.last_error = State.FAILED, f"hub '{self.name}' unreachable: {reason}"

    def _update(self, listing: Mapping[str, Any]) -> None:
        seen = set()
        loops = []
        clashes = []
        for name, entry in listing.items():
            via = [str(v) for v in entry.get("via", [])]
            if self.hub_id in via:
                loops.append(name)
                continue
            if name in self.reserved:
                clashes.append(name)
                continue
            seen.add(name)
            server = self.servers.get(name)
            if server is None:
                server = RemoteServer(name=name, mount=self, description=entry.get("description"),
                                      required=self.required)
                self.servers[name] = server
                logger.info("mounted '%s' from hub '%s'", name, self.name)
            tools = {}
            for raw in entry.get("tools", []):
                try:
                    tool = Tool.model_validate(raw)
                except ValueError:
                    continue
                tools[tool.name] = tool
            if not same_tools(tools, server.tools):
                server.tools = tools
                server.version += 1
            server.description = entry.get("description")
            server.region = entry.get("region")
            server.state = State.parse(entry.get("state", "ready"))
            server.last_error = entry.get("last_error")
            server.via = via
        for name in [n for n in self.servers if n not in seen]:
            del self.servers[name]
            logger.info("unmounted '%s': hub '%s' no longer serves it", name, self.name)
        problems = []
        if loops:
            problems.append(f"mount loop: hub '{self.name}' serves this hub's own servers back "
                            f"({', '.join(sorted(loops))}); those are not mounted")
        if clashes:
            problems.append(f"hub '{self.name}' serves {', '.join(sorted(clashes))}, which this hub already "
                            "has; the local ones are kept and the remote ones are not mounted (rename one)")
        if problems:
            if self.last_error != "; ".join(problems):
                logger.error("%s", "; ".join(problems))
            self.state, self.last_error = MountState.DEGRADED, "; ".join(problems)
        else:
            if self.state is not MountState.READY:
                logger.info("remote hub '%s' reachable: %s", self.name, plural(len(self.servers), "server"))
            self.state, self.last_error = MountState.READY, None

    async def fetch(self, server: RemoteServer, path: str, params: Mapping[str, str],
                    context: CallContext | None) -> Json:
        """GET `{url}/{server}/{path}` (a resources/prompts route): its JSON body, or its error raised as a
        `RelayedError` (status and body unchanged)."""
        if self._client is None:
            raise server.unavailable(None, "not connected yet")
        what = f"{path} of server '{server.name}'"
        with self._reaching(server, None, f"did not answer {what} within {self.timeout:g}s"):
            response = await self._client.get(f"{self.url}/{server.name}/{path}", params=dict(params),
                                              headers=self._headers(context))
        try:
            body = response.json()
        except ValueError:
            raise BadUpstreamResponse(f"hub '{self.name}' answered {what} with HTTP {response.status_code} and a "
                                      "body that is not JSON", server=server.name) from None
        if response.status_code != 200:
            headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else {}
            raise RelayedError(response.status_code, body, headers, server=server.name)
        return body

    async def forward(self, server: RemoteServer, tool: str, arguments: Any, context: CallContext) -> Relayed:
        if self._client is None:
            raise server.unavailable(tool, "not connected yet")
        url = f"{self.url}/{server.name}/{tool}"
        with self._reaching(server, tool, f"did not answer tool '{tool}' within {self.timeout:g}s"):
            response = await self._client.post(
                url, content=json.dumps(arguments).encode(), headers={
                    **self._headers(context), "Content-Type": "application/json"})
        return self._relayed(server, tool, response)

    async def forward_streamed(self, server: RemoteServer, tool: str, arguments: Any, context: CallContext) -> Relayed:
        """A job's call, POSTed with `Accept: text/event-stream`: the other hub runs it under its own
        `job_timeout` (not its `timeout`, nor this hub's read timeout) and sends each progress
        notification as it comes, which goes on to `context.progress`; its `result` or `error` event is
        the answer. An answer that is not a stream (a refusal before the server, or a hub without event
        streams) is relayed as `forward` relays it. Cancelling the call hangs up, which cancels it there."""
        if self._client is None:
            raise server.unavailable(tool, "not connected yet")
        headers = {**self._headers(context), "Content-Type": "application/json",
                   "Accept": EVENT_STREAM}
        timeout = httpx2.Timeout(max(self.timeout, STREAM_IDLE_TIMEOUT), connect=5.0)
        try:
            with self._reaching(server, tool, f"sent nothing on tool '{tool}' for {timeout.read:g}s"):
                answer = await self._stream(server, tool, arguments, headers, timeout, context)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadUpstreamResponse(f"hub '{self.name}' sent an event on tool '{tool}' that is not a progress, "
                                      f"result or error event ({exception_line(exc)})",
                                      server=server.name, tool=tool) from None
        if answer is None:
            raise server.unavailable(tool, f"hub '{self.name}' ended the call's event stream without an answer")
        return answer

    async def _stream(self, server: RemoteServer, tool: str, arguments: Any, headers: Mapping[str, str],
                      timeout: httpx2.Timeout, context: CallContext) -> Relayed | None:
        assert self._client is not None
        async with self._client.stream("POST", f"{self.url}/{server.name}/{tool}", headers=headers,
                                       content=json.dumps(arguments).encode(), timeout=timeout) as response:
            if response.headers.get("content-type", "").partition(";")[0].strip() != EVENT_STREAM:
                await response.aread()
                return self._relayed(server, tool, response)
            async for event in httpx2.EventSource(response, max_event_size=None):
                answer = await _streamed(event, context)
                if answer is not None:
                    return answer
        return None

    @contextmanager
    def _reaching(self, server: RemoteServer, tool: str | None, timed_out: str) -> Iterator[None]:
        """Transport failures of a forwarded call, as the caller's errors: 504 (`hub '<name>' <timed_out>`), 503."""
        try:
            yield
        except httpx2.TimeoutException:
            raise ToolTimeout(f"hub '{self.name}' {timed_out}", server=server.name, tool=tool) from None
        except httpx2.HTTPError as exc:
            self._poll_now.set()
            raise server.unavailable(tool, f"hub '{self.name}' unreachable: {_reason(exc, self.url)}") from None

    def _relayed(self, server: RemoteServer, tool: str, response: httpx2.Response) -> Relayed:
        try:
            body = response.json()
        except ValueError:
            raise BadUpstreamResponse(
                f"hub '{self.name}' answered HTTP {response.status_code} with a body that is not JSON",
                server=server.name, tool=tool) from None
        if self.state is MountState.FAILED:
            self._poll_now.set()  # it answers again: refresh its listing now rather than at the next retry
        headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else {}
        return Relayed(response.status_code, body, headers)


class _ListingError(Exception):
    pass


class RelayedError(HubError):
    """Another hub's error answer to a resources/prompts request, passed on with its status and body."""

    def __init__(self, status: int, body: Json, headers: Mapping[str, str], *, server: str) -> None:
        super().__init__(_body_message(body) or f"HTTP {status}", server=server)
        self.status_code = status
        self.type = _body_type(body) or "bad_gateway"
        self._body = body
        self._headers = dict(headers)

    def body(self) -> ErrorBody:
        if isinstance(self._body, dict) and isinstance(self._body.get("error"), dict):
            return cast(ErrorBody, self._body)
        return super().body()

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


def _body_message(body: Json) -> str | None:
    try:
        return str(body["error"]["message"])
    except (KeyError, TypeError):
        return None


def _body_type(body: Json) -> str | None:
    try:
        return str(body["error"]["type"])
    except (KeyError, TypeError):
        return None


def _items(body: Json, key: str) -> list[Json]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadUpstreamResponse(f"a mounted hub's answer has no '{key}' list")
    return items


def _error_message(response: httpx2.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _reason(exc: BaseException, url: str) -> str:
    if isinstance(exc, _ListingError):
        return str(exc)
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect to {url}"
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return f"{url} did not answer within {LIST_TIMEOUT:g}s"
    if isinstance(exc, ValueError | KeyError | TypeError):
        return f"{url}{LISTING_PATH} did not answer a hub listing (is it an mcphub?)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _streamed(event: httpx2.ServerSentEvent, context: CallContext) -> Relayed | None:
    """One event of a forwarded call's stream (jobs_http): progress passed on (None), or the answer."""
    if event.event == "progress":
        data = cast(dict[str, Any], event.json())  # (not an object: a TypeError, which the caller reports)
        if context.progress is not None:
            total = data["total"]
            await context.progress(float(data["progress"]), None if total is None else float(total), data["message"])
        return None
    if event.event == "result":
        return Relayed(200, cast(Json, event.json()), {})
    if event.event == "error":
        data = cast(dict[str, Any], event.json())
        retry_after = data.get("retry_after")
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        return Relayed(int(data["status_code"]), {"error": data["error"]}, headers)
    raise ValueError(f"unknown event {event.event!r}")
