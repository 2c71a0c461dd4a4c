"""The HTTP face: routing, the one error shape, OpenAPI documents, Swagger UI, listings and readiness.

`create_app(invoker)` builds a Starlette app over one `Invoker`: a tool call is translated into an
`invoker.Call` and its `Outcome` back into a response; everything between (who, may they, limits,
validation, the call, result mapping, metrics and audit) is the invoker's. Every server's "sub-app"
(`/{server}/openapi.json`, `/{server}/docs`, `POST /{server}/{tool}`) is served by routes with a path
parameter rather than a mounted app per server, so that: the auth check and the error handler are the
same code for every server (a mounted sub-app answers its own 500s before the parent's handlers see
them); hot reload never mutates the route table (a server that appears or disappears is a dict entry
in the supervisor); and the hot path is one route lookup.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcphub import __version__, pages, schema
from mcphub.auth import Principal
from mcphub.config import HubConfig
from mcphub.errors import HubError, MountLoop, Unauthorized, error_body
from mcphub.federation import LISTING_PATH, MountState, RemoteMount
from mcphub.guard import Guard, Hosts
from mcphub.hangup import HangUpWatch
from mcphub.http_resources import offered, resource_routes
from mcphub.invoker import CLIENT_CLOSED, Call, Invoker
from mcphub.jobs import JobRunner
from mcphub.jobs_http import JobsFace, wanted
from mcphub.mcp_face import METADATA_PATH, McpFace
from mcphub.metrics import CONTENT_TYPE
from mcphub.oauth_http import forget_instance, oauth_routes, user_instances
from mcphub.shared_jobs import RedisJobStore
from mcphub.toolserver import Json, State

logger = logging.getLogger(__name__)

MAX_CACHED_SPECS = 256  # OpenAPI documents kept (per server, root path, caller's scope and tool versions)
MAX_CACHED_SPEC_BYTES = 64 * 2**20  # ... and at most this many bytes of them (a 1,000-tool document is ~1.3 MB)


class _HttpFace:
    """The HTTP face over one invoker: tool calls, OpenAPI documents, listings and readiness."""

    def __init__(self, invoker: Invoker, hub_id: str, mounts: Sequence[RemoteMount]) -> None:
        self.invoker = invoker
        self.hub_id = hub_id
        self.mounts = list(mounts)
        self._specs: dict[tuple[object, ...], bytes] = {}  # rendered: a cached fetch only sends them
        self._spec_bytes = 0
        self._specs_of: HubConfig | None = None  # the config the cached specs were built under
        self._operations = schema.OperationCache()  # shared by the documents of every scope (mcphub/schema.py)
        shared = None if invoker.state is None else RedisJobStore(invoker.state, lambda: invoker.config.jobs.ttl)
        self.jobs = JobsFace(JobRunner(invoker, shared))  # Prefer: respond-async, Accept: text/event-stream, /jobs

    # ------------------------------------------------------------------------------------ tool calls

    async def call(self, request: Request) -> Response:
        """POST /{server}/{tool}: who → the body → the invoker; the client hanging up cancels the call."""
        server = request.path_params["server"]
        tool = request.path_params["tool"]
        authorization = request.headers.get("authorization")
        try:
            principal = await self.invoker.authenticate(authorization, server=server, tool=tool,
                                                        headers=request.headers)
            answer = wanted(request)
        except HubError as exc:
            return _error_response(exc)
        if answer is not None:  # a job, or an event stream (mcphub/jobs_http.py)
            return await self.jobs.call(request, Call(principal, server, tool, authorization=authorization), answer)
        outcome = None
        with anyio.CancelScope() as scope:
            hang_up = HangUpWatch(request.receive, scope, body_pending=True)

            async def read_body() -> bytes:  # by the invoker, once the call may go ahead (hub.limits)
                try:
                    body = await request.body()
                except ClientDisconnect:  # the caller left while sending: a hang-up like any other (499)
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
                    raise
                hang_up.body_read()  # the receive channel is free for the watch now
                return body

            try:
                outcome = await self.invoker.invoke(
                    Call(principal, server, tool, authorization=authorization, read_body=read_body))
            finally:
                hang_up.stop()
        if outcome is None:
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(outcome.body, status_code=outcome.status, headers=dict(outcome.headers) or None)

    # ---------------------------------------------------------------------------------- documents

    def spec(self, request: Request, server: str | None, offers: frozenset[str] = frozenset()) -> bytes:
        """The OpenAPI document as JSON, as JSONResponse would render it."""
        principal = self._docs_principal(request)
        root = request.scope.get("root_path", "")
        if server is not None:
            one = self.invoker.server(server, principal=principal)
            if principal is not None:
                principal.check(server)
            chosen = [one]
        else:
            chosen = [s for s in self.invoker.servers().values()
                      if principal is None or principal.may_use_server(s.name)]
        if self._specs_of is not self.invoker.config:  # a reload: keys, scopes or descriptions may differ
            self._specs.clear()
            self._spec_bytes = 0
            self._operations.clear()
            self._specs_of = self.invoker.config
        scope = None if principal is None else (principal.servers, principal.tools)  # what the document shows
        key = (server, root, scope, offers, tuple((s.name, s.version) for s in chosen))
        cached = self._specs.get(key)
        if cached is not None:
            return cached
        operations = []
        for each in chosen:
            for tool in each.tools.values():
                if principal is not None and not principal.may_call(each.name, tool.name):
                    continue
                if server is None:
                    path, op_id = f"/{each.name}/{tool.name}", schema.operation_id(f"{each.name}_{tool.name}")
                else:
                    path, op_id = f"/{tool.name}", schema.operation_id(tool.name)
                operations.append(schema.Operation(path=path, operation_id=op_id, server=each.name, tool=tool))
        if server is None:
            title, url = "mcphub", root or "/"
            description = f"Tools of {len(chosen)} MCP servers: " + ", ".join(s.name for s in chosen)
        else:
            title, url = f"mcphub: {server}", f"{root}/{server}"
            description = chosen[0].description or f"Tools of the MCP server '{server}'."
        document = schema.build_spec(
            operations, title=title, version=__version__, description=description,
            server_url=url, secured=self.invoker.auth.enabled,
            jobs_root=root,  # Prefer: respond-async, Accept: text/event-stream
            cache=self._operations,
        )
        if offers and (principal is None or principal.tools is None):  # a server's resources and prompts
            schema.add_resource_operations(document, resources="resources" in offers, prompts="prompts" in offers)
        rendered = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        while self._specs and (len(self._specs) >= MAX_CACHED_SPECS
                               or self._spec_bytes + len(rendered) > MAX_CACHED_SPEC_BYTES):
            self._spec_bytes -= len(self._specs.pop(next(iter(self._specs))))  # the oldest first
        self._specs[key] = rendered
        self._spec_bytes += len(rendered)
        return rendered

    def _docs_principal(self, request: Request) -> Principal | None:
        """None: show everything. Specs are public while hub.public_docs is on; a caller who sends a
        credential sees only what it may call."""
        auth = self.invoker.auth
        principal = auth.authenticate(request.headers.get("authorization"), request.headers)
        if principal is None and auth.enabled and not self.invoker.config.hub.public_docs:
            raise Unauthorized("missing credential: the API documents need one (hub.public_docs is false)")
        return principal if auth.enabled else None

    def listing(self, request: Request) -> dict[str, Json]:
        via = request.headers.get("x-mcphub-via", "")
        if self.hub_id in via.split(","):
            raise MountLoop(f"mount loop: this hub ({self.hub_id}) is mounting itself through another hub")
        principal = self._docs_principal(request)
        servers: dict[str, Json] = {}
        for name, each in self.invoker.servers().items():
            if principal is not None and not principal.may_use_server(name):
                continue
            servers[name] = {
                "state": str(each.state),
                "description": each.description,
                "region": each.region,
                "last_error": each.last_error,
                "via": [*each.via, self.hub_id],
                "tools": [
                    t.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for t in each.tools.values()
                    if principal is None or principal.may_call(name, t.name)
                ],
            }
        return {"hub": {"id": self.hub_id, "version": __version__}, "servers": servers}

    def status_page(self, request: Request) -> Response:
        """GET / for a browser: what /readyz says, narrowed like the specs to what a credential may use."""
        try:
            principal = self._docs_principal(request)
            if self.status_viewer(request) is None:
                raise Unauthorized("missing credential: the status page needs one (hub.public_status is false)")
        except HubError as exc:
            return pages.error(exc)
        shown = [s for s in self.invoker.servers().values() if principal is None or principal.may_use_server(s.name)]
        tools = {s.name: sum(principal is None or principal.may_call(s.name, t) for t in s.tools) for s in shown}
        mounts = [m for m in self.mounts if principal is None or any(map(principal.may_use_server, m.servers))]
        ready = self.readiness(lambda name: True)[0] == 200
        return pages.status(servers=shown, tools=tools, mounts=mounts, ready=ready,
                            origin=f"{request.url.scheme}://{request.url.netloc}",
                            root=request.scope.get("root_path", ""), secured=self.invoker.auth.enabled)

    def status_viewer(self, request: Request) -> Callable[[str], bool] | None:
        """Which servers `/` and `/readyz` name to this caller: every one while hub.public_status is on
        (or no credential is configured); else those its credential may use, none (None) without one."""
        auth = self.invoker.auth
        if self.invoker.config.hub.public_status or not auth.enabled:
            return lambda name: True
        try:
            principal = auth.authenticate(request.headers.get("authorization"), request.headers)
        except HubError:
            principal = None  # a probe with a stale credential still learns ready / not ready
        return None if principal is None else principal.may_use_server

    def readiness(self, shown: Callable[[str], bool] | None) -> tuple[int, dict[str, Json]]:
        """The status, and every server's state, or only those `shown` names (None: no names at all)."""
        servers: dict[str, Json] = {}
        ready = True
        for name, each in self.invoker.servers().items():
            if each.required and each.state is not State.READY:
                ready = False
            if shown is None or not shown(name):
                continue
            servers[name] = {
                "state": str(each.state),
                "transport": each.transport,
                "tools": len(each.tools),
                "required": each.required,
                "restarts": each.restarts,
                "last_error": each.last_error,
            }
            if each.hub is not None:
                servers[name]["hub"] = each.hub
            if each.region is not None:
                servers[name]["region"] = each.region
            user_instances = getattr(each, "user_instances", None)  # a per-user server (user_servers.py)
            if user_instances is not None:  # its state above is its listing instance's
                servers[name]["user_instances"] = user_instances
        body: dict[str, Json] = {"status": ""}
        if shown is not None:
            body["servers"] = servers
        if self.mounts and shown is not None:
            body["hubs"] = {m.name: {"url": m.url, "state": str(m.state), "servers": sorted(m.servers),
                                     "required": m.required, "last_error": m.last_error} for m in self.mounts}
        ready = ready and all(m.state is not MountState.FAILED for m in self.mounts if m.required)
        if self.invoker.state is not None and shown is not None:  # shown, never a 503: see mcphub/state.py
            body["state"] = dict(self.invoker.state.status())
        body["status"] = "ready" if ready else "not_ready"
        return (200 if ready else 503), body


def create_app(invoker: Invoker, *, hub_id: str | None = None, mounts: Sequence[RemoteMount] = (),
               backend_transport: httpx2.AsyncBaseTransport | None = None, hosts: Hosts | None = None) -> Starlette:
    """The HTTP face of `invoker`. `hub_id` names this hub in federation listings (loop detection);
    `mounts` are the hubs it mounts (their state shows in /readyz). `app.state.invoker` is the invoker
    (reloads go to `invoker.reconfigure`). `backend_transport`: how the runner reaches its model backend
    (default: the network; tests pass a mock or an ASGI transport). `hosts`: the names the listener
    answers to (the Host check of mcphub/guard.py; None: not checked, for an app not on serve's socket).
    `app.state.mcp` is the MCP face (`/mcp`, `/{server}/mcp`): it serves while `async with
    app.state.mcp.running()`."""
    hub = _HttpFace(invoker, hub_id or uuid.uuid4().hex, mounts)
    mcp = McpFace(invoker, hub.jobs.runner)

    async def listing(request: Request) -> Response:
        """Raw MCP tool definitions per server, for hubs that mount this one (federation)."""
        await invoker.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: JSONResponse(hub.listing(request)))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))
        status, body = hub.readiness(hub.status_viewer(request))
        return JSONResponse(body, status_code=status)

    async def metrics(request: Request) -> Response:
        if not invoker.config.hub.public_status:  # the series are labelled with every server's name
            try:
                await invoker.auth.require_async(request.headers.get("authorization"))
            except HubError as exc:
                return _error_response(exc)
        return Response(invoker.metrics.render(), media_type=CONTENT_TYPE)

    async def index(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        await invoker.auth.prepare(request.headers.get("authorization"))
        if pages.wants_html(request.headers.get("accept")):
            return hub.status_page(request)
        shown = hub.status_viewer(request)
        body: dict[str, Json] = {"name": "mcphub", "version": __version__, "docs": f"{root}/docs",
                                 "openapi": f"{root}/openapi.json"}
        if shown is not None:
            body["servers"] = {
                name: {"state": str(s.state), "openapi": f"{root}/{name}/openapi.json", "docs": f"{root}/{name}/docs"}
                for name, s in invoker.servers().items() if shown(name)
            }
        return JSONResponse(body, headers={"Vary": "Accept"})

    async def resource_metadata(request: Request) -> Response:
        return JSONResponse(mcp.metadata(request))

    async def combined_spec(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))  # JWKS keys for the sync checks
        return _guarded(lambda: Response(hub.spec(request, None), media_type="application/json"))

    async def server_spec(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))
        offers = await offered(invoker, request.path_params["server"], request.headers.get("authorization"))
        return _guarded(lambda: Response(hub.spec(request, request.path_params["server"], offers),
                                         media_type="application/json"))

    async def combined_docs(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: _docs(hub, request, "/openapi.json", "mcphub"))

    async def server_docs(request: Request) -> Response:
        server = request.path_params["server"]
        await invoker.auth.prepare(request.headers.get("authorization"))

        def page() -> Response:
            principal = hub._docs_principal(request)  # before naming any server (hub.public_docs)
            invoker.server(server, principal=principal)
            if principal is not None:
                principal.check(server)
            return _docs(hub, request, f"/{server}/openapi.json", f"mcphub: {server}")

        return _guarded(page)

    async def jobs_spec(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))

        def document() -> Response:
            hub._docs_principal(request)  # public under hub.public_docs, like the other specs
            return JSONResponse(schema.jobs_spec(version=__version__, server_url=request.scope.get("root_path") or "/",
                                                 secured=invoker.auth.enabled))

        return _guarded(document)

    async def jobs_docs(request: Request) -> Response:
        await invoker.auth.prepare(request.headers.get("authorization"))
        return _guarded(lambda: _docs(hub, request, "/jobs/openapi.json", "mcphub: jobs"))

    async def authenticated(request: Request) -> Principal:
        return await invoker.auth.require_async(request.headers.get("authorization"), request.headers)

    async def asset(request: Request) -> Response:
        found = pages.asset(request.path_params["file"])
        return found or await _not_found_handler(request, Exception())

    routes = [
        Route("/", index, methods=["GET"]),
        Route(pages.ASSETS_PATH + "/{file}", asset, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route(LISTING_PATH, listing, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(METADATA_PATH, resource_metadata, methods=["GET"]),
        Route(METADATA_PATH + "/{endpoint:path}", resource_metadata, methods=["GET"]),
        Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]),
        # /oauth/...: users connect their own accounts to servers with oauth: (mcphub/oauth.py)
        *oauth_routes(lambda: invoker.oauth, authenticated, instances=lambda: user_instances(invoker.servers()),
                      forgotten=lambda server, user: forget_instance(invoker.servers(), server, user)),
        Route("/openapi.json", combined_spec, methods=["GET"]),
        Route("/docs", combined_docs, methods=["GET"]),
        Route("/jobs/openapi.json", jobs_spec, methods=["GET"]),  # (before a server named 'jobs' would have it)
        Route("/jobs/docs", jobs_docs, methods=["GET"]),
        Route("/{server}/openapi.json", server_spec, methods=["GET"]),
        Route("/{server}/docs", server_docs, methods=["GET"]),
        Route("/{server}/mcp", mcp, methods=["GET", "POST", "DELETE"]),  # (a tool named `mcp` is MCP-only)
        Route("/jobs", hub.jobs.list, methods=["GET"]),
        Route("/jobs/{job}", hub.jobs.get, methods=["GET"]),
        Route("/jobs/{job}", hub.jobs.delete, methods=["DELETE"]),  # (a server 'jobs' keeps POST)
        *resource_routes(invoker),  # GET /{server}/resources..., /{server}/prompts...
        Route("/{server}/{tool}", hub.call, methods=["POST"]),
    ]
    # /v1/... before the /{server}/... patterns; without runner: (or until a reload adds one) they answer a
    # 404 naming it; a server named v1 still gets its POST /v1/models
    routes[1:1] = _runner_routes(invoker, backend_transport)
    middleware = []
    origins = invoker.config.hub.cors_origins
    if origins:
        # Off unless origins are listed. Credentials travel in the Authorization header, which a
        # cross-origin fetch may send once the preflight allows it, so the hub never allows cookies
        # (no Access-Control-Allow-Credentials), and so never pairs `*` with credentials.
        # (The MCP face's browser clients also send and read the session and protocol-version headers.)
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["authorization", "content-type", "mcp-session-id",
                                                    "mcp-protocol-version", "last-event-id"],
                                     allow_credentials=False, max_age=600,
                                     expose_headers=["retry-after", "mcp-session-id", "www-authenticate"]))
    middleware.append(Middleware(Guard, invoker=invoker, hosts=hosts))  # inside CORS: its refusals carry CORS headers
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        HubError: _hub_error_handler, 404: _not_found_handler, 405: _method_handler, 500: _internal_error_handler,
    })
    app.state.invoker = invoker
    app.state.mcp = mcp
    app.state.jobs = hub.jobs.runner  # runs jobs while `async with app.state.jobs.running()`
    app.router.redirect_slashes = False  # its redirect is built from the Host header; _not_found_handler hints instead
    return app


def _guarded(build: Callable[[], Response]) -> Response:
    try:
        return build()
    except HubError as exc:
        return _error_response(exc)


def _docs(hub: _HttpFace, request: Request, spec_path: str, title: str) -> Response:
    root = request.scope.get("root_path", "")
    hub._docs_principal(request)
    return pages.swagger_ui(title=title, spec_url=f"{root}{spec_path}", root=root)


def _error_response(exc: HubError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


async def _hub_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return _error_response(exc)


async def _not_found_handler(request: Request, exc: Exception) -> Response:
    path = request.url.path
    hint = f" (did you mean {path.rstrip('/')}?)" if path.endswith("/") and path.rstrip("/") else ""
    return JSONResponse(error_body("not_found", f"no route for {request.method} {path}{hint}"), status_code=404)


async def _method_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        error_body("method_not_allowed",
                   f"{request.method} is not allowed on {request.url.path} (tools are called with POST)"),
        status_code=405,
    )


async def _internal_error_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error in the hub (see its log)"), status_code=500)


def _runner_routes(invoker: Invoker, backend_transport: httpx2.AsyncBaseTransport | None) -> list[Route]:
    """The model runner's routes (runner/api.py), its code imported at their first request: a hub that is
    never asked for a chat never loads it (tests/test_cost_fences.py)."""
    loaded: list[Route] = []

    def lazily(index: int) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not loaded:
                from mcphub.runner.api import runner_routes

                loaded.extend(runner_routes(invoker, backend_transport=backend_transport))
            answer: Response = await loaded[index].endpoint(request)
            return answer
        return endpoint

    return [Route("/v1/models", lazily(0), methods=["GET"]), Route("/v1/chat/completions", lazily(1), methods=["POST"])]
