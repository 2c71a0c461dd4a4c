"""An MCP server that runs tools as tasks (2025-11-25) in its own odd ways, hand-written JSON-RPC over
stdio: `python -m tests.mcp_servers.tasky`. It speaks 2025-11-25 only (`server/discover` is refused, so
the client falls back to `initialize`) and declares task-augmented `tools/call`. Its tools:

- `plain(text)` (`taskSupport: optional`): a task-augmented call is answered with a plain CallToolResult
  echoing `text` (no task), which the spec lets a server do for a tool it may run either way;
- `slow_create(text)` (`taskSupport: required`): the CreateTaskResult comes CREATE_DELAY seconds late (the
  server is busy meanwhile), then the task stays `working` until it is cancelled (tasks/cancel).

`tasks/get`, `tasks/cancel` and `tasks/list` answer about the tasks `slow_create` made.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.mcp_servers.lines import method_not_found, result, send, serve

CREATE_DELAY = 1.0  # seconds slow_create's answer is late (a client gives the call up meanwhile)
CREATED_AT = "2026-01-01T00:00:00Z"
TEXT_ARG = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
TOOLS = [
    {"name": "plain", "description": "Answer a task-augmented call without a task.", "inputSchema": TEXT_ARG,
     "execution": {"taskSupport": "optional"}},
    {"name": "slow_create", "description": "Create a task, late; it works until cancelled.",
     "inputSchema": TEXT_ARG, "execution": {"taskSupport": "required"}},
]
tasks: dict[str, str] = {}  # task id → status


def error(request_id: Any, message: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": message}})


def task(task_id: str) -> dict[str, Any]:
    return {"taskId": task_id, "status": tasks[task_id], "createdAt": CREATED_AT, "lastUpdatedAt": CREATED_AT,
            "ttl": 60_000, "pollInterval": 100}


def call_tool(request_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    text = str((params.get("arguments") or {}).get("text", ""))
    if name == "plain":
        result(request_id, {"content": [{"type": "text", "text": text}], "isError": False})
    elif name == "slow_create" and params.get("task") is not None:
        time.sleep(CREATE_DELAY)
        task_id = uuid.uuid4().hex
        tasks[task_id] = "working"
        result(request_id, {"task": task(task_id)})
    else:
        error(request_id, f"tool {name!r} is not called that way here")


def handle(message: dict[str, Any]) -> None:
    method = message.get("method")
    request_id = message.get("id")
    params = message.get("params") or {}
    if request_id is None:  # a notification (initialized, cancelled, ...): nothing to answer
        return
    if method == "initialize":
        result(request_id, {"protocolVersion": "2025-11-25",
                            "capabilities": {"tools": {}, "tasks": {"list": {}, "cancel": {},
                                                                    "requests": {"tools": {"call": {}}}}},
                            "serverInfo": {"name": "tasky", "version": "0.0.1"}})
    elif method == "tools/list":
        result(request_id, {"tools": TOOLS})
    elif method == "tools/call":
        call_tool(request_id, params)
    elif method in ("tasks/get", "tasks/cancel") and params.get("taskId") in tasks:
        if method == "tasks/cancel":
            tasks[params["taskId"]] = "cancelled"
        result(request_id, task(params["taskId"]))
    elif method == "tasks/list":
        result(request_id, {"tasks": [task(task_id) for task_id in tasks]})
    elif method == "ping":
        result(request_id, {})
    elif method in ("tasks/get", "tasks/cancel"):
        error(request_id, f"no task {params.get('taskId')!r}")
    else:  # server/discover among others: refused, so the client falls back to `initialize`
        method_not_found(request_id, method)


def main() -> None:
    serve(handle)


if __name__ == "__main__":
    main()
