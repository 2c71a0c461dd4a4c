"""Tools a server runs as tasks (MCP 2025-11-25 tasks, SEP-1686), driven by the hub: create, poll, fetch
the result, cancel.

A server that declares `tasks.requests.tools.call` and lists a tool with `execution.taskSupport`
`optional` or `required` gets every call of that tool (a job's, or a synchronous one, which a `required`
tool would refuse otherwise) as a task-augmented `tools/call`. The hub then polls `tasks/get` (at the
task's `pollInterval`, within MIN_POLL..MAX_POLL), hands each new `statusMessage` to the call's progress
(progress = how many states it has seen, no total, message = the status message), and once the task
ends (or asks for input) fetches `tasks/result`, which answers what the `tools/call` would have: the
call's answer maps as any other; a server that answers the call at once, without a task (its right for
an `optional` tool), is answered that way. A call that is cancelled (a job's DELETE, a hang-up) or times
out sends `tasks/cancel` (bounded, CANCEL_GRACE), also when it is given up while the task is being created
(that answer is waited for, CANCEL_GRACE at most, to learn the task's id). A task the server cancels,
or one that failed without a result, is the tool's JSON-RPC error. A connection that closes under the
task ends the call at once (the supervisor's `closed` event), as CONNECTION_CLOSED.

`input_required`: the server's requests come on the `tasks/result` request (the TypeScript SDK queues
them there), as server-to-client requests of the connection, so the hub's usual back-channel relay
(backchannel.py) answers them, or declines them when it cannot tell whose they are.

The SDK (mcp 2.3) has the 2025-11-25 task types but no client method for them. `tasks/get`,
`tasks/result`, `tasks/cancel` go through the public `ClientSession.send_request` (it skips its
per-version result check for methods outside the core tables). The task-augmented `tools/call` cannot:
`send_request` checks a `tools/call` answer against `CallToolResult` and rejects a `CreateTaskResult`
(`content` missing). So it goes one level down, to the session's dispatcher's `send_raw_request` (the
public `Dispatcher` protocol, reached through `ClientSession._dispatcher`: fenced in
tests/test_contracts.py), which answers the raw result. Nothing here frames JSON-RPC.

(2026-07-28 connections carry tasks as the `io.modelcontextprotocol/tasks` extension instead; no
server the hub runs speaks it yet, so a modern connection never takes this path.)
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.shared.dispatcher import CallOptions
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequest,
    CancelTaskRequestParams,
    CancelTaskResult,
    CreateTaskResult,
    GetTaskPayloadRequest,
    GetTaskPayloadRequestParams,
    GetTaskRequest,
    GetTaskRequestParams,
    GetTaskResult,
    ServerCapabilities,
    Task,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcphub.toolserver import ProgressFn

logger = logging.getLogger(__name__)

MIN_POLL = 0.05  # seconds between tasks/get at least (a server that suggests 0)
MAX_POLL = 5.0  # seconds between tasks/get at most (a status message, or a timeout, is seen this late at worst)
DEFAULT_POLL = 1.0  # seconds between tasks/get when the server suggests nothing
CANCEL_GRACE = 2.0  # seconds tasks/cancel may take once the call is given up (a hung server never answers)
TTL_MARGIN = 60.0  # seconds the server is asked to keep a task past the call's own timeout (to fetch its result)
TASK_SUPPORT = frozenset({"optional", "required"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def runs_as_task(capabilities: ServerCapabilities, version: str, tool: Tool | None) -> bool:
    """Whether calls of `tool` go as tasks: it says `optional` or `required`, and its server (on a
    2025-era connection: `version`) declares task-augmented tools/call in its `capabilities`."""
    execution = tool.execution if tool is not None else None
    if execution is None or execution.task_support not in TASK_SUPPORT:
        return False
    tasks = capabilities.tasks
    return (tasks is not None and tasks.requests is not None and tasks.requests.tools is not None
            and tasks.requests.tools.call is not None and version in HANDSHAKE_PROTOCOL_VERSIONS)


async def call_tool(session: ClientSession, params: CallToolRequestParams, *, timeout: float,
                    progress: ProgressFn | None, closed: anyio.Event) -> CallToolResult:
    """`tools/call` as a task, followed to its end within `timeout` seconds; the server's answer."""
    created: list[Task | CallToolResult] = []
    ended = False
    try:
        await _create(session, params, timeout, created)
        task = created[0]
        if isinstance(task, CallToolResult):  # answered at once, without a task
            ended = True
            return task
        with anyio.fail_after(timeout):
            mirror = _Mirror(progress)
            await mirror(task)
            while task.status == "working":
                with anyio.move_on_after(_interval(task)):
                    await closed.wait()
                if closed.is_set():
                    raise MCPError(CONNECTION_CLOSED, "Connection closed")
                task = await session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id=task.task_id)),
                                                  GetTaskResult, request_read_timeout_seconds=timeout)
                await mirror(task)
            ended = task.status in TERMINAL
            if task.status == "cancelled":
                raise MCPError(INTERNAL_ERROR, f"the server cancelled the tool's task {task.task_id}"
                               + (f": {task.status_message}" if task.status_message else ""))
            # completed, failed, or input_required (its requests come on this request): the call's answer
            try:
                result = await session.send_request(
                    GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=task.task_id)),
                    CallToolResult, request_read_timeout_seconds=timeout)
            except MCPError as exc:
                if task.status != "failed" or exc.code == CONNECTION_CLOSED:
                    raise
                raise MCPError(exc.code, f"the tool's task {task.task_id} failed"
                               + (f": {task.status_message}" if task.status_message else f" ({exc.message})"),
                               exc.data) from None
            ended = True
            return result
    finally:
        if not ended and created and isinstance(created[0], Task):
            await _cancel(session, created[0].task_id)


async def _create(session: ClientSession, params: CallToolRequestParams, timeout: float,
                  created: list[Task | CallToolResult]) -> None:
    """The task-augmented tools/call: its task (or the server's plain answer) into `created`. Shielded,
    so that a call given up meanwhile (a job's DELETE, a hang-up) still learns the task's id and can
    cancel it (else the server's task runs on, unseen); once given up, the answer is waited for
    CANCEL_GRACE seconds at most."""
    shield = anyio.CancelScope(shield=True)
    failed: list[Exception] = []
    async with anyio.create_task_group() as group:
        async def create() -> None:
            try:
                with shield:
                    created.append(await _send_create(session, params, timeout))
            except Exception as exc:  # raised as it is below (not wrapped in the group's ExceptionGroup)
                failed.append(exc)
            finally:
                group.cancel_scope.cancel()  # the watcher

        async def watch() -> None:
            try:
                await anyio.sleep_forever()
            finally:  # the call is given up (or the create ended): bound the shielded wait
                shield.deadline = min(shield.deadline, anyio.current_time() + CANCEL_GRACE)

        group.start_soon(watch)
        group.start_soon(create)
    if failed:
        raise failed[0]
    if not created:  # given up, and the server did not answer within CANCEL_GRACE: the task is unknown
        logger.info("a task-augmented tools/call given up got no answer within %gs", CANCEL_GRACE)
        await anyio.lowlevel.checkpoint()  # the cancellation that gave it up
        raise MCPError(INTERNAL_ERROR, "the tool's task was not created")


async def _send_create(session: ClientSession, params: CallToolRequestParams,
                       timeout: float) -> Task | CallToolResult:
    """The task; or, from a server that answers this call without one (it may, for a tool whose
    `taskSupport` is `optional`), its CallToolResult (`content`, no `task`)."""
    wire = params.model_dump(by_alias=True, mode="json", exclude_none=True)
    wire["task"] = {"ttl": int((timeout + TTL_MARGIN) * 1000)}
    version = session.protocol_version
    opts: CallOptions = {"timeout": timeout}
    if version is not None:  # what the session's own sends carry (streamable HTTP reads it)
        opts["headers"] = {MCP_PROTOCOL_VERSION_HEADER: version}
    raw = await session._dispatcher.send_raw_request("tools/call", wire, opts)
    if "task" not in raw and "content" in raw:
        return CallToolResult.model_validate(raw, by_name=False)
    return CreateTaskResult.model_validate(raw, by_name=False).task


async def _cancel(session: ClientSession, task_id: str) -> None:
    """Ask the server to stop the task; bounded, and whatever it answers (it may have ended, or gone)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_GRACE) as waited:
        try:
            await session.send_request(CancelTaskRequest(params=CancelTaskRequestParams(task_id=task_id)),
                                       CancelTaskResult, request_read_timeout_seconds=CANCEL_GRACE)
            logger.debug("task %s cancelled", task_id)
            return
        except Exception as exc:  # a task that ended meanwhile, a closed connection: nothing left to stop
            logger.debug("tasks/cancel of %s: %s", task_id, exc)
    if waited.cancelled_caught:
        logger.info("tasks/cancel of %s got no answer within %gs", task_id, CANCEL_GRACE)


def _interval(task: Task) -> float:
    if task.poll_interval is None:
        return DEFAULT_POLL
    return min(MAX_POLL, max(MIN_POLL, task.poll_interval / 1000))


class _Mirror:
    """A task's states as the call's progress: each new (status, message) one step further."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self._progress = progress
        self._seen: tuple[str, str | None] | None = None
        self._steps = 0

    async def __call__(self, task: Task) -> None:
        state = (task.status, task.status_message)
        if self._progress is None or state == self._seen:
            return
        self._seen = state
        self._steps += 1
        await self._progress(self._steps, None, task.status_message or task.status)
