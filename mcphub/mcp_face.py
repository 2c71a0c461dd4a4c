"""The MCP face: every server the caller may use as one MCP endpoint (`/mcp`, tools named
`{server}_{tool}` like the combined spec's operationIds), and each server as its own (`/{server}/mcp`,
tools under their own names), over streamable HTTP.

Both protocol generations on the same URLs: the SDK's session manager answers 2026-07-28 requests
(no session: any replica can answer any request) and 2025-11-25 sessions (`initialize`,
`Mcp-Session-Id`). This module only translates: the caller is authenticated per HTTP request with the
hub's own keys and JWTs (a session stays bound to the credential that opened it), every `tools/call`
goes through `Invoker.invoke` (scopes, rate limits, validation, metrics labelled `face="mcp"`, the
audit line), and a local server's `CallToolResult` is returned verbatim. Progress notifications pass
through when the client sent a progress token; a client's cancel cancels the upstream call (the SDK
sends `notifications/cancelled`). Session clients get `notifications/tools/list_changed` when the tools
they may see change.

How the hub's failures look to an MCP client: an unknown (or forbidden) tool is a JSON-RPC error
-32602, as the reference servers answer it; a server that is down, a timeout, a rate limit or bad
arguments are a tool result with `isError` and the hub's reason, so a model can read it and go on.

Resources, resource templates and prompts of every upstream, and a server's elicitation and sampling
requests during a call: mcp_resources.py (names on `/mcp`: `{server}_{prompt}`, `mcphub://{server}/{uri}`).

Two session managers over one low-level `Server`: one in SSE mode for 2025 sessions and for 2026 requests
that may need to stream (a progress token, a subscription: a look at the raw body), one in JSON mode for
every other 2026 request (no second task and stream per request: a third less CPU per call), where a
client's hang-up is watched for here (hangup.py) to cancel the call.

(Fenced: the SDK's `StreamableHTTPSessionManager` routing by header, `ServerRequestContext.request`, the
session owner in `scope["user"]`, the runner's use of `Server.create_initialization_options()` and
`get_tool_input_schema` in the request's task; tests/test_contracts.py lists them.)
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp import MCPError, UrlElicitationRequiredError
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import DEFAULT_MAX_REQUEST_BODY_SIZE, StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ElicitRequestURLParams,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from mcphub import __version__, mcp_tasks, schema
from mcphub.auth import Principal
from mcphub.errors import HubError, OAuthRequired, error_body
from mcphub.hangup import HangUpWatch
from mcphub.invoker import Call, Invoker, Outcome
from mcphub.jobs import JobRunner
from mcphub.mcp_resources import McpResources, back_channel
from mcphub.toolserver import Json, ProgressRelay, ToolServer

logger = logging.getLogger(__name__)

FACE = "mcp"  # the metrics label of calls that came through this face
SESSION_IDLE_TIMEOUT = 30 * 60.0  # seconds a 2025 session may sit unused before it is closed (the SDK's default)
LIST_CHANGED_POLL = 1.0  # seconds between looks for changed tool lists (to tell session clients)
MAX_CACHED_SCHEMAS = 10_000  # tools whose input schema was looked at for `x-mcp-header` annotations
MAX_LISTENERS = 10_000  # 2025 sessions remembered for list_changed (the SDK's own session limit)
METADATA_PATH = "/.well-known/oauth-protected-resource"  # RFC 9728
# who is calling and through which endpoint, for the SDK's schema lookup (it runs in the request's task)
_CALLER: ContextVar[tuple[Principal, str | None]] = ContextVar("mcphub_mcp_caller")
_PRINCIPAL = "mcphub.principal"  # ASGI scope keys: who is calling, and which server the URL names (None: all)
_VIEW = "mcphub.view"
# hub errors the caller can act on as "no such tool" (the reference servers answer those -32602)
_NO_SUCH_TOOL = frozenset({"not_found", "forbidden"})


@dataclass(frozen=True, slots=True)
class _Target:
    server: str
    tool: str


@dataclass(frozen=True, slots=True)
class _Listener:
    session: ServerSession
    view: str | None
    principal: Principal

    def sees(self, server: str) -> bool:
        return (self.view is None or self.view == server) and self.principal.may_use_server(server)


class _HubServer(Server[dict[str, Any]]):
    """The SDK's low-level server, announcing `tools.listChanged` to 2025 session clients, and `tasks` when
    it serves them (mcp_tasks.py)."""

    tasks = False

    def create_initialization_options(self, notification_options: NotificationOptions | None = None,
                                      experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                                      extensions: dict[str, dict[str, Any]] | None = None) -> InitializationOptions:
        options = super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), experimental_capabilities, extensions)
        if self.tasks:
            options.capabilities = options.capabilities.model_copy(update={"tasks": mcp_tasks.CAPABILITY})
        return options


class McpFace:
    """The MCP endpoints over one invoker. An ASGI app (mount it at `/mcp` and `/{server}/mcp`) that
    must be running (`async with face.running()`) while it serves."""

    def __init__(self, invoker: Invoker, jobs: JobRunner | None = None) -> None:
        self.invoker = invoker
        self._server = _HubServer("mcphub", version=__version__, on_list_tools=self._list_tools,
                                  on_call_tool=self._call_tool, get_tool_input_schema=self._input_schema,
                                  **McpResources(invoker, _caller).handlers())
        if jobs is not None:  # task-augmented calls as jobs, tasks/* (mcp_tasks.py)
            self._server.tasks = True
            tasks = mcp_tasks.McpTasks(jobs, call_of=self._task_call, caller=lambda ctx: _caller(ctx)[0],
                                       to_result=_to_result)
            tasks.install(self._server)
        # 2025 sessions, and 2026 requests that need a stream (a progress token, a subscription)
        self._streaming = StreamableHTTPSessionManager(self._server, session_idle_timeout=SESSION_IDLE_TIMEOUT)
        # every other 2026 request: answered as plain JSON, without the SDK's second task and stream per
        # request (measured: a third less hub CPU per call); a hang-up is watched for here instead
        self._plain = StreamableHTTPSessionManager(self._server, json_response=True, stateless=True)
        self._stop = anyio.Event()
        self._serving = False
        # 2025 sessions that listed tools (by session id): how to reach them, the view and who (list_changed)
        self._listeners: dict[str, _Listener] = {}
        self._names: dict[tuple[object, ...], dict[str, _Target]] = {}
        self._annotated: dict[tuple[str, int, str], bool] = {}  # (server, version, tool) → has Mcp-Param headers

    # ------------------------------------------------------------------------------------ lifetime

    @asynccontextmanager
    async def running(self) -> AsyncIterator[McpFace]:
        """Serve until the block ends or `shut_down()`: open sessions and streams end with it."""
        async with anyio.create_task_group() as tg:
            await tg.start(self._run)
            tg.start_soon(self._watch_tool_lists)
            try:
                yield self
            finally:
                self.shut_down()
                tg.cancel_scope.cancel()

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self._streaming.run(), self._plain.run():
            self._serving = True
            task_status.started()
            try:
                await self._stop.wait()
            finally:
                self._serving = False

    def shut_down(self) -> None:
        """The hub is stopping: close every session and stream now (not after uvicorn's grace period)."""
        self._stop.set()

    # ----------------------------------------------------------------------------------- HTTP side

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        view = request.path_params.get("server")
        response = await self._admit(request, view)
        if response is not None:
            await response(scope, receive, send)
            return
        if request.method == "DELETE":  # the client ends its session
            self._listeners.pop(request.headers.get(MCP_SESSION_ID_HEADER, ""), None)
        version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if request.method != "POST" or version is None or version in HANDSHAKE_PROTOCOL_VERSIONS:
            if self.invoker.auth.enabled:  # the SDK binds a 2025 session to the credential that opened it
                principal: Principal = scope[_PRINCIPAL]
                scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=principal.audit_name, scopes=[]))
            await self._streaming.handle_request(scope, receive, send)  # (the SDK's own era routing)
            return
        body, more = await _read_body(receive)
        replay = _replayed(body, more, receive)
        if more or _needs_stream(body):
            await self._streaming.handle_request(scope, replay, send)
            return
        with anyio.CancelScope() as call:
            hang_up = HangUpWatch(replay, call)
            try:
                await self._plain.handle_request(scope, replay, send)
            finally:
                hang_up.stop()

    async def _admit(self, request: Request, view: str | None) -> Response | None:
        """Who is calling, and may they use this endpoint? None: go on (the scope now says who)."""
        if not self._serving:
            return JSONResponse(error_body("unavailable", "the MCP face is not running (the hub is stopping)"),
                                status_code=503, headers={"Retry-After": "5"})
        auth = self.invoker.auth
        authorization = request.headers.get("authorization")
        try:
            await auth.prepare(authorization)
            principal = auth.require(authorization, request.headers)
            if view is not None:
                self.invoker.server(view, principal=principal)  # (its 404 lists only what the caller may use)
                principal.check(view)
        except HubError as exc:
            headers = exc.headers()
            if exc.status_code == 401:
                headers = {**headers, "WWW-Authenticate": f'Bearer resource_metadata="{metadata_url(request)}"'}
            return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)
        request.scope[_PRINCIPAL] = principal
        request.scope[_VIEW] = view
        _CALLER.set((principal, view))
        return None

    def metadata(self, request: Request) -> dict[str, Json]:
        """RFC 9728 protected-resource metadata for the MCP endpoint the request's path names."""
        endpoint = request.path_params.get("endpoint", "mcp")
        root = request.scope.get("root_path", "")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        body: dict[str, Json] = {
            "resource": f"{origin}{root}/{endpoint}",
            "resource_name": "mcphub",
            "bearer_methods_supported": ["header"],
        }
        jwt = self.invoker.config.auth.jwt
        if jwt is not None and jwt.issuer:
            body["authorization_servers"] = [jwt.issuer]
        return body

    # ------------------------------------------------------------------------------------ MCP side

    async def _list_tools(self, ctx: ServerRequestContext[dict[str, Any]],
                          params: PaginatedRequestParams | None) -> ListToolsResult:
        principal, view = _caller(ctx)
        session_id = ctx.request.headers.get(MCP_SESSION_ID_HEADER) if isinstance(ctx.request, Request) else None
        if session_id and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:  # a 2025 session: tell it of changes
            self._listeners.pop(session_id, None)
            self._listeners[session_id] = _Listener(ctx.session, view, principal)
            while len(self._listeners) > MAX_LISTENERS:  # the oldest first (sessions end without telling us)
                self._listeners.pop(next(iter(self._listeners)))
        return ListToolsResult(tools=self._visible(principal, view))

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        """The input schema of tool `name` as the caller of this request sees it (the SDK checks a 2026
        request's `Mcp-Param-*` headers against it; without this it would list every tool per call)."""
        caller = _CALLER.get(None)
        if caller is None:
            return None
        principal, view = caller
        servers = self.invoker.servers()
        target = self._target(view, name, servers)
        if target is None or target.server not in servers or not principal.may_call(target.server, target.tool):
            return None
        server = servers[target.server]
        tool = server.tools.get(target.tool)
        if tool is None:
            return None
        key = (target.server, server.version, target.tool)
        annotated = self._annotated.get(key)
        if annotated is None:  # a schema without `x-mcp-header` has nothing to check: skip the SDK's walk
            if len(self._annotated) > MAX_CACHED_SCHEMAS:
                self._annotated.clear()
            annotated = self._annotated[key] = "x-mcp-header" in json.dumps(tool.input_schema)
        return tool.input_schema if annotated else None

    def _visible(self, principal: Principal, view: str | None) -> list[Tool]:
        servers = self._servers(view)
        if view is not None:
            return [t for t in servers[view].tools.values() if principal.may_call(view, t.name)] \
                if view in servers else []
        tools = []
        for name, target in self._combined_names(servers).items():
            if principal.may_call(target.server, target.tool):
                tools.append(servers[target.server].tools[target.tool].model_copy(update={"name": name}))
        return tools

    def _servers(self, view: str | None) -> Mapping[str, ToolServer]:
        servers = self.invoker.servers()
        return servers if view is None else {k: v for k, v in servers.items() if k == view}

    def _target(self, view: str | None, name: str, servers: Mapping[str, ToolServer]) -> _Target | None:
        """The tool a name on this endpoint means: its own name on `/{server}/mcp` (the invoker answers an
        unknown one), `{server}_{tool}` on `/mcp` (None when no tool has it)."""
        return _Target(view, name) if view is not None else self._combined_names(servers).get(name)

    def _combined_names(self, servers: Mapping[str, ToolServer]) -> dict[str, _Target]:
        """`{server}_{tool}` (sanitised like the combined spec's operationIds) → the tool; the first wins a clash."""
        key = tuple((s.name, s.version) for s in servers.values())
        names = self._names.get(key)
        if names is None:
            names = {}
            for server in servers.values():
                for tool in server.tools:
                    names.setdefault(schema.operation_id(f"{server.name}_{tool}"), _Target(server.name, tool))
            if len(self._names) > 64:
                self._names.clear()
            self._names[key] = names
        return names

    def _task_call(self, ctx: ServerRequestContext[dict[str, Any]], params: CallToolRequestParams) -> Call:
        """A task-augmented tools/call as the invoker's Call (run as a job: no progress or back-channel of
        the request's own, which ends with the CreateTaskResult)."""
        principal, view = _caller(ctx)
        target = self._target(view, params.name, self.invoker.servers())
        if target is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
        request = ctx.request
        authorization = request.headers.get("authorization") if isinstance(request, Request) else None
        return Call(principal, target.server, target.tool, arguments=params.arguments or {},
                    authorization=authorization, face=FACE)

    async def _call_tool(self, ctx: ServerRequestContext[dict[str, Any]],
                         params: CallToolRequestParams) -> CallToolResult:
        principal, view = _caller(ctx)
        target = self._target(view, params.name, self.invoker.servers())
        if target is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
        progress = None
        if ctx.meta is not None and ctx.meta.get("progress_token") is not None:
            progress = ProgressRelay(ctx.session.report_progress)
        request = ctx.request
        authorization = request.headers.get("authorization") if isinstance(request, Request) else None
        outcome = await self.invoker.invoke(Call(principal, target.server, target.tool,
                                                 arguments=params.arguments or {}, authorization=authorization,
                                                 face=FACE, progress=progress, back_channel=back_channel(ctx)))
        if progress is not None:
            await progress.settled()
        if outcome.error_type == OAuthRequired.type:
            _ask_to_connect(ctx, outcome)  # a client that takes URL elicitations gets one (else the text)
        return _to_result(outcome)

    # ----------------------------------------------------------------------------- list_changed

    async def _watch_tool_lists(self) -> None:
        """Tell each 2025 session whose visible tools changed (a restart, a reload, the server's own
        list_changed). Polled: the hub's catalog is rebuilt on reload, there is no one event to wait on."""
        seen = self._fingerprint()
        while True:
            await anyio.sleep(LIST_CHANGED_POLL)
            now = self._fingerprint()
            if now == seen:
                continue
            changed = {name for name in now.keys() | seen.keys() if now.get(name) != seen.get(name)}
            seen = now
            for session_id, each in list(self._listeners.items()):
                if any(each.sees(name) for name in changed):
                    try:
                        await each.session.send_tool_list_changed()
                    except Exception as exc:  # the session ended: forget it
                        logger.debug("tools/list_changed not delivered: %s", exc)
                        self._listeners.pop(session_id, None)

    def _fingerprint(self) -> dict[str, tuple[int, str]]:
        return {name: (s.version, str(s.state)) for name, s in self.invoker.servers().items()}


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, up to the SDK's own limit (it answers a bigger one 413); True if there is more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False  # the client left: the SDK's read will see it
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
            return b"".join(chunks), True


def _replayed(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive`, with the body already read from it handed out first."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


def _needs_stream(body: bytes) -> bool:
    """Whether a 2026 request may need to send notifications before its answer (a cheap look at the raw
    bytes: a false positive only costs the streaming path)."""
    return b"progressToken" in body or b"subscriptions/listen" in body


def metadata_url(request: Request) -> str:
    """Where the protected-resource metadata of the endpoint `request` went to is (RFC 9728's layout,
    under the hub's root path so that it is reachable through the same proxy)."""
    root = request.scope.get("root_path", "")
    path = request.url.path
    if root and path.startswith(root):
        path = path[len(root):]
    return f"{request.url.scheme}://{request.url.netloc}{root}{METADATA_PATH}{path}"


def _caller(ctx: ServerRequestContext[dict[str, Any]]) -> tuple[Principal, str | None]:
    request = ctx.request
    if not isinstance(request, Request) or _PRINCIPAL not in request.scope:
        raise MCPError(INVALID_PARAMS, "no caller: the MCP face serves HTTP requests only")
    principal: Principal = request.scope[_PRINCIPAL]
    view: str | None = request.scope[_VIEW]
    return principal, view


def _to_result(outcome: Outcome) -> CallToolResult:
    """The invoker's answer as MCP: the server's own result verbatim where there is one."""
    if outcome.result is not None:
        return outcome.result
    if outcome.mcp_error is not None:
        raise outcome.mcp_error
    if outcome.status < 400:  # a mounted hub's answer: its JSON body
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(outcome.body, ensure_ascii=False))],
                              structured_content=outcome.body if isinstance(outcome.body, dict) else None)
    message = _message(outcome.body) or f"the call failed with HTTP status {outcome.status}"
    if outcome.error_type in _NO_SUCH_TOOL:
        raise MCPError(INVALID_PARAMS, message)
    retry = outcome.headers.get("Retry-After") or outcome.headers.get("retry-after")
    if retry:
        message += f" (retry after {retry}s)"
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _ask_to_connect(ctx: ServerRequestContext[dict[str, Any]], outcome: Outcome) -> None:
    """The user must connect their account first (mcphub/oauth.py): to a 2025-11-25 session client that
    declared URL elicitation, the spec's URLElicitationRequiredError (-32042) with the connect link."""
    declared = ctx.session.client_capabilities if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS else None
    if declared is None or declared.elicitation is None or declared.elicitation.url is None:
        return
    try:
        url, message = str(outcome.body["error"]["connect_url"]), str(outcome.body["error"]["message"])
    except (KeyError, TypeError):
        return
    raise UrlElicitationRequiredError([ElicitRequestURLParams(mode="url", message=message, url=url,
                                                              elicitation_id=uuid.uuid4().hex)], message)


def _message(body: Json) -> str | None:
    try:
        return str(body["error"]["message"])
    except (KeyError, TypeError):
        return None
