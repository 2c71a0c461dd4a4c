"""mcphub's stdio transport on real child processes (small `python -c` programs): framing, bad lines,
EOF, coalesced writes, and stopping a server that will not stop."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCNotification, JSONRPCRequest

from mcphub.outbound import Unsendable
from mcphub.stdio import FORCE_KILL_TIMEOUT, PROCESS_TERMINATION_TIMEOUT, exec_spawner, stdio_transport
from tests.helpers import alive, wait_until

pytestmark = pytest.mark.anyio


def python(code: str, **env: str) -> object:
    return exec_spawner(sys.executable, ["-c", code], {**os.environ, **env}, None)


def notification(n: int) -> SessionMessage:
    return SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"n": n}))


async def test_stdout_lines_become_messages_bad_lines_become_errors_and_eof_ends_the_stream():
    # a line split over two writes, a line that is not JSON, one that is not UTF-8, then exit
    code = r"""
import os, time
note = b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": %d}}'
os.write(1, note % 1 + b"\n" + (note % 2)[:20])
time.sleep(0.2)
os.write(1, (note % 2)[20:] + b"\nthis is not json\n\xff\xfe not utf-8\n" + note % 3 + b"\n" + b'{"half": ')
"""
    with open(os.devnull, "w") as devnull:
        async with stdio_transport(python(code), stderr=devnull.fileno()) as (read, _write):
            items = []
            with anyio.fail_after(10):
                async for item in read:
                    items.append(item)
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["SessionMessage", "SessionMessage", "ValidationError", "ValidationError", "SessionMessage"], items
    assert [item.message.params["progress"] for item in items if isinstance(item, SessionMessage)] == [1, 2, 3]


async def test_messages_queued_while_the_writer_is_busy_go_out_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    received = tmp_path / "received"
    # the child counts what arrives; it answers nothing
    code = f"import sys; open({str(received)!r}, 'wb').write(sys.stdin.buffer.read())"
    writes: list[int] = []  # write(2) calls that carried these messages, and nothing else the process writes
    real_write = os.write

    def counted_write(fd: int, data: bytes | memoryview) -> int:
        if b"notifications/message" in bytes(data):
            writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counted_write)  # the real write, counted
    with open(os.devnull, "w") as devnull:
        async with stdio_transport(python(code), stderr=devnull.fileno()) as (_read, write):
            await write.send(notification(0))  # the writer is idle: this one goes alone
            async with anyio.create_task_group() as tg:  # 50 senders queue while the writer writes
                for n in range(1, 51):
                    tg.start_soon(write.send, notification(n))
    assert received.read_bytes().count(b"\n") == 51
    assert len(set(writes)) == 1, writes  # one pipe: the child's stdin
    assert len(writes) <= 6, f"{len(writes) - 1} write calls for 50 queued messages"


def call(request_id: int, arguments: dict[str, object]) -> SessionMessage:
    params = {"name": "echo", "arguments": arguments}
    return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=request_id, method="tools/call", params=params))


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_a_message_that_cannot_be_encoded_fails_its_own_send_and_the_connection_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    received = tmp_path / "received"
    code = f"import sys; open({str(received)!r}, 'wb').write(sys.stdin.buffer.read())"
    caplog.set_level(logging.WARNING, logger="mcphub.outbound")
    with open(os.devnull, "w") as devnull:
        async with stdio_transport(python(code), stderr=devnull.fileno()) as (_read, write):
            await write.send(notification(1))
            with pytest.raises(Unsendable) as surrogate:  # the sender's own task: its caller gets the error
                await write.send(call(2, {"text": "\ud800"}))
            with pytest.raises(Unsendable) as deep:  # past what the SDK's serialiser nests (~250 levels)
                await write.send(call(3, {"text": "x", "deep": nested(300)}))
            bad_note = JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"t": "\udfff"})
            await write.send(SessionMessage(bad_note))  # the hub's own message: dropped and logged, not raised
            await write.send(notification(4))  # the writer is still there
            await write.send(call(5, {"text": "fine"}))
    lines = [json.loads(line) for line in received.read_bytes().splitlines()]
    assert [line.get("id", line.get("params")) for line in lines] == [{"n": 1}, {"n": 4}, 5], lines
    assert surrogate.value.status_code == deep.value.status_code == 422
    refused = "arguments of tool 'echo' cannot be sent to its server: "
    assert surrogate.value.message == refused + ("a string holds a lone surrogate, which is not Unicode text and "
                                                 "cannot be sent as UTF-8")
    assert deep.value.message == refused + "they are nested too deeply to encode"
    warned = "a 'tools/call' request could not be encoded for its MCP server (PydanticSerializationError); refused"
    assert [r.getMessage() for r in caplog.records] == [
        f"{warned} to its caller",
        f"{warned} to its caller",
        "dropped an outbound JSONRPCNotification that could not be encoded (PydanticSerializationError)",
    ]


async def test_a_server_that_ignores_eof_and_sigterm_is_killed_with_its_process_group(tmp_path: Path):
    pids = tmp_path / "pids"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    code = f"""
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {stubborn!r}])
open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
{stubborn}
"""
    with open(os.devnull, "w") as devnull:
        async with stdio_transport(python(code), stderr=devnull.fileno()):
            with anyio.fail_after(10):
                while not pids.exists() or len(pids.read_text(encoding="utf-8").split()) < 2:
                    await anyio.sleep(0.05)
            started = time.monotonic()
        took = time.monotonic() - started
    server, grandchild = (int(pid) for pid in pids.read_text(encoding="utf-8").split())
    assert alive([server]) == []
    # SIGKILL went to the whole group; the orphaned grandchild dies as soon as the kernel gets to it
    wait_until(lambda: alive([grandchild]) == [], timeout=5, what="the grandchild killed with its group")
    # stdin closed, the grace period, SIGTERM ignored, then SIGKILL to the group: bounded
    assert PROCESS_TERMINATION_TIMEOUT <= took < PROCESS_TERMINATION_TIMEOUT + FORCE_KILL_TIMEOUT + 3, took
