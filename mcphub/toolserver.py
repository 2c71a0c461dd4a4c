"""What the call path sees of a tool server, wherever it runs: one protocol, one state type.

A `ToolServer` is either a local server (`supervisor.ServerHandle`: a set of replicas the hub runs
itself) or a mounted one (`federation.RemoteServer`: a server another hub runs). The invoker, the
faces and the listings read the same fields and call `call()` without asking which one they hold,
the way an HTTP client never asks which transport it was given.

    state        one of `State`, the same for both kinds
    tools        the tool definitions it serves now (already filtered by its `tools:` allow/deny)
    version      bumps whenever `tools` changes (cache keys for validators and specs)
    call()       the server's own answer: an MCP `CallToolResult` from a local server, or a `Relayed`
                 answer from a mounted hub, which passes through unchanged
    unavailable  the ServerUnavailable error to raise for it, with its state and last error

Resources and prompts (the MCP face and `GET /{server}/resources|prompts`), each a request to the
server: `list_resources`, `list_resource_templates`, `list_prompts` (every page, bounded; empty for a
server that does not declare the capability), `read_resource`, `get_prompt`. A server's requests to
its client (elicitation, sampling) during a call go to the call's `CallContext.back_channel`.

Imports nothing from mcphub but errors (a leaf, like errors.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import anyio
from mcp.types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    GetPromptResult,
    Prompt,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    Tool,
)

from mcphub.errors import ServerUnavailable

Json: TypeAlias = Any  # a value as json.loads returns it (dict, list, str, int, float, bool or None)


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"

    @classmethod
    def parse(cls, text: object) -> State:
        """A state another hub reported; one this hub does not know counts as failed."""
        try:
            return cls(str(text))
        except ValueError:
            return cls.FAILED


@dataclass(frozen=True, slots=True)
class Relayed:
    """An answer another hub gave to a call: its status, JSON body and Retry-After, passed on unchanged."""

    status: int
    body: Json
    headers: Mapping[str, str]


class ProgressFn(Protocol):
    """Where a call's progress notifications go: the server's absolute progress, its total and message."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None: ...


class BackChannel(Protocol):
    """Where a server's own requests during a call go: the MCP-face client that made the call (over its
    session), which declared it can answer them. A call without one has these requests declined."""

    async def elicit(self, params: ElicitRequestParams) -> ElicitResult | ErrorData: ...

    async def sample(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData: ...


PROGRESS_SETTLE = 1.0  # seconds a call's answer waits for its last progress notifications to be passed on


class ProgressRelay:
    """Passes a call's progress notifications on to `forward`, in order, and lets the call's answer wait
    for the last of them (`settled`). The SDK hands each notification to a task of its own, started before
    the answer is processed: without the wait, the last ones would arrive after the answer (an MCP client's
    stream is closed by then; a chat would print them after the result)."""

    def __init__(self, forward: ProgressFn) -> None:
        self._forward = forward
        self._pending = 0
        self._idle = anyio.Event()
        self._lock = anyio.Lock()  # one at a time, in the order they arrived

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self._pending += 1
        try:
            async with self._lock:
                await self._forward(progress, total, message)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def settled(self) -> None:
        await anyio.lowlevel.checkpoint()  # callbacks already started run first
        with anyio.move_on_after(PROGRESS_SETTLE):
            while self._pending:
                self._idle = anyio.Event()
                await self._idle.wait()


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who a call is for, as far as a server may know it.

    `caller` is the principal's audit name (`key:NAME`, `jwt:SUBJECT`): a local server sees it only
    where its config says `forward_identity`. `authorization` is the caller's own header: sent only to a
    mounted sibling hub that shares this hub's auth, never to an MCP server. `progress`: where the
    server's `notifications/progress` for this call go (None: the caller asked for none). `timeout`:
    seconds this call may take, instead of the server's own `timeout` (a job's `job_timeout`).
    `back_channel`: where the server's elicitation and sampling requests during the call go (None:
    declined). `user_headers`: the headers that named a forwarded user (`auth.Principal.vouchers`), sent
    with the call to a mounted hub only, so that it acts as the same user."""

    caller: str
    authorization: str | None = None
    progress: ProgressFn | None = None
    timeout: float | None = None
    back_channel: BackChannel | None = None
    user_headers: tuple[tuple[str, str], ...] = ()


Answer: TypeAlias = CallToolResult | Relayed


class ToolServer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def state(self) -> State: ...

    @property
    def tools(self) -> Mapping[str, Tool]: ...

    @property
    def version(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def restarts(self) -> int: ...

    @property
    def description(self) -> str | None: ...

    @property
    def region(self) -> str | None:
        """Where it runs (a label from its config; a mounted one's from its hub's listing)."""
        ...

    @property
    def transport(self) -> str:
        """`stdio`, `sse`, `streamable-http`, or `hub` for a mounted server."""
        ...

    @property
    def required(self) -> bool: ...

    @property
    def hub(self) -> str | None:
        """The mounted hub it comes from; None for a local server."""
        ...

    @property
    def via(self) -> Sequence[str]:
        """The ids of the hubs it came through (federation loop detection); empty for a local server."""
        ...

    def unavailable(self, tool: str | None, reason: str | None = None) -> ServerUnavailable:
        """The error for a call it cannot take now: its state, last error and when to retry."""
        ...

    async def call(self, tool: str, arguments: dict[str, Json], context: CallContext) -> Answer:
        """Run `tool`. Returns the server's own answer (an `isError` result included). Raises
        `mcp.MCPError` for the server's JSON-RPC error answer (the tool's own error, e.g. -32602), and a
        HubError (ServerUnavailable, ToolTimeout, BadUpstreamResponse) when there is no answer."""
        ...

    # Resources and prompts: the server's own answers. Raise `mcp.MCPError` for the server's JSON-RPC
    # error (an unknown resource), a HubError when there is no answer (as `call`), or for a mounted
    # server the other hub's error (its status and body, passed on unchanged).

    def declares(self) -> frozenset[str]:
        """Which of `resources` and `prompts` the server says it has (its connection's capabilities now)."""
        ...

    async def list_resources(self, context: CallContext) -> list[Resource]: ...

    async def list_resource_templates(self, context: CallContext) -> list[ResourceTemplate]: ...

    async def read_resource(self, uri: str, context: CallContext) -> ReadResourceResult: ...

    async def list_prompts(self, context: CallContext) -> list[Prompt]: ...

    async def get_prompt(self, name: str, arguments: dict[str, str] | None, context: CallContext) -> GetPromptResult:
        ...


def unavailable(server: ToolServer, tool: str | None, reason: str | None, *, retry_after: int) -> ServerUnavailable:
    """`MCP server 'x' [on hub 'h'] is not available (state: failed; last error: ...)`: one wording for both kinds."""
    detail = reason or f"state: {server.state}" + (f"; last error: {server.last_error}" if server.last_error else "")
    where = f" on hub '{server.hub}'" if server.hub else ""
    return ServerUnavailable(f"MCP server '{server.name}'{where} is not available ({detail}). See GET /readyz.",
                             retry_after=retry_after, server=server.name, tool=tool)


def same_tools(a: Mapping[str, Tool], b: Mapping[str, Tool]) -> bool:
    """Whether two tool lists are the same, definitions and order included."""
    return list(a) == list(b) and all(a[n].model_dump(mode="json") == b[n].model_dump(mode="json") for n in a)
