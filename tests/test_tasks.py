"""MCP tasks (2025-11-25, SEP-1686): upstream, a server's task tool driven by the hub as a task (create,
poll, result, cancel) with the job mirroring it; on the MCP face, a client's task-augmented tools/call
answered with a task backed by the job store. Against the real server-everything (its
`simulate-research-query`, `taskSupport: required`: four stages of a second each). Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
from mcp import MCPError
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequest,
    CancelTaskRequestParams,
    CancelTaskResult,
    GetTaskPayloadRequest,
    GetTaskPayloadRequestParams,
    GetTaskRequest,
    GetTaskRequestParams,
    GetTaskResult,
    ListTasksRequest,
    ListTasksResult,
    Request,
    Result,
    ServerCapabilities,
    ServerTasksCapability,
    ServerTasksRequestsCapability,
    TasksCallCapability,
    TasksToolsCapability,
    Task,
    TextContent,
    Tool,
    ToolExecution,
)

from mcphub import upstream_tasks
from mcphub.supervisor import ServerHandle
from tests.helpers import free_port
from tests.hub import assert_error, mcp_client, module_server, running_hub, running_instances, sample_server
from tests.test_jobs import ALICE, ASYNC, KEY, OTHER_KEY, config, ended, wait_for
from tests.test_mcp_clients import run_node
from tests.test_federation import _serves, _until
from tests.test_thirdparty import everything_server

pytestmark = pytest.mark.anyio

RESEARCH = "simulate-research-query"
STAGES = ["Gathering sources...", "Analyzing content...", "Synthesizing findings...", "Generating report..."]


def report_of(topic: str) -> str:
    return f"# Research Report: {topic}\n"


async def server_tasks(handle: ServerHandle) -> dict[str, str]:
    """The server's own view of its tasks (tasks/list on the hub's connection): id → status."""
    client = handle.replicas[0].client
    assert client is not None
    listed = await client.session.send_request(ListTasksRequest(), ListTasksResult)
    return {task.task_id: task.status for task in listed.tasks}


def child_pid(marker: str) -> int:
    """The pid of this process's child whose command line has `marker` (the server the hub started)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and marker in cmdline:
            return int(entry.name)
    raise AssertionError(f"no child process running {marker}")


# ------------------------------------------------------------------------------------------ upstream


async def test_a_job_on_a_task_tool_mirrors_the_task_status_messages_and_ends_with_its_report() -> None:
    async with running_hub(config({"every": everything_server()})) as hub:
        started = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "tides"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        messages: list[str] = []

        def note(job: dict[str, Any]) -> bool:
            if job["progress"] is not None and job["progress"]["message"] not in messages:
                messages.append(job["progress"]["message"])
            return ended(job)

        done = await wait_for(hub, started.headers["location"], note, within=15)
        assert done["status"] == "succeeded" and done["status_code"] == 200, done
        assert done["result"].startswith(report_of("tides")), done
        assert messages[0] == STAGES[0] and set(messages) <= set(STAGES) and len(messages) >= 3, messages
        assert done["progress"]["total"] is None and done["progress"]["progress"] >= 3, done


async def test_a_synchronous_call_of_a_task_required_tool_is_run_as_a_task() -> None:
    async with running_hub(config({"every": everything_server()})) as hub:
        response = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "moss"}, headers=ALICE)
        assert response.status_code == 200, response.text
        assert response.json().startswith(report_of("moss")), response.text


async def test_a_task_that_outlasts_the_timeout_is_a_504_and_is_cancelled_upstream() -> None:
    async with running_hub(config({"every": everything_server(timeout=1)})) as hub:
        response = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "fog"}, headers=ALICE)
        error = assert_error(response, 504, "timeout")
        assert "within 1s" in error["message"], error
        assert list((await server_tasks(hub.supervisor.servers["every"])).values()) == ["cancelled"]


async def test_deleting_a_job_on_a_task_tool_cancels_the_upstream_task() -> None:
    async with running_hub(config({"every": everything_server()})) as hub:
        started = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "dunes"}, headers=ASYNC)
        location = started.headers["location"]
        await wait_for(hub, location, lambda job: job["progress"] is not None)  # the task exists upstream
        handle = hub.supervisor.servers["every"]
        assert list((await server_tasks(handle)).values()) == ["working"]
        deleted = await hub.client.delete(location, headers=ALICE)
        assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled", deleted.text
        assert list((await server_tasks(handle)).values()) == ["cancelled"]


async def test_an_event_stream_that_hangs_up_cancels_the_upstream_task() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        handle = hub.supervisor.servers["every"]
        async with httpx2.AsyncClient(base_url=hub.url, timeout=10) as client:
            async with client.stream("POST", f"/every/{RESEARCH}", json={"topic": "rain"},
                                     headers={**ALICE, "Accept": "text/event-stream"}) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_text():
                    assert chunk.startswith("event: progress\n") and STAGES[0] in chunk, chunk
                    break  # the task runs upstream: hang up
        with anyio.fail_after(5):
            while list((await server_tasks(handle)).values()) != ["cancelled"]:
                await anyio.sleep(0.05)


async def test_a_job_deleted_while_its_task_is_being_created_still_cancels_the_task() -> None:
    """tasky's slow_create answers the task-augmented tools/call a second late: a DELETE meanwhile waits for
    the task's id and sends tasks/cancel (the task would run on, unseen, otherwise)."""
    async with running_hub(config({"tasky": module_server("tasky")})) as hub:
        started = await hub.client.post("/tasky/slow_create", json={"text": "x"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        deleted = await hub.client.delete(started.headers["location"], headers=ALICE)
        assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled", deleted.text
        assert list((await server_tasks(hub.supervisor.servers["tasky"])).values()) == ["cancelled"]


async def test_a_task_tool_answered_without_a_task_is_answered_as_any_call() -> None:
    """A server may answer a task-augmented call of an `optional` tool with the plain result (tasky's plain)."""
    async with running_hub(config({"tasky": module_server("tasky")})) as hub:
        response = await hub.client.post("/tasky/plain", json={"text": "hi"}, headers=ALICE)
        assert response.status_code == 200 and response.json() == "hi", response.text


async def test_a_server_killed_under_a_task_fails_its_job_promptly_with_a_503() -> None:
    async with running_hub(config({"every": everything_server()})) as hub:
        started = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "ash"}, headers=ASYNC)
        location = started.headers["location"]
        await wait_for(hub, location, lambda job: job["progress"] is not None)
        killed_at = time.monotonic()
        os.kill(child_pid("mcp-server-everything"), signal.SIGKILL)
        done = await wait_for(hub, location, ended, within=10)
        assert time.monotonic() - killed_at < 0.9, "sooner than the next poll (the server's pollInterval: 1 s)"
        assert done["status"] == "failed" and done["status_code"] == 503, done
        assert done["error"]["type"] == "server_unavailable", done


@pytest.mark.parametrize(("support", "declared", "version", "as_task"), [
    ("required", True, "2025-11-25", True),
    ("optional", True, "2025-11-25", True),
    ("forbidden", True, "2025-11-25", False),
    (None, True, "2025-11-25", False),  # absent means forbidden
    ("required", False, "2025-11-25", False),  # the server does not declare tasks.requests.tools.call
    ("required", True, "2026-07-28", False),  # a modern connection: tasks are an extension there
])
def test_which_calls_go_as_tasks(support: str | None, declared: bool, version: str, as_task: bool) -> None:
    tool = Tool(name="t", input_schema={"type": "object"},
                execution=ToolExecution(task_support=support) if support else None)  # type: ignore[arg-type]
    tasks = ServerTasksCapability(requests=ServerTasksRequestsCapability(
        tools=TasksToolsCapability(call=TasksCallCapability()))) if declared else None
    assert upstream_tasks.runs_as_task(ServerCapabilities(tasks=tasks), version, tool) is as_task


# ------------------------------------------------------------------------------------------ the MCP face

LONG = "trigger-long-running-operation"
TS_TASKS = Path(__file__).parent / "clients" / "ts_tasks.cjs"


async def ts_tasks(url: str, key: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    done = await run_node(str(TS_TASKS), url, key, tool, json.dumps(arguments))
    assert done.returncode == 0, done.stderr.decode()
    return dict(json.loads(done.stdout))


async def test_the_typescript_client_runs_a_task_through_the_hub_and_the_task_is_a_job() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        seen = await ts_tasks(f"{hub.url}/every/mcp", KEY, RESEARCH, {"topic": "reefs"})
        assert seen["protocolVersion"] == "2025-11-25"
        assert seen["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        kinds = [message["type"] for message in seen["messages"]]
        assert kinds[0] == "taskCreated" and kinds[-1] == "result" and "taskStatus" in kinds, seen
        task_id = seen["messages"][0]["task"]["taskId"]
        statuses = [m["task"]["status"] for m in seen["messages"] if m["type"] == "taskStatus"]
        assert statuses[-1] == "completed" and set(statuses) <= {"working", "completed"}, statuses
        messages = {m["task"].get("statusMessage") for m in seen["messages"] if m["type"] == "taskStatus"}
        assert messages & set(STAGES), messages  # the upstream task's status messages, through the job
        result = seen["messages"][-1]["result"]
        assert result["content"][0]["text"].startswith(report_of("reefs")), result
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
        assert seen["listed"] == [task_id]
        job = (await hub.client.get(f"/jobs/{task_id}", headers=ALICE)).json()  # the task is a job
        assert job["status"] == "succeeded" and job["tool"] == RESEARCH and job["result"].startswith(report_of("reefs"))


async def test_a_job_is_a_task_to_its_owner_on_the_mcp_face_and_no_one_else() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        started = await hub.client.post(f"/every/{LONG}", json={"duration": 1, "steps": 2}, headers=ASYNC)
        job_id = started.json()["id"]
        async with mcp_client(f"{hub.url}/mcp", KEY, "legacy") as alice:
            assert alice.server_capabilities.tasks is not None
            task = await alice.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id=job_id)),
                                                    GetTaskResult)
            assert task.task_id == job_id and task.status == "working" and task.poll_interval == 1000, task
            result = await alice.session.send_request(
                GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=job_id)), CallToolResult)
            assert result.content == [TextContent(type="text", text="Long running operation completed. "
                                                                    "Duration: 1 seconds, Steps: 2.")], result
            assert result.meta == {"io.modelcontextprotocol/related-task": {"taskId": job_id}}
            done = await alice.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id=job_id)),
                                                    GetTaskResult)
            assert done.status == "completed", done
            listed = await alice.session.send_request(ListTasksRequest(), ListTasksResult)
            assert [each.task_id for each in listed.tasks] == [job_id]
        async with mcp_client(f"{hub.url}/mcp", OTHER_KEY, "legacy") as bob:
            for request, answer in [(GetTaskRequest(params=GetTaskRequestParams(task_id=job_id)), GetTaskResult),
                                    (GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=job_id)),
                                     CallToolResult),
                                    (CancelTaskRequest(params=CancelTaskRequestParams(task_id=job_id)),
                                     CancelTaskResult)]:
                with pytest.raises(MCPError) as refused:
                    await bob.session.send_request(request, answer)  # type: ignore[arg-type]
                assert refused.value.code == INVALID_PARAMS
                assert refused.value.message.startswith(f"no task '{job_id}': a task is seen only by the "
                                                        "credential that started it"), refused.value.message
            assert (await bob.session.send_request(ListTasksRequest(), ListTasksResult)).tasks == []


async def test_a_bad_task_id_is_a_clear_invalid_params_error() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        async with mcp_client(f"{hub.url}/mcp", KEY, "legacy") as alice:
            for task_id in ["nope", "0" * 32]:
                with pytest.raises(MCPError) as refused:
                    await alice.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id=task_id)),
                                                     GetTaskResult)
                assert refused.value.code == INVALID_PARAMS
            assert refused.value.message.startswith(f"no task '{'0' * 32}'"), refused.value.message
            with pytest.raises(MCPError) as malformed:
                await alice.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id="nope")),
                                                 GetTaskResult)
            assert malformed.value.message == ("'nope' is not a task id: a task id is 32 lowercase hex digits, the "
                                               "taskId of the CreateTaskResult that started the task")


async def test_cancelling_a_task_on_the_mcp_face_cancels_its_job_once() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        started = await hub.client.post(f"/every/{RESEARCH}", json={"topic": "ice"}, headers=ASYNC)
        job_id = started.json()["id"]
        async with mcp_client(f"{hub.url}/every/mcp", KEY, "legacy") as alice:
            cancel = CancelTaskRequest(params=CancelTaskRequestParams(task_id=job_id))
            cancelled = await alice.session.send_request(cancel, CancelTaskResult)
            assert cancelled.status == "cancelled", cancelled
            assert (await hub.client.get(f"/jobs/{job_id}", headers=ALICE)).json()["status"] == "cancelled"
            assert list((await server_tasks(hub.supervisor.servers["every"])).values()) == ["cancelled"]
            with pytest.raises(MCPError) as again:
                await alice.session.send_request(cancel, CancelTaskResult)
            assert again.value.code == INVALID_PARAMS
            assert again.value.message == f"task '{job_id}' has already ended (cancelled): there is nothing to cancel"
            with pytest.raises(MCPError) as result:
                await alice.session.send_request(
                    GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=job_id)), CallToolResult)
            assert result.value.message == f"task '{job_id}' was cancelled before it ended"


async def test_a_job_whose_tool_answered_is_error_is_a_failed_task_in_2025_and_a_completed_one_in_2026() -> None:
    """2025-11-25: `failed` covers a tool result with isError true; the 2026 extension counts it completed.
    tasks/result answers the isError result either way."""
    async with running_hub(config({"alpha": sample_server()}), listen=True) as hub:
        started = await hub.client.post("/alpha/fail", json={"message": "boom"}, headers=ASYNC)
        job = await wait_for(hub, started.headers["location"], ended)
        assert job["status"] == "failed" and job["error"]["type"] == "tool_error", job
        async with mcp_client(f"{hub.url}/mcp", KEY, "legacy") as legacy:
            task = await legacy.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id=job["id"])),
                                                     GetTaskResult)
            assert task.status == "failed" and task.status_message is not None and "boom" in task.status_message, task
            listed = await legacy.session.send_request(ListTasksRequest(), ListTasksResult)
            assert [each.status for each in listed.tasks] == ["failed"], listed
            result = await legacy.session.send_request(
                GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=job["id"])), CallToolResult)
            assert result.is_error and "boom" in str(result.content), result
        async with mcp_client(f"{hub.url}/mcp", KEY) as modern:
            state = await modern.session.send_request(GetTask(params=GetTaskRequestParams(task_id=job["id"])),
                                                      TaskState)
            assert state.status == "completed" and state.result is not None and state.result["isError"], state


async def test_a_task_on_a_mounted_hubs_server_is_unlimited_here() -> None:
    """A mounted server's job has no job_timeout on this hub (its own hub bounds the call): its task's ttl
    is null ("unlimited", both generations), in tasks/get, tasks/list and the task-augmented tools/call."""
    a_port, b_port = free_port(), free_port()
    a_config = {"hub": {"port": a_port}, "servers": {"alpha": sample_server()}}
    b_config = {"hub": {"port": b_port, "mount": ["a"]},
                "remotes": {"a": {"url": f"http://127.0.0.1:{a_port}", "timeout": 1}}}
    async with running_instances(a_config), running_instances(b_config) as hubs:
        b = hubs["hub"]
        await _until(lambda: _serves(b, "alpha"))
        started = await b.client.post("/alpha/sleep", json={"seconds": 30}, headers={"Prefer": "respond-async"})
        assert started.status_code == 202, started.text
        job_ids = [started.json()["id"]]
        try:
            async with mcp_client(f"{b.url}/alpha/mcp", None, "legacy") as legacy:
                task = await legacy.session.send_request(
                    GetTaskRequest(params=GetTaskRequestParams(task_id=job_ids[0])), GetTaskResult)
                assert task.status == "working" and task.ttl is None, task
                created = await upstream_tasks._send_create(  # a task-augmented tools/call, as the hub sends one
                    legacy.session, CallToolRequestParams(name="sleep", arguments={"seconds": 30}), 10)
                assert isinstance(created, Task), created
                job_ids.append(created.task_id)
                assert created.status == "working" and created.ttl is None, created
                listed = await legacy.session.send_request(ListTasksRequest(), ListTasksResult)
                assert [(each.task_id, each.ttl) for each in listed.tasks] == [(job_ids[0], None), (job_ids[1], None)]
            async with mcp_client(f"{b.url}/alpha/mcp", None) as modern:
                state = await modern.session.send_request(GetTask(params=GetTaskRequestParams(task_id=job_ids[0])),
                                                          TaskState)
                assert state.status == "working" and "ttl_ms" in state.model_fields_set and state.ttl_ms is None, state
        finally:
            for job_id in job_ids:
                await b.client.delete(f"/jobs/{job_id}")


# ------------------------------------------------------------------ the MCP face, 2026-07-28 (the extension)


class TaskState(Result):
    """SEP-2663's `CreateTaskResult` / `tasks/get` answer, as far as these tests read it."""

    task_id: str
    status: str
    status_message: str | None = None
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskCreated(TaskState):
    result_type: Literal["task"] = "task"


class GetTask(Request[GetTaskRequestParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: GetTaskRequestParams
    name_param = "taskId"  # SEP-2663: tasks/* carry the task id as Mcp-Name


class Tasks(ClientExtension):
    """The tasks extension for the Python SDK client (it ships none): a claimed `resultType: "task"` is
    polled with tasks/get until it ends; what it saw is kept in `seen`."""

    identifier = "io.modelcontextprotocol/tasks"

    def __init__(self) -> None:
        self.seen: list[TaskState] = []

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskCreated, resolve=self._resolve)]

    async def _resolve(self, created: TaskCreated, context: ClaimContext) -> CallToolResult:
        task: TaskState = created
        self.seen.append(task)
        with anyio.fail_after(30):
            while task.status == "working":
                await anyio.sleep((task.poll_interval_ms or 1000) / 1000)
                task = await context.session.send_request(
                    GetTask(params=GetTaskRequestParams(task_id=created.task_id)), TaskState)
                self.seen.append(task)
        assert task.result is not None, task
        return CallToolResult.model_validate(task.result)


async def test_a_2026_client_declaring_the_tasks_extension_gets_a_task_for_a_task_tool() -> None:
    async with running_hub(config({"every": everything_server()}), listen=True) as hub:
        tasks = Tasks()
        async with mcp_client(f"{hub.url}/every/mcp", KEY, extensions=[tasks]) as client:
            assert client.protocol_version == "2026-07-28"
            assert client.server_capabilities.extensions == {"io.modelcontextprotocol/tasks": {}}
            result = await client.call_tool(RESEARCH, {"topic": "kelp"})
            assert isinstance(result.content[0], TextContent) and result.content[0].text.startswith(report_of("kelp"))
            assert isinstance(tasks.seen[0], TaskCreated) and tasks.seen[0].poll_interval_ms == 1000, tasks.seen
            assert [each.status for each in tasks.seen][-1] == "completed", tasks.seen
            assert {each.status_message for each in tasks.seen} & set(STAGES), tasks.seen
            job = (await hub.client.get(f"/jobs/{tasks.seen[0].task_id}", headers=ALICE)).json()
            assert job["status"] == "succeeded" and job["tool"] == RESEARCH, job

            polled = len(tasks.seen)
            plain = await client.call_tool("echo", {"message": "hi"})  # not a task tool: answered at once
            assert plain.content == [TextContent(type="text", text="Echo: hi")] and len(tasks.seen) == polled
            with pytest.raises(MCPError) as refused:
                await client.session.send_request(GetTask(params=GetTaskRequestParams(task_id="0" * 32)), TaskState)
            assert refused.value.code == INVALID_PARAMS and refused.value.message.startswith(f"no task '{'0' * 32}'")
        async with mcp_client(f"{hub.url}/every/mcp", KEY) as undeclared:  # no extension: the report itself
            result = await undeclared.call_tool(RESEARCH, {"topic": "salt"})
            assert isinstance(result.content[0], TextContent) and result.content[0].text.startswith(report_of("salt"))
