"""A server's own requests to its client (elicitation, sampling) during a call: relayed or declined.

The hub's connection to a server is one `Client` shared by every caller, and the SDK hands these
requests to the client's callbacks with nothing that ties them to the call that caused them: over stdio
the JSON-RPC request carries no reference to it, and the callback's context holds only the server's
own request id. So the tie is made the one way that cannot pick the wrong caller: a request is relayed
to the call in flight when it is the *only* request in flight on that connection and its caller gave a
back-channel (an MCP-face client that declared the capability, on a 2025 session). Otherwise it is
declined: an elicitation answered `decline` (the tool goes on and its answer reaches the caller), a
sampling request answered with a JSON-RPC error. Roots are not declared to servers at all: they describe
one client's files, and the connection serves many.

A 2026-07-28 connection has no channel for server-initiated requests (`ctx.elicit()` fails in the
server). There a server asks by answering the call itself with an `InputRequiredResult` (SEP-2322: the
Python SDK's `Elicit`/`Sample` resolvers do, for a client that declared the capability); that answer
belongs to the call that got it, so `call_tool` hands its requests to that call's back-channel, no
guessing, and sends the call again with the answers (at most MAX_INPUT_ROUNDS times).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from mcp.client._input_required import run_input_required_driver  # SEP-2322's retry loop (fenced)
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.types import (
    INVALID_REQUEST,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
)
from pydantic import TypeAdapter

from mcphub.toolserver import BackChannel, ProgressFn

logger = logging.getLogger(__name__)

MAX_INPUT_ROUNDS = 10  # rounds of InputRequiredResult per call before it fails (the SDK client's default)
_ANSWER: TypeAdapter[CallToolResult | InputRequiredResult] = TypeAdapter(CallToolResult | InputRequiredResult)


class ServerRequests:
    """The client callbacks of one connection (`elicitation`, `sampling`), and the calls in flight on
    it (`during(back_channel)` around each request the hub sends)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._calls: list[BackChannel | None] = []

    @contextmanager
    def during(self, back_channel: BackChannel | None) -> Iterator[None]:
        self._calls.append(back_channel)
        try:
            yield
        finally:
            self._calls.remove(back_channel)

    def _target(self, kind: str) -> BackChannel | None:
        if len(self._calls) == 1 and self._calls[0] is not None:
            return self._calls[0]
        why = ("no call in flight" if not self._calls else
               f"{len(self._calls)} calls in flight, so it cannot tell whose" if len(self._calls) > 1 else
               "its caller cannot answer (not an MCP session client that declared it)")
        logger.info("'%s' asked for %s: declined (%s)", self.server, kind, why)
        return None

    async def elicitation(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        target = self._target("elicitation")
        if target is None:
            return ElicitResult(action="decline")
        return await target.elicit(params)

    async def sampling(
        self, context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        target = self._target("sampling")
        if target is None:
            return declined_sampling()
        return await target.sample(params)


def declined_sampling() -> ErrorData:
    return ErrorData(code=INVALID_REQUEST, message="Sampling declined: the hub's caller cannot answer it "
                                                   "(only an MCP session client that declared sampling can)")


async def call_tool(session: ClientSession, params: CallToolRequestParams, *, timeout: float,
                    progress: ProgressFn | None, back_channel: BackChannel | None) -> CallToolResult:
    """`tools/call` as sent (the result passes through unvalidated against the tool's outputSchema), and
    if the server answers `InputRequiredResult`, its requests answered by `back_channel` (or declined)
    and the call sent again with the answers."""

    async def send(responses: InputResponses | None, state: str | None) -> CallToolResult | InputRequiredResult:
        sent = params if responses is None and state is None else \
            params.model_copy(update={"input_responses": responses, "request_state": state})
        return await session.send_request(CallToolRequest(params=sent), _ANSWER,
                                          request_read_timeout_seconds=timeout, progress_callback=progress)

    first = await send(None, None)
    if isinstance(first, CallToolResult):
        return first
    return await run_input_required_driver(first, dispatch=_dispatcher(back_channel), retry=send,
                                           max_rounds=MAX_INPUT_ROUNDS)


Dispatch = Callable[[str, InputRequest], Awaitable[InputResponse | ErrorData]]


def _dispatcher(back_channel: BackChannel | None) -> Dispatch:
    async def dispatch(key: str, request: InputRequest) -> InputResponse | ErrorData:
        if isinstance(request, ElicitRequest):
            return ElicitResult(action="decline") if back_channel is None else await back_channel.elicit(request.params)
        if isinstance(request, CreateMessageRequest):
            return declined_sampling() if back_channel is None else await back_channel.sample(request.params)
        return ErrorData(code=INVALID_REQUEST, message="Roots are not available through the hub")

    return dispatch
