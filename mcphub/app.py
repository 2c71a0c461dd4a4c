"""The HTTP surface: routing, auth, the one error shape, OpenAPI documents and Swagger UI.

`create_app(supervisor, config)` builds a Starlette app that is a view over the supervisor's handles.
Every server's "sub-app" (`/{server}/openapi.json`, `/{server}/docs`, `POST /{server}/{tool}`) is
served by routes with a path parameter rather than a mounted app per server, so that: the auth check
and the error handler are the same code for every server (a mounted sub-app answers its own 500s
before the parent's handlers see them); hot reload never mutates the route table (a server that
appears or disappears is a dict entry in the supervisor); and the hot path is one route lookup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import jsonschema
import referencing.exceptions
from fastapi.openapi.docs import get_swagger_ui_html
from mcp import MCPError
from mcp.types import Tool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mcphub import __version__, results, schema
from mcphub.auth import Authenticator, Principal
from mcphub.config import HubConfig
from mcphub.errors import (
    HubError,
    InvalidArguments,
    MountLoop,
    NotFound,
    ServerUnavailable,
    Unauthorized,
    error_body,
    exception_line,
)
from mcphub.federation import LISTING_PATH, RemoteMount, RemoteServer
from mcphub.metrics import CONTENT_TYPE, HubMetrics
from mcphub.ratelimit import RateLimiter
from mcphub.runner.api import runner_routes
from mcphub.supervisor import ServerHandle, State, Supervisor

logger = logging.getLogger(__name__)
# The audit trail: one line per tool call (who, server/tool, status, duration; arguments only with
# hub.log_arguments), also as `record.audit` (a dict) for structured handlers. Never a key or a token.
access_logger = logging.getLogger("mcphub.access")
MAX_LOGGED_ARGUMENTS = 2000  # characters of JSON, with hub.log_arguments

MAX_CACHED_VALIDATORS = 4096  # compiled argument validators kept (one per tool and tool-list version)
MAX_VALIDATION_ERRORS = 20  # a body can break a schema in many places; the first few are enough to fix it
SHUTDOWN_RETRY_AFTER = 5  # seconds a client is told to wait when the hub stops under it (a restart)
HANG_UP_WATCH_AFTER = 0.5  # seconds a call runs before the hub watches for a hang-up (under load, p99 > 50 ms)
CLIENT_CLOSED = 499  # nginx's status for "client closed request", used in logs and metrics only


@dataclass
class HubView:
    """What a request needs from config: replaced as a whole on reload."""

    config: HubConfig
    auth: Authenticator


class _Hub:
    def __init__(
        self,
        supervisor: Supervisor,
        config: HubConfig,
        extra_keys: tuple[str, ...],
        servers: Callable[[], Mapping[str, Any]] | None,
        hub_id: str,
    ) -> None:
        self.supervisor = supervisor
        self.extra_keys = extra_keys
        self.hub_id = hub_id
        # the servers this hub serves: local handles and mounted ones (federation.RemoteServer)
        self.servers: Callable[[], Mapping[str, Any]] = servers or (lambda: supervisor.servers)
        self.view = HubView(config, Authenticator(config.auth, extra_keys=extra_keys))
        self.limiter = RateLimiter()  # outlives reloads: a limit that stays the same keeps its bucket
        self.metrics = HubMetrics(self.servers)
        self._validators: dict[tuple[str, str, int], Any] = {}
        self._specs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.mounts: list[RemoteMount] = []
        self.closing = False
        self._in_flight: set[anyio.CancelScope] = set()

    def shut_down(self) -> None:
        """The process is stopping: answer every call in flight, and every new one, 503 at once."""
        self.closing = True
        for scope in list(self._in_flight):
            scope.cancel()

    def reconfigure(self, config: HubConfig) -> None:
        self.view = HubView(config, Authenticator(config.auth, extra_keys=self.extra_keys))
        self._specs.clear()

    # ------------------------------------------------------------------------------------ tool calls

    async def call(self, request: Request) -> Response:
        """POST /{server}/{tool}: authenticate, parse, invoke; the client hanging up cancels the call."""
        server = request.path_params["server"]
        tool = request.path_params["tool"]
        try:
            principal = await self.view.auth.require_async(request.headers.get("authorization"))
        except HubError as exc:
            access_logger.info("- %s/%s %d", server, tool, exc.status_code,
                               extra={"audit": {"principal": None, "server": server, "tool": tool,
                                                "status": exc.status_code}})
            return _error_response(exc)
        raw = await request.body()  # before watching for a hang-up: both read the ASGI receive channel
        outcome = None
        with anyio.CancelScope() as scope:
            if self.closing:
                scope.cancel()
            self._in_flight.add(scope)
            hang_up = _HangUpWatch(request, scope)
            try:
                outcome = await self.invoke(principal, server, tool, body=raw,
                                            authorization=request.headers.get("authorization"))
            finally:
                hang_up.stop()
                self._in_flight.discard(scope)
        if scope.cancelled_caught and hang_up.seen:
            access_logger.info("%s %s/%s %d (client closed)", principal.audit_name, server, tool, CLIENT_CLOSED)
            return Response(status_code=CLIENT_CLOSED)
        if scope.cancelled_caught:
            error = ServerUnavailable("the hub is shutting down; retry shortly", retry_after=SHUTDOWN_RETRY_AFTER,
                                      server=server, tool=tool)
            access_logger.info("%s %s/%s %d (hub stopping)", principal.audit_name, server, tool, error.status_code)
            return _error_response(error)
        assert outcome is not None
        status, body, headers = outcome
        return JSONResponse(body, status_code=status, headers=headers)

    async def invoke(
        self,
        principal: Principal,
        server: str,
        tool: str,
        arguments: Any = None,
        *,
        body: bytes | None = None,
        authorization: str | None = None,
    ) -> tuple[int, Any, dict[str, str] | None]:
        """Call one tool as `principal`: scope check, argument validation, call, result mapping.

        Used by the HTTP route and, in-process, by the model runner. Returns (status, JSON body,
        headers) — an error is the one error shape, never an exception. `arguments` is the parsed
        object; or `body` is the raw request body, parsed here (so a bad body is a 422 too).
        `authorization` is the caller's header, forwarded only to a mounted sibling hub that shares
        this hub's auth (never to an MCP server).
        """
        started = time.perf_counter()
        status, error_type = 200, None
        try:
            handle = self._handle(server)
            principal.check(server)
            tool_def = self._tool(handle, tool)
            principal.check(server, tool)
            self.limiter.acquire(self.view.auth.limits_for(principal, server), server=server, tool=tool)
            if body is not None:
                arguments = _parse_body(body, server, tool)
            if isinstance(handle, RemoteServer):  # the hub that runs it validates; its answer passes through
                status, answer, headers = await handle.forward(tool, arguments or {}, authorization=authorization)
                if status >= 400:
                    error_type = _error_type(answer)
                return status, answer, headers
            arguments = self._validated(handle, tool_def, {} if arguments is None else arguments)
            try:
                result = await handle.call_tool(tool, arguments, caller=principal.audit_name)
            except MCPError as exc:
                raise results.from_mcp_error(exc, server=server, tool=tool) from None
            return 200, results.to_body(result, server=server, tool=tool), None
        except HubError as exc:
            if exc.server is None:
                exc.server = server
            status, error_type = exc.status_code, exc.type
            return status, exc.body(), exc.headers()
        finally:
            elapsed = time.perf_counter() - started
            handles = self.servers()
            if server in handles:  # bounded label values: configured servers only
                known_tool = tool if tool in handles[server].tools else "(unknown)"
                self.metrics.observe(server, known_tool, status, elapsed, error_type)
            self._audit(principal, server, tool, status, elapsed, arguments)

    def _audit(self, principal: Principal, server: str, tool: str, status: int, elapsed: float,
               arguments: Any) -> None:
        record = {"principal": principal.audit_name, "server": server, "tool": tool, "status": status,
                  "duration_ms": round(elapsed * 1000, 1)}
        if not self.view.config.hub.log_arguments:
            access_logger.info("%s %s/%s %d %.1fms", principal.audit_name, server, tool, status, elapsed * 1000,
                               extra={"audit": record})
            return
        shown = json.dumps(arguments, ensure_ascii=False, default=str)
        if len(shown) > MAX_LOGGED_ARGUMENTS:
            shown = shown[:MAX_LOGGED_ARGUMENTS] + "..."
        record["arguments"] = arguments
        access_logger.info("%s %s/%s %d %.1fms %s", principal.audit_name, server, tool, status, elapsed * 1000,
                           shown, extra={"audit": record})

    def _handle(self, server: str) -> ServerHandle:
        handles = self.servers()
        handle = handles.get(server)
        if handle is None:
            raise NotFound(f"no server named '{server}' (servers: {', '.join(sorted(handles)) or 'none'})",
                           server=server)
        return handle

    def _tool(self, handle: ServerHandle, tool: str) -> Tool:
        found = handle.tools.get(tool)
        if found is not None:
            return found
        if handle.state != State.READY and not handle.tools:
            raise handle._unavailable(tool, None)  # never listed yet: cannot tell a typo from a tool
        raise NotFound(f"server '{handle.name}' has no tool '{tool}' (tools: {', '.join(sorted(handle.tools))})",
                       server=handle.name, tool=tool)

    def _validated(self, handle: ServerHandle, tool: Tool, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise InvalidArguments(
                "request body must be a JSON object of the tool's arguments",
                [{"loc": ["body"], "msg": f"expected an object, got {type(arguments).__name__}"}],
                server=handle.name, tool=tool.name,
            )
        validator = self._validator(handle, tool)
        try:
            valid = validator is None or validator.is_valid(arguments)  # the common case costs one pass
        except (referencing.exceptions.Unresolvable, RecursionError) as exc:
            # the tool's schema points nowhere (`mcphub check` reports it): the server judges its arguments
            logger.warning("'%s' tool '%s': input schema cannot be applied (%s); arguments passed unchecked",
                           handle.name, tool.name, exception_line(exc))
            self._validators[(handle.name, tool.name, handle.version)] = None
            valid = True
        if not valid:
            errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))
            if errors:
                details = [{"loc": _loc(e), "msg": e.message} for e in errors[:MAX_VALIDATION_ERRORS]]
                where = ".".join(map(str, errors[0].absolute_path)) or "body"
                raise InvalidArguments(
                    f"arguments do not match the input schema of tool '{tool.name}': {where}: {errors[0].message}",
                    details, server=handle.name, tool=tool.name,
                )
        return arguments

    def _validator(self, handle: ServerHandle, tool: Tool) -> Any:
        key = (handle.name, tool.name, handle.version)
        if key not in self._validators:
            if len(self._validators) > MAX_CACHED_VALIDATORS:  # old tool versions pile up over restarts
                self._validators.clear()
            try:
                cls = jsonschema.validators.validator_for(tool.input_schema, default=jsonschema.Draft202012Validator)
                cls.check_schema(tool.input_schema)
                self._validators[key] = cls(tool.input_schema)
            except jsonschema.SchemaError as exc:
                logger.warning("'%s' tool '%s' has an invalid input schema (%s); arguments are passed unchecked",
                               handle.name, tool.name, exc.message)
                self._validators[key] = None
        return self._validators[key]

    # ---------------------------------------------------------------------------------- documents

    def spec(self, request: Request, server: str | None) -> dict[str, Any]:
        principal = self._docs_principal(request)
        root = request.scope.get("root_path", "")
        handles = self.servers()
        if server is not None:
            handle = self._handle(server)
            if principal is not None:
                principal.check(server)
            chosen = [handle]
        else:
            chosen = [h for h in handles.values() if principal is None or principal.may_use_server(h.name)]
        key = (server, root, principal, tuple((h.name, h.version) for h in chosen))
        cached = self._specs.get(key)
        if cached is not None:
            return cached
        operations = []
        for handle in chosen:
            for tool in handle.tools.values():
                if principal is not None and not principal.may_call(handle.name, tool.name):
                    continue
                if server is None:
                    path, op_id = f"/{handle.name}/{tool.name}", schema.operation_id(f"{handle.name}_{tool.name}")
                else:
                    path, op_id = f"/{tool.name}", schema.operation_id(tool.name)
                operations.append(schema.Operation(path=path, operation_id=op_id, server=handle.name, tool=tool))
        if server is None:
            title, url = "mcphub", root or "/"
            description = f"Tools of {len(chosen)} MCP servers: " + ", ".join(h.name for h in chosen)
        else:
            title, url = f"mcphub: {server}", f"{root}/{server}"
            description = handles[server].config.description or f"Tools of the MCP server '{server}'."
        document = schema.build_spec(
            operations, title=title, version=__version__, description=description,
            server_url=url, secured=self.view.auth.enabled,
        )
        if len(self._specs) > 256:
            self._specs.clear()
        self._specs[key] = document
        return document

    def _docs_principal(self, request: Request) -> Principal | None:
        """None: show everything. Specs are public while hub.public_docs is on; a caller who sends a
        credential sees only what it may call."""
        auth = self.view.auth
        principal = auth.authenticate(request.headers.get("authorization"))
        if principal is None and auth.enabled and not self.view.config.hub.public_docs:
            raise Unauthorized("missing credential: the API documents need one (hub.public_docs is false)")
        return principal if auth.enabled else None

    def listing(self, request: Request) -> dict[str, Any]:
        via = request.headers.get("x-mcphub-via", "")
        if self.hub_id in via.split(","):
            raise MountLoop(f"mount loop: this hub ({self.hub_id}) is mounting itself through another hub")
        principal = self._docs_principal(request)
        servers: dict[str, Any] = {}
        for name, handle in self.servers().items():
            if principal is not None and not principal.may_use_server(name):
                continue
            chain = list(handle.via) if isinstance(handle, RemoteServer) else []
            servers[name] = {
                "state": str(handle.state),
                "description": handle.config.description,
                "last_error": handle.last_error,
                "via": [*chain, self.hub_id],
                "tools": [
                    t.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for t in handle.tools.values()
                    if principal is None or principal.may_call(name, t.name)
                ],
            }
        return {"hub": {"id": self.hub_id, "version": __version__}, "servers": servers}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        servers = {}
        ready = True
        for name, handle in self.servers().items():
            servers[name] = {
                "state": str(handle.state),
                "transport": handle.config.transport,
                "tools": len(handle.tools),
                "required": handle.config.required,
                "restarts": handle.restarts,
                "last_error": handle.last_error,
            }
            if isinstance(handle, RemoteServer):
                servers[name]["hub"] = handle.mount.name
            if handle.config.required and handle.state != State.READY:
                ready = False
        body: dict[str, Any] = {"status": "", "servers": servers}
        if self.mounts:
            body["hubs"] = {m.name: {"url": m.url, "state": m.state, "servers": sorted(m.servers),
                                     "required": m.required, "last_error": m.last_error} for m in self.mounts}
            ready = ready and all(m.state != "failed" for m in self.mounts if m.required)
        body["status"] = "ready" if ready else "not_ready"
        return (200 if ready else 503), body


def create_app(
    supervisor: Supervisor,
    config: HubConfig,
    *,
    api_keys: tuple[str, ...] = (),
    servers: Callable[[], Mapping[str, Any]] | None = None,
    hub_id: str | None = None,
    mounts: Sequence[RemoteMount] = (),
) -> Starlette:
    """A Starlette app serving `supervisor`'s servers, or the map `servers()` returns (an instance's
    local servers plus mounted ones). `api_keys` are extra all-access keys (`--api-key`,
    `MCPHUB_API_KEY`). `hub_id` names this hub in federation listings (loop detection).
    `app.state.hub.reconfigure(new_config)` applies a reload."""
    hub = _Hub(supervisor, config, api_keys, servers, hub_id or uuid.uuid4().hex)
    hub.mounts = list(mounts)

    async def listing(request: Request) -> Response:
        """Raw MCP tool definitions per server, for hubs that mount this one (federation)."""
        await hub.view.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: JSONResponse(hub.listing(request)))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        status, body = hub.readiness()
        return JSONResponse(body, status_code=status)

    async def metrics(request: Request) -> Response:
        return Response(hub.metrics.render(), media_type=CONTENT_TYPE)

    async def index(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return JSONResponse({
            "name": "mcphub",
            "version": __version__,
            "docs": f"{root}/docs",
            "openapi": f"{root}/openapi.json",
            "servers": {
                name: {"state": str(h.state), "openapi": f"{root}/{name}/openapi.json", "docs": f"{root}/{name}/docs"}
                for name, h in hub.servers().items()
            },
        })

    async def combined_spec(request: Request) -> Response:
        await hub.view.auth.prepare(request.headers.get("authorization"))  # JWKS keys for the sync checks
        return _guarded(lambda: JSONResponse(hub.spec(request, None)))

    async def server_spec(request: Request) -> Response:
        await hub.view.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: JSONResponse(hub.spec(request, request.path_params["server"])))

    async def combined_docs(request: Request) -> Response:
        await hub.view.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: _docs(request, "/openapi.json", "mcphub"))

    async def server_docs(request: Request) -> Response:
        server = request.path_params["server"]
        await hub.view.auth.prepare(request.headers.get("authorization"))

        def page() -> Response:
            hub._handle(server)
            return _docs(request, f"/{server}/openapi.json", f"mcphub: {server}")

        return _guarded(page)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route(LISTING_PATH, listing, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", combined_spec, methods=["GET"]),
        Route("/docs", combined_docs, methods=["GET"]),
        Route("/{server}/openapi.json", server_spec, methods=["GET"]),
        Route("/{server}/docs", server_docs, methods=["GET"]),
        Route("/{server}/{tool}", hub.call, methods=["POST"]),
    ]
    if config.runner is not None:  # /v1/... before the /{server}/... patterns
        routes[1:1] = runner_routes(hub)
    middleware = []
    origins = config.hub.cors_origins
    if origins:
        # Off unless origins are listed. Credentials travel in the Authorization header, which a
        # cross-origin fetch may send once the preflight allows it, so the hub never allows cookies
        # (no Access-Control-Allow-Credentials), and so never pairs `*` with credentials.
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                                     allow_headers=["authorization", "content-type"], allow_credentials=False,
                                     expose_headers=["retry-after"], max_age=600))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        HubError: _hub_error_handler, 404: _not_found_handler, 405: _method_handler, 500: _internal_error_handler,
    })
    app.state.hub = hub
    return app


def _loc(error: jsonschema.ValidationError) -> list[Any]:
    """Where an argument error is, FastAPI-style: a missing property points at the property itself."""
    loc: list[Any] = ["body", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        named = [p for p in missing if error.message.startswith(repr(p))]
        if named:
            loc.append(named[0])
    return loc


def _error_type(body: Any) -> str:
    try:
        return str(body["error"]["type"])
    except (KeyError, TypeError):
        return "unknown"


def _parse_body(raw: bytes, server: str, tool: str) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidArguments(
            f"request body is not valid JSON: {exc}", [{"loc": ["body"], "msg": f"invalid JSON: {exc}"}],
            server=server, tool=tool,
        ) from None


def _guarded(build: Callable[[], Response]) -> Response:
    try:
        return build()
    except HubError as exc:
        return _error_response(exc)


def _docs(request: Request, spec_path: str, title: str) -> Response:
    root = request.scope.get("root_path", "")
    hub: _Hub = request.app.state.hub
    hub._docs_principal(request)
    page: HTMLResponse = get_swagger_ui_html(openapi_url=f"{root}{spec_path}", title=title)
    return page


class _HangUpWatch:
    """Cancels `scope` (and so the MCP request: the SDK sends notifications/cancelled) if the HTTP
    client hangs up. Watching needs a task reading the ASGI receive channel; most calls end within
    milliseconds, so that task starts only once a call has run for HANG_UP_WATCH_AFTER. (A client
    that hangs up sooner is noticed then.) Plain asyncio: uvicorn always runs the hub on asyncio, and
    a timer handle is what keeps the common case at a few microseconds."""

    def __init__(self, request: Request, scope: anyio.CancelScope) -> None:
        self.seen = False
        self._request = request
        self._scope = scope
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(HANG_UP_WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        try:
            while (await self._request.receive())["type"] != "http.disconnect":
                pass
        except OSError:  # the server's side of the connection failed: nothing left to watch
            return
        self.seen = True
        self._scope.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _error_response(exc: HubError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


async def _hub_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return _error_response(exc)


async def _not_found_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body("not_found", f"no route for {request.method} {request.url.path}"), status_code=404)


async def _method_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        error_body("method_not_allowed",
                   f"{request.method} is not allowed on {request.url.path} (tools are called with POST)"),
        status_code=405,
    )


async def _internal_error_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error in the hub (see its log)"), status_code=500)
