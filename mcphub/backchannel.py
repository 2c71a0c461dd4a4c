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

Only servers connected in `mode: legacy` (2025 sessions) can ask at all: a 2026-07-28 connection has no
channel for server-initiated requests (the server's SDK refuses before sending).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mcp.client.session import ClientRequestContext
from mcp.types import (
    INVALID_REQUEST,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
)

from mcphub.toolserver import BackChannel

logger = logging.getLogger(__name__)


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
