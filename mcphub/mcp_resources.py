"""The MCP face's resources and prompts, and the back-channel for a server's requests during a call.

On `/{server}/mcp` a server's resources, resource templates and prompts are served as the server gives
them; on `/mcp` those of every server the caller may use, with names and URIs made unique per server
(`{server}_{prompt}`, `mcphub://{server}/{uri}`: see resources.py). Every request goes through
`Invoker.ask` (scope, rate limit, metrics, audit line). A key limited to some tools sees none.

What an MCP client sees when something fails: a server's own JSON-RPC error (an unknown resource)
verbatim; an unknown or forbidden prompt -32602 and an unknown or forbidden resource -32002 from the
hub, as servers answer them; a missing prompt argument -32602; a server that is down or too slow
-32603 with the hub's reason. On `/mcp`, a list leaves out servers that cannot answer it now.

The back-channel: a 2025 session client that declared elicitation or sampling gets the server's
requests made during its call (`tools/call`, `resources/read`, `prompts/get`) on that call's own
stream; see backchannel.py for when the hub can tie a server's request to a call, and when it declines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import anyio
from mcp import MCPError
from mcp.server import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    PaginatedRequestParams,
    Prompt,
    ReadResourceRequestParams,
    ReadResourceResult,
    RequestId,
    Resource,
    ResourceTemplate,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request

from mcphub import backchannel, resources
from mcphub.auth import Principal
from mcphub.invoker import Ask, Invoker, Outcome
from mcphub.toolserver import BackChannel

logger = logging.getLogger(__name__)

FACE = "mcp"  # the metrics label (as mcp_face.FACE)
BACK_CHANNEL_TIMEOUT = 600.0  # seconds a client gets to answer an elicitation (a person filling in a form)

Context: TypeAlias = ServerRequestContext[dict[str, Any]]
Caller = Callable[[Context], tuple[Principal, str | None]]  # who is asking, and which server the URL names


class McpResources:
    """The resources/prompts handlers of the MCP face's low-level `Server` (`handlers()`)."""

    def __init__(self, invoker: Invoker, caller: Caller) -> None:
        self.invoker = invoker
        self._caller = caller

    def handlers(self) -> dict[str, Any]:
        return {"on_list_resources": self._list_resources, "on_list_resource_templates": self._list_templates,
                "on_read_resource": self._read_resource, "on_list_prompts": self._list_prompts,
                "on_get_prompt": self._get_prompt}

    # ----------------------------------------------------------------------------------- lists

    async def _list_resources(self, ctx: Context, params: PaginatedRequestParams | None) -> ListResourcesResult:
        found = await self._list(ctx, "resources/list")
        listed: list[Resource] = []
        for server, items in found.items():
            for item in items:
                assert isinstance(item, Resource)
                listed.append(item if server is None else
                              item.model_copy(update={"uri": resources.combined_uri(server, item.uri)}))
        return ListResourcesResult(resources=listed)

    async def _list_templates(self, ctx: Context, params: PaginatedRequestParams | None) -> ListResourceTemplatesResult:
        found = await self._list(ctx, "resources/templates/list")
        listed: list[ResourceTemplate] = []
        for server, items in found.items():
            for item in items:
                assert isinstance(item, ResourceTemplate)
                listed.append(item if server is None else item.model_copy(
                    update={"uri_template": resources.combined_uri(server, item.uri_template)}))
        return ListResourceTemplatesResult(resource_templates=listed)

    async def _list_prompts(self, ctx: Context, params: PaginatedRequestParams | None) -> ListPromptsResult:
        found = await self._list(ctx, "prompts/list")
        listed: list[Prompt] = []
        for server, items in found.items():
            for item in items:
                assert isinstance(item, Prompt)
                listed.append(item if server is None else
                              item.model_copy(update={"name": resources.combined_prompt(server, item.name)}))
        return ListPromptsResult(prompts=listed)

    async def _list(self, ctx: Context, method: resources.Method) -> dict[str | None, list[Any]]:
        """One server's list (key None: names as they are), or every visible server's (key: its name)."""
        principal, view = self._caller(ctx)
        authorization = _authorization(ctx)
        if view is not None:
            outcome = await self.invoker.ask(Ask(principal, view, method, authorization=authorization, face=FACE))
            if outcome.error_type == "forbidden":  # a key limited to tools: nothing to see
                return {}
            return {None: _answer(outcome, method)}
        if principal.tools is not None:  # limited to tools: none to see (and no refusal per server to audit)
            return {}
        names = [n for n in self.invoker.servers() if principal.may_use_server(n)]
        found: dict[str, list[Any]] = {}

        async def one(name: str) -> None:
            outcome = await self.invoker.ask(Ask(principal, name, method, authorization=authorization, face=FACE))
            if isinstance(outcome.answer, list):
                found[name] = outcome.answer
            else:
                logger.debug("%s of '%s' left out of /mcp: %s", method, name, outcome.body)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return {name: found[name] for name in names if name in found}  # in the hub's server order

    # ----------------------------------------------------------------------------- read, get

    async def _read_resource(self, ctx: Context, params: ReadResourceRequestParams) -> ReadResourceResult:
        principal, view = self._caller(ctx)
        if view is None:
            server, uri = resources.split_uri(params.uri)
            if server not in self.invoker.servers() or not principal.may_use_server(server):
                raise MCPError(resources.RESOURCE_NOT_FOUND, f"Unknown resource: {params.uri} (no server '{server}')")
        else:
            server, uri = view, params.uri
        outcome = await self.invoker.ask(Ask(principal, server, "resources/read", uri=uri,
                                             authorization=_authorization(ctx), face=FACE,
                                             back_channel=back_channel(ctx)))
        result = _answer(outcome, "resources/read")
        assert isinstance(result, ReadResourceResult)
        if view is None:
            result = result.model_copy(update={"contents": [
                c.model_copy(update={"uri": resources.combined_uri(server, c.uri)}) for c in result.contents]})
        return result

    async def _get_prompt(self, ctx: Context, params: GetPromptRequestParams) -> GetPromptResult:
        principal, view = self._caller(ctx)
        if view is None:
            visible = [n for n in self.invoker.servers() if principal.may_use_server(n)]
            server, name = resources.split_prompt(params.name, visible)
        else:
            server, name = view, params.name
        outcome = await self.invoker.ask(Ask(principal, server, "prompts/get", name=name,
                                             arguments=params.arguments, authorization=_authorization(ctx),
                                             face=FACE, back_channel=back_channel(ctx)))
        result = _answer(outcome, "prompts/get")
        assert isinstance(result, GetPromptResult)
        return result


def _answer(outcome: Outcome, method: resources.Method) -> Any:
    """The answer, or the MCP error a client expects (module docstring)."""
    if outcome.answer is not None:
        return outcome.answer
    if outcome.mcp_error is not None:
        raise outcome.mcp_error
    message = _message(outcome) or f"{method} failed with HTTP status {outcome.status}"
    if outcome.error_type in ("not_found", "forbidden"):
        code = resources.RESOURCE_NOT_FOUND if method == "resources/read" else INVALID_PARAMS
        raise MCPError(code, message)
    if outcome.error_type == "invalid_arguments":
        raise MCPError(INVALID_PARAMS, message)
    retry = outcome.headers.get("Retry-After")
    raise MCPError(INTERNAL_ERROR, message + (f" (retry after {retry}s)" if retry else ""))


def _message(outcome: Outcome) -> str | None:
    try:
        return str(outcome.body["error"]["message"])
    except (KeyError, TypeError):
        return None


def _authorization(ctx: Context) -> str | None:
    request = ctx.request
    return request.headers.get("authorization") if isinstance(request, Request) else None


# ---------------------------------------------------------------------------------- back-channel


def back_channel(ctx: Context) -> BackChannel | None:
    """Where a server's elicitation and sampling requests during this request go: this request's own
    stream, when the client is a 2025 session that declared either (a 2026-07-28 client has no
    back-channel: there the server's requests are declined)."""
    if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS or ctx.request_id is None:
        return None
    session = ctx.session
    declared = session.client_capabilities
    if declared is None or (declared.elicitation is None and declared.sampling is None):
        return None
    if not session.can_send_request:
        return None
    return _SessionBackChannel(session, ctx.request_id, elicit=declared.elicitation is not None,
                               sample=declared.sampling is not None)


class _SessionBackChannel:
    """A `toolserver.BackChannel` over the MCP-face client's session, on the stream of its request."""

    def __init__(self, session: ServerSession, request_id: RequestId, *, elicit: bool, sample: bool) -> None:
        self._session = session
        self._related = ServerMessageMetadata(related_request_id=request_id)
        self._elicit = elicit
        self._sample = sample

    async def elicit(self, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        if not self._elicit:
            return ElicitResult(action="decline")
        try:
            return await self._session.send_request(ElicitRequest(params=params), ElicitResult,
                                                    request_read_timeout_seconds=BACK_CHANNEL_TIMEOUT,
                                                    metadata=self._related)
        except MCPError as exc:  # the client's own refusal: pass it on
            return ErrorData(code=exc.code, message=exc.message, data=exc.data)
        except Exception as exc:  # the client went away, or answered garbage: the server goes on
            logger.info("elicitation not relayed: %s", exc)
            return ElicitResult(action="decline")

    async def sample(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        if not self._sample:
            return backchannel.declined_sampling()
        kind: type[CreateMessageResult | CreateMessageResultWithTools] = \
            CreateMessageResultWithTools if params.tools else CreateMessageResult
        try:
            return await self._session.send_request(CreateMessageRequest(params=params), kind,
                                                    request_read_timeout_seconds=BACK_CHANNEL_TIMEOUT,
                                                    metadata=self._related)
        except MCPError as exc:
            return ErrorData(code=exc.code, message=exc.message, data=exc.data)
        except Exception as exc:
            logger.info("sampling not relayed: %s", exc)
            return backchannel.declined_sampling()

