"""The tools a chat may use, and how a call reaches them.

`ToolCaller` is all the loop knows: the function definitions to offer, and `call(name, arguments)` →
(ok, JSON-able result or error text). `HubTools` is the implementation the hub uses: the tools of the
servers in `runner.servers` (mounted ones included) that the caller's credential may call, named
`{server}_{tool}` (sanitised as in the combined OpenAPI document), each called through the hub's one
call path, the `Invoker`: the same scope check, rate limit, argument validation, metrics and audit
line as `POST /{server}/{tool}`, with no HTTP hop; bounded by each server's `job_timeout`, as a job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp.types import Tool

from mcphub import schema
from mcphub.auth import Principal
from mcphub.invoker import Call, Invoker
from mcphub.jobs import job_timeout
from mcphub.toolserver import ProgressRelay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    value: Any  # the result body when ok; else an error message (text)


class ToolCaller(Protocol):
    def definitions(self) -> list[dict[str, Any]]:
        """OpenAI function-tool definitions: `{"type": "function", "function": {name, description, parameters}}`."""
        ...

    def has(self, name: str) -> bool: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome: ...


class ToolProgress(Protocol):
    """Where a chat's tool progress goes: the tool's name, then what the server reported."""

    async def __call__(self, name: str, progress: float, total: float | None, message: str | None) -> None: ...


class HubTools:
    """The tools of `servers` (`*`: all) that `principal` may call, through `invoker`.

    `authorization` is the caller's header, which the invoker forwards to a mounted sibling hub that
    shares this hub's auth (and to nothing else)."""

    def __init__(self, invoker: Invoker, principal: Principal, servers: Iterable[str], *,
                 authorization: str | None = None, on_progress: ToolProgress | None = None) -> None:
        self._invoker = invoker
        self._principal = principal
        self._authorization = authorization
        self._on_progress = on_progress
        wanted = set(servers)
        self._routes: dict[str, tuple[str, str]] = {}
        self._definitions: list[dict[str, Any]] = []
        for server, handle in sorted(invoker.servers().items()):
            if "*" not in wanted and server not in wanted:
                continue
            for tool in handle.tools.values():
                if not principal.may_call(server, tool.name):
                    continue
                name = schema.operation_id(f"{server}_{tool.name}")
                if name in self._routes:
                    logger.warning("runner: tool name %s is taken by %s/%s; %s/%s is not offered",
                                   name, *self._routes[name], server, tool.name)
                    continue
                self._routes[name] = (server, tool.name)
                self._definitions.append(_definition(name, tool))

    def definitions(self) -> list[dict[str, Any]]:
        return self._definitions

    def has(self, name: str) -> bool:
        return name in self._routes

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Under the server's `job_timeout`, not its `timeout`: a slow tool mid-chat is waited for as a job
        would be, not cut off with a 504. Progress notifications go to `on_progress`, in order, before the
        call's outcome."""
        server, tool = self._routes[name]
        progress = None
        if self._on_progress is not None:
            forward = self._on_progress

            async def forwarded(progress: float, total: float | None, message: str | None) -> None:
                await forward(name, progress, total, message)

            progress = ProgressRelay(forwarded)
        outcome = await self._invoker.invoke(Call(self._principal, server, tool, arguments,
                                                  authorization=self._authorization, progress=progress,
                                                  timeout=job_timeout(self._invoker, server, tool)))
        if progress is not None:
            await progress.settled()
        if outcome.status == 200:
            return ToolOutcome(True, outcome.body)
        return ToolOutcome(False, _error_text(outcome.status, outcome.body))


def _definition(name: str, tool: Tool) -> dict[str, Any]:
    parameters = dict(tool.input_schema or {})
    parameters.setdefault("type", "object")
    if parameters.get("type") == "object":
        parameters.setdefault("properties", {})
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    description = tool.description or (tool.title if hasattr(tool, "title") else None)
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def _error_text(status: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"the call failed with HTTP status {status}"
    text = f"{error.get('type', 'error')}: {error.get('message', '')}"
    details = error.get("errors") or []
    for detail in details[1:] and details:  # the message quotes the first; list them all when several
        loc = [str(part) for part in detail.get("loc", [])]
        text += f"\n- {'.'.join(loc[1:] if loc[:1] == ['body'] else loc) or 'arguments'}: {detail.get('msg', '')}"
    return text
