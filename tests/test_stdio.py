"""mcphub's stdio transport on real child processes (small `python -c` programs): framing, bad lines,
EOF, coalesced writes, and stopping a server that will not stop."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCNotification

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
