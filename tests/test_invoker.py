"""The one call path (mcphub/invoker.py), in-process: a low-level SDK server over the SDK's in-memory
transport through the supervisor's `connect=` seam, and the invoker called as every face calls it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server import Server, ServerRequestContext
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

from mcphub.auth import Principal
from mcphub.config import ServerConfig
from mcphub.invoker import SHUTDOWN_RETRY_AFTER, Call, Invoker, Outcome
from mcphub.supervisor import Supervisor
from mcphub.toolserver import State
from tests.hub import config_of, sample_server

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds any condition below may take on a loaded machine
ME = Principal(name="test")

NODE = {  # a recursive schema: a tree whose nodes allow no other property
    "type": "object",
    "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                       "additionalProperties": False}},
    "properties": {"tree": {"$ref": "#/$defs/node"}},
    "additionalProperties": False,
}
OPEN = {"type": "object", "properties": {}}


class _Tools:
    """A low-level server: `tree` echoes its arguments; `wait` blocks until released."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.server = Server("invoker-test", version="0.0.1", on_list_tools=self._list, on_call_tool=self._call)

    async def _list(self, ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="tree", input_schema=NODE), Tool(name="wait", input_schema=OPEN)])

    async def _call(self, ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        if params.name == "wait":
            self.entered.set()
            await self.release.wait()
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(params.arguments))])


@asynccontextmanager
async def invoker_over(tools: _Tools) -> AsyncIterator[Invoker]:
    config = config_of({"servers": {"t": sample_server()}})  # the config only names the server; `connect` serves it

    @asynccontextmanager
    async def connect(name: str, cfg: ServerConfig, **_: Any) -> AsyncIterator[Client]:
        async with Client(tools.server, cache=None) as client:
            yield client

    async with Supervisor(config, connect=connect) as supervisor:
        assert supervisor.servers["t"].state is State.READY, supervisor.servers["t"].last_error
        yield Invoker(config, lambda: supervisor.servers)


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"children": [node]}
    return {"tree": node}


async def test_an_argument_nested_too_deeply_is_422_for_that_call_and_the_tool_stays_validated() -> None:
    async with invoker_over(_Tools()) as invoker:
        deep = await invoker.invoke(Call(ME, "t", "tree", _nested(5000)))
        assert deep.status == 422, deep.body
        assert "nested too deeply" in deep.body["error"]["message"], deep.body
        # the validator was not switched off by that call: another caller's bad arguments are still caught
        bad = await invoker.invoke(Call(ME, "t", "tree", {"tree": {"children": [{"bogus": 1}]}}))
        assert bad.status == 422, bad.body
        assert bad.body["error"]["errors"][0]["loc"][:3] == ["body", "tree", "children"], bad.body
        fine = await invoker.invoke(Call(ME, "t", "tree", _nested(10)))
        assert fine.status == 200, fine.body


async def test_shut_down_answers_the_call_in_flight_and_every_later_one_503() -> None:
    tools = _Tools()
    async with invoker_over(tools) as invoker:
        outcomes: list[Outcome] = []

        async def call() -> None:
            outcomes.append(await invoker.invoke(Call(ME, "t", "wait", {})))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await tools.entered.wait()  # the server is running the call
                invoker.shut_down()
        later = await invoker.invoke(Call(ME, "t", "tree", {}))
        tools.release.set()
    for outcome in (outcomes[0], later):
        assert outcome.status == 503, outcome.body
        assert outcome.headers == {"Retry-After": str(SHUTDOWN_RETRY_AFTER)}
        assert outcome.body["error"]["message"] == "the hub is shutting down; retry shortly"


async def test_an_unexpected_error_while_connecting_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = config_of({"servers": {"t": sample_server(restart={"initial_delay": 0.01, "max_delay": 0.01})}})
    attempts = 0

    @asynccontextmanager
    async def connect(name: str, cfg: ServerConfig, **_: Any) -> AsyncIterator[Client]:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("a bug in a connect")
        yield  # pragma: no cover - an async generator that never yields

    caplog.set_level(logging.ERROR, logger="mcphub.supervisor")
    async with Supervisor(config, connect=connect) as supervisor:
        handle = supervisor.servers["t"]
        with anyio.fail_after(WAIT):
            while handle.restarts < 3:
                await anyio.sleep(0.01)  # polling our own state, bounded: restarts come every 10 ms
        assert handle.last_error == "RuntimeError: a bug in a connect"
    traced = [r for r in caplog.records if r.exc_info and "a bug in a connect" in r.getMessage()]
    assert attempts >= 3
    assert len(traced) == 1, [r.getMessage() for r in caplog.records]
    assert traced[0].exc_info is not None and traced[0].exc_info[0] is RuntimeError
