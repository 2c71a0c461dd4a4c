"""Resources and prompts on the HTTP face: four GET routes per server, each through `Invoker.ask`.

    GET /{server}/resources                 {"resources": [...], "resourceTemplates": [...]}
    GET /{server}/resources/read?uri=URI    {"contents": [...]}
    GET /{server}/prompts                   {"prompts": [...]}
    GET /{server}/prompts/{name}?arg=value  {"description": ..., "messages": [...]}

Bodies are MCP's own wire form (camelCase) as the server gave it. Same credentials and scopes as tool
calls (a key limited to some tools gets 403), the one error shape, 404 for an unknown server, resource
or prompt, 422 for a missing `uri` or prompt argument. A server's elicitation or sampling request during
a read or get is declined (an HTTP caller has no channel to answer it).
"""

from __future__ import annotations

import logging

import anyio
from mcp import MCPError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcphub import resources
from mcphub.errors import HubError, InvalidArguments
from mcphub.invoker import Ask, Invoker, Outcome
from mcphub.toolserver import CallContext, State

logger = logging.getLogger(__name__)

OFFER_TIMEOUT = 2.0  # seconds a spec waits to learn whether a server has resources or prompts (else: none shown)


def resource_routes(invoker: Invoker) -> list[Route]:
    """The routes (GET only; put them before `POST /{server}/{tool}`, which they never shadow)."""

    async def ask(request: Request, method: resources.Method, *, uri: str | None = None, name: str | None = None,
                  arguments: dict[str, str] | None = None) -> Outcome | Response:
        server = request.path_params["server"]
        authorization = request.headers.get("authorization")
        try:
            principal = await invoker.authenticate(authorization, server=server, tool=method,
                                                   headers=request.headers)
        except HubError as exc:
            return _error(exc)
        return await invoker.ask(Ask(principal, server, method, uri=uri, name=name, arguments=arguments,
                                     authorization=authorization))

    async def list_resources(request: Request) -> Response:
        listed = await ask(request, "resources/list")
        if isinstance(listed, Response) or listed.status >= 400:
            return _respond(listed)
        templates = await ask(request, "resources/templates/list")
        if isinstance(templates, Response) or templates.status >= 400:
            return _respond(templates)
        return JSONResponse({**listed.body, **templates.body})

    async def read_resource(request: Request) -> Response:
        uri = request.query_params.get("uri")
        if not uri:
            return _error(InvalidArguments(
                "query parameter 'uri' is required: the resource's URI, as GET /{server}/resources lists it",
                [{"loc": ["query", "uri"], "msg": "field required"}], server=request.path_params["server"]))
        return _respond(await ask(request, "resources/read", uri=uri))

    async def list_prompts(request: Request) -> Response:
        return _respond(await ask(request, "prompts/list"))

    async def get_prompt(request: Request) -> Response:
        arguments = dict(request.query_params)
        return _respond(await ask(request, "prompts/get", name=request.path_params["name"], arguments=arguments))

    return [
        Route("/{server}/resources", list_resources, methods=["GET"]),
        Route("/{server}/resources/read", read_resource, methods=["GET"]),
        Route("/{server}/prompts", list_prompts, methods=["GET"]),
        Route("/{server}/prompts/{name}", get_prompt, methods=["GET"]),
    ]


def _respond(outcome: Outcome | Response) -> Response:
    if isinstance(outcome, Response):
        return outcome
    return JSONResponse(outcome.body, status_code=outcome.status, headers=dict(outcome.headers) or None)


def _error(exc: HubError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


async def offered(invoker: Invoker, name: str, authorization: str | None = None) -> frozenset[str]:
    """Which of `resources` and `prompts` the server `name` has (non-empty lists) now, for its spec: a
    server that declares the capability with nothing behind it (every Python SDK server does) gets no
    routes in its spec, so that a client turning each operation into a tool (Open WebUI) sees none."""
    server = invoker.servers().get(name)
    if server is None or server.state is not State.READY or not server.declares():
        return frozenset()
    found: set[str] = set()
    context = CallContext(caller="openapi", authorization=authorization)  # a mounted hub needs the credential
    with anyio.move_on_after(OFFER_TIMEOUT):
        try:
            if "resources" in server.declares() and (
                    await server.list_resources(context) or await server.list_resource_templates(context)):
                found.add("resources")
            if "prompts" in server.declares() and await server.list_prompts(context):
                found.add("prompts")
        except (HubError, MCPError) as exc:
            logger.debug("resources/prompts of '%s' not shown in its spec: %s", name, exc)
    return frozenset(found)
