"""Tasks on the MCP face: a client's task-augmented `tools/call` is a job (jobs.py) and the job is the task.
Both generations: MCP 2025-11-25 tasks (SEP-1686, the TypeScript SDK's `client.experimental.tasks`) on
2025 sessions, and the 2026-07-28 `io.modelcontextprotocol/tasks` extension (SEP-2663) on 2026 requests.

    tools/call           2025: with `task` → the call started as a job (through the invoker, like every
                         call, under the server's `job_timeout`); answers `CreateTaskResult` (`task`, the
                         job's id as taskId). 2026: a client that declares the extension in its request's
                         capabilities, calling a tool whose server runs it as a task (`taskSupport` optional
                         or required), gets a job the same way, answered `resultType: "task"`; any other
                         call is answered as usual (the server decides, SEP-2663)
    tasks/get            → the job as a task: running → working (statusMessage: its progress message),
                         ended → completed (the call's answer is a result) or failed (a JSON-RPC error;
                         2025 also an `isError` result, which 2026 counts completed), cancelled →
                         cancelled. 2026: `ttlMs`, `pollIntervalMs`, and an ended task's `result` or
                         `error` inline
    tasks/result (2025)  → waits for the job to end, then answers exactly what the synchronous call would
                         have (the server's own result or error, the hub's failures as on the face); a
                         job started over HTTP keeps only its body, mapped back (a text answer: its text)
    tasks/cancel         → cancels the job (the server is sent notifications/cancelled, or tasks/cancel for
                         an upstream task). An ended task: 2025 -32602, 2026 acknowledged (cooperative)
    tasks/list (2025)    → the caller's jobs, oldest first, TASKS_PAGE a page
    tasks/update (2026)  → acknowledged: a job never asks its client for input

Tasks and jobs are one thing: a job started with `POST /{server}/{tool}` + `Prefer: respond-async` is a
task here (same id), and a task is a job on `GET /jobs`. Both belong to the credential that started them:
anyone else gets -32602 "no task", as for an id that never was.

A call refused before it reaches the server (an unknown tool, a scope, a rate limit, bad arguments) is a
JSON-RPC error instead of a task: -32602 for the caller's mistakes (4xx), -32603 for the hub's (5xx).

How it rides on the SDK (mcp 2.3, which has the 2025 task types but no task handling): the methods are
request handlers of the low-level `Server` (`add_request_handler`: methods outside the spec's tables reach
their handler and their result is sent as returned), the extension is announced through
`Server.extensions`. The task-augmented `tools/call` cannot be a `tools/call` handler's answer on a 2025
session: the runner checks it against `CallToolResult` and sends -32603 for a `CreateTaskResult`. So it
is answered by a `Server.middleware` (provisional in the SDK: fenced in tests/test_contracts.py), which
runs before that check and whose result is sent as it is (the 2026 `serverInfo` stamp added here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequestParams,
    ErrorData,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    RequestParams,
    ServerTasksCapability,
    ServerTasksRequestsCapability,
    TasksCallCapability,
    TasksCancelCapability,
    TasksListCapability,
    TasksToolsCapability,
    TextContent,
)
from mcp_types import CLIENT_CAPABILITIES_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcphub.auth import Principal
from mcphub.errors import BadRequest, HubError, NotFound
from mcphub.invoker import Call, Outcome
from mcphub.jobs import Job, JobConflict, JobRunner, JobStatus, job_timeout, timestamp
from mcphub.results import error_text

logger = logging.getLogger(__name__)

POLL_INTERVAL_MS = 1000  # what a client is told to poll tasks/get at (a job's progress is kept as it comes)
TASKS_PAGE = 100  # tasks per tasks/list page
EXTENSION = "io.modelcontextprotocol/tasks"  # the 2026-07-28 tasks extension (SEP-2663)
RELATED_TASK = "io.modelcontextprotocol/related-task"  # the _meta key that ties tasks/result's answer to its task
CAPABILITY = ServerTasksCapability(list=TasksListCapability(), cancel=TasksCancelCapability(),
                                   requests=ServerTasksRequestsCapability(tools=TasksToolsCapability(
                                       call=TasksCallCapability())))

Context = ServerRequestContext[dict[str, Any]]
CallOf = Callable[[Context, CallToolRequestParams], Call]  # the face's Call for a tools/call request
Caller = Callable[[Context], Principal]
ToResult = Callable[[Outcome], CallToolResult]  # the face's mapping of an answer to MCP (raises MCPError)


class McpTasks:
    """The task methods of one MCP face over its job runner (`install` them on its low-level server)."""

    def __init__(self, runner: JobRunner, *, call_of: CallOf, caller: Caller, to_result: ToResult) -> None:
        self.runner = runner
        self._call_of = call_of
        self._caller = caller
        self._to_result = to_result

    def install(self, server: Server[dict[str, Any]]) -> None:
        self._server = server
        server.extensions[EXTENSION] = {}  # announced to 2026 clients (server/discover)
        server.middleware.append(self._task_call)
        server.add_request_handler("tasks/get", GetTaskRequestParams, self._get)
        server.add_request_handler("tasks/result", GetTaskPayloadRequestParams, self._result)
        server.add_request_handler("tasks/cancel", CancelTaskRequestParams, self._cancel)
        server.add_request_handler("tasks/list", PaginatedRequestParams, self._list)
        server.add_request_handler("tasks/update", UpdateTaskRequestParams, self._update)

    # ------------------------------------------------------------------------------------- create

    async def _task_call(self, ctx: Context, call_next: CallNext) -> HandlerResult:
        params = ctx.params
        if ctx.method != "tools/call" or params is None:
            return await call_next(ctx)
        modern = ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
        if not (_declares_extension(ctx) if modern else params.get("task") is not None):
            return await call_next(ctx)
        try:
            typed = CallToolRequestParams.model_validate(params, by_name=False)
        except ValueError:
            return await call_next(ctx)  # the SDK's own answer to bad params
        call = self._call_of(ctx, typed)
        if modern and not self._runs_long(call):  # the server decides (2026): a task for a task tool only
            return await call_next(ctx)
        started = await self.runner.start(call, keep_mcp=True)
        if isinstance(started, Outcome):  # refused before the server: no job, no task
            raise _refused(started)
        logger.debug("task %s: %s/%s", started.id, started.server, started.tool)
        if not modern:
            return {"task": self._task(started)}
        return {**self._task(started, modern=True), "resultType": "task",
                "_meta": {SERVER_INFO_META_KEY: self._server.server_info_stamp}}

    def _runs_long(self, call: Call) -> bool:
        """Whether a 2026 call is answered with a task: its tool says `taskSupport` optional or required
        (the tools its server runs as tasks: long by their own account)."""
        server = self.runner.invoker.servers().get(call.server)
        tool = server.tools.get(call.tool) if server is not None else None
        execution = tool.execution if tool is not None else None
        return execution is not None and execution.task_support in ("optional", "required")

    # ---------------------------------------------------------------------------------- the methods

    async def _get(self, ctx: Context, params: GetTaskRequestParams) -> dict[str, Any]:
        job = await self._job(ctx, params.task_id, either=True)
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            return self._task(job)
        task = self._task(job, modern=True)  # a DetailedTask: an ended one carries its answer
        if job.finished and job.status is not JobStatus.CANCELLED:
            answer = self._answer(job)
            if isinstance(answer, ErrorData):
                task["error"] = answer.model_dump(mode="json", exclude_none=True)
            else:
                task["result"] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        return task

    async def _update(self, ctx: Context, params: UpdateTaskRequestParams) -> dict[str, Any]:
        """2026 `tasks/update`: acknowledged. The hub's tasks never ask for input (a server's requests during
        a job's call are declined), so there is nothing to answer."""
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        await self._job(ctx, params.task_id, either=True)
        return {}

    async def _result(self, ctx: Context, params: GetTaskPayloadRequestParams) -> dict[str, Any]:
        principal = self._principal(ctx)
        try:
            async with aclosing(self.runner.follow(principal, params.task_id)) as updates:
                job = None
                async for job in updates:
                    if job.finished:
                        break
        except HubError as exc:
            raise _not_a_task(params.task_id, exc) from None
        assert job is not None and job.finished
        result = self._answer(job)
        if isinstance(result, ErrorData):
            raise MCPError.from_error_data(result)
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        wire["_meta"] = {**wire.get("_meta", {}), RELATED_TASK: {"taskId": job.id}}
        return wire

    async def _cancel(self, ctx: Context, params: CancelTaskRequestParams) -> dict[str, Any]:
        principal = self._principal(ctx, either=True)
        modern = ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
        try:
            job = await self.runner.cancel(principal, params.task_id)
        except JobConflict as exc:
            if modern:  # 2026: cancelling is cooperative and always acknowledged
                return {}
            raise _not_a_task(params.task_id, exc) from None
        except HubError as exc:
            raise _not_a_task(params.task_id, exc) from None
        return {} if modern else self._task(job)

    async def _list(self, ctx: Context, params: PaginatedRequestParams) -> dict[str, Any]:
        jobs = await self.runner.owned_by(self._principal(ctx))
        start = 0
        if params.cursor is not None:
            if not params.cursor.isdigit():
                raise MCPError(INVALID_PARAMS, f"'{params.cursor[:64]}' is not a cursor of tasks/list: pass the "
                                               "nextCursor of the previous page")
            start = int(params.cursor)
        page = jobs[start:start + TASKS_PAGE]
        listed: dict[str, Any] = {"tasks": [self._task(job) for job in page]}
        if start + TASKS_PAGE < len(jobs):
            listed["nextCursor"] = str(start + TASKS_PAGE)
        return listed

    # ------------------------------------------------------------------------------------- helpers

    def _principal(self, ctx: Context, *, either: bool = False) -> Principal:
        """Who asks; a 2025-only method (tasks/result, tasks/list) asked on a 2026 request is -32601."""
        if not either and ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        return self._caller(ctx)

    async def _job(self, ctx: Context, task_id: str, *, either: bool = False) -> Job:
        try:
            return await self.runner.get(self._principal(ctx, either=either), task_id)
        except HubError as exc:
            raise _not_a_task(task_id, exc) from None

    def _answer(self, job: Job) -> CallToolResult | ErrorData:
        """What the synchronous call would have answered on this face: a result, or a JSON-RPC error."""
        if job.status is JobStatus.CANCELLED:
            return ErrorData(code=INTERNAL_ERROR, message=f"task '{job.id}' was cancelled before it ended")
        mcp = job.mcp if isinstance(job.mcp, dict) else {}
        if "result" in mcp:
            return CallToolResult.model_validate(mcp["result"], by_name=False)
        if "error" in mcp:
            return ErrorData.model_validate(mcp["error"])
        # a job started over HTTP keeps only its body (results.to_body): a text answer is its text again
        if job.status is JobStatus.SUCCEEDED and isinstance(job.result, str):
            return CallToolResult(content=[TextContent(type="text", text=job.result)])
        error = job.error if isinstance(job.error, dict) else {}
        body = job.result if job.status is JobStatus.SUCCEEDED else {"error": error}
        outcome = Outcome(job.status_code or 500, body, error_type=error.get("type"))
        try:
            return self._to_result(outcome)
        except MCPError as exc:
            return exc.error

    def _task(self, job: Job, *, modern: bool = False) -> dict[str, Any]:
        """The job as a `Task` (wire form): 2025-11-25's, or the 2026 extension's (`modern`: `ttlMs`,
        `pollIntervalMs`)."""
        message = job.progress.message if job.progress is not None else None
        if job.status is JobStatus.RUNNING:
            status = "working"
        elif job.status is JobStatus.CANCELLED:
            status = "cancelled"
        else:  # an isError result: failed in 2025-11-25's words, completed in the extension's (SEP-2663)
            answer = self._answer(job)
            if isinstance(answer, ErrorData):
                status, message = "failed", answer.message
            elif answer.is_error and not modern:
                status, message = "failed", error_text(answer)
            else:
                status = "completed"
        # kept until: an ended job's expiry; a running one's at the latest, past its job_timeout (a mounted
        # server's is unbounded here, its own hub bounds it: null, both shapes' "unlimited")
        kept = job.expires if job.expires is not None else \
            job.created + job_timeout(self.runner.invoker, job.server, job.tool) + self.runner.invoker.config.jobs.ttl
        ttl, poll = ("ttlMs", "pollIntervalMs") if modern else ("ttl", "pollInterval")
        task: dict[str, Any] = {"taskId": job.id, "status": status, "createdAt": timestamp(job.created),
                                "lastUpdatedAt": timestamp(job.updated),
                                ttl: round((kept - job.created) * 1000) if math.isfinite(kept) else None,
                                poll: POLL_INTERVAL_MS}
        if message:
            task["statusMessage"] = message
        return task


def _declares_extension(ctx: Context) -> bool:
    """Whether a 2026 request says its client handles tasks (`_meta` client capabilities, SEP-2663)."""
    capabilities = (ctx.meta or {}).get(CLIENT_CAPABILITIES_META_KEY)
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and EXTENSION in extensions


class UpdateTaskRequestParams(RequestParams):
    """2026 `tasks/update` (SEP-2663): answers to a task's input requests."""

    task_id: str
    input_responses: dict[str, Any] | None = None


def _refused(outcome: Outcome) -> MCPError:
    error = outcome.body.get("error") if isinstance(outcome.body, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) else f"HTTP status {outcome.status}"
    return MCPError(INVALID_PARAMS if outcome.status < 500 else INTERNAL_ERROR, message)


def _not_a_task(task_id: str, exc: HubError) -> MCPError:
    """The job runner's refusal in task words: -32602 for an id that is not the caller's task (malformed,
    someone else's, expired) or one that has ended (cancel), -32603 for the hub's own failure."""
    shown = task_id if len(task_id) <= 64 else task_id[:64] + "..."
    if isinstance(exc, BadRequest):
        return MCPError(INVALID_PARAMS, f"'{shown}' is not a task id: a task id is 32 lowercase hex digits, the "
                                        "taskId of the CreateTaskResult that started the task")
    if isinstance(exc, NotFound):
        return MCPError(INVALID_PARAMS, f"no task '{shown}': a task is seen only by the credential that started "
                                        "it, and is kept for jobs.ttl after it ends (tasks/list lists yours)")
    if exc.status_code >= 500:
        return MCPError(INTERNAL_ERROR, exc.message)
    return MCPError(INVALID_PARAMS, exc.message.replace("job", "task"))
