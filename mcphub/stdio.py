"""The stdio transport: an MCP server as a child process, newline-delimited JSON-RPC on its stdin/stdout.

The contract of the SDK's `mcp.client.stdio.stdio_client`, which this replaces: it yields the
`(read_stream, write_stream)` pair of SessionMessage streams a `Client` takes; each stdout line is parsed
with `jsonrpc_message_adapter`, and a line that is not a JSON-RPC message arrives as an Exception item;
the server's end of stdout ends the read stream; leaving the context closes stdin, gives the server a
bounded time to exit, then signals its process group (SIGTERM, then SIGKILL), every wait bounded and
shielded so a cancelled caller neither leaks the process nor hangs on it.

What differs:
- The process is started by a `Spawn` callable handed the child's three fds: `exec_spawner` runs a
  command, `launcher.Launcher.spawn` forks a preloaded interpreter. Either way the child leads a
  session of its own (its pid is its process group) and this module stops it the same way.
- Each message is encoded in the task that sends it (`outbound.py`): one that cannot be encoded fails
  that send alone (a request's caller gets a 422), where an error in the writer would end the
  connection for every caller.
- Writes are coalesced: messages that queued up while the writer was busy go out in one write.
- Lines are parsed as bytes, so invalid UTF-8 fails that one line, not the connection.
- A line the SDK cannot read that is still an answer naming its request (a lone surrogate escape, bytes
  that are not UTF-8) becomes an error answer to that request (`unreadable_answer`), so its caller hears
  at once instead of waiting out the timeout.

POSIX only (non-blocking pipes, process groups).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Protocol, Self

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage  # the SDK's transport item type (fenced: tests/test_contracts.py)
from mcp.types import INTERNAL_ERROR, ErrorData, JSONRPCError, jsonrpc_message_adapter
from pydantic import ValidationError

from mcphub import outbound
from mcphub.validation import unsendable

logger = logging.getLogger(__name__)

PROCESS_TERMINATION_TIMEOUT = 2.0  # seconds a server gets to exit by itself once its stdin is closed (as the SDK)
FORCE_KILL_TIMEOUT = 2.0  # seconds between SIGTERM and SIGKILL to the server's process group (as the SDK)
KILL_REAP_TIMEOUT = 2.0  # seconds to see a killed server gone before giving up on it (as the SDK)
WRITER_FLUSH_TIMEOUT = 0.5  # seconds to write messages already accepted before stdin closes (as the SDK)
EXIT_POLL_INTERVAL = 0.01  # seconds between looks at whether the server has exited
READ_SIZE = 1 << 16  # bytes per read from the server's stdout (one pipe buffer)
UNREADABLE = "mcphub/unreadable-answer"  # `data` of an error answer made here for a line that could not be read


class Child(Protocol):
    """A started server. `pid` is also its process group id: every server leads a session of its own."""

    pid: int

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None. Cheap; polled while stopping."""
        ...


Spawn = Callable[[int, int, int], Awaitable[Child]]  # (stdin, stdout, stderr fds for the child) → the child


def exec_spawner(command: str, args: list[str], env: dict[str, str], cwd: str | None) -> Spawn:
    """A `Spawn` that runs `command args` in a new session, with exactly `env`."""

    async def spawn(stdin: int, stdout: int, stderr: int) -> Child:
        popen = subprocess.Popen([command, *args], stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                                 start_new_session=True)
        return _Exec(popen)

    return spawn


class _Exec:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()  # reaps it once it has exited


class LineSender:
    """The write stream a session gets: each message is encoded here, in the sender's task, and queued
    for the writer as one line. A request that cannot be encoded raises `outbound.Unsendable`."""

    def __init__(self, lines: MemoryObjectSendStream[bytes]) -> None:
        self._lines = lines

    async def send(self, item: SessionMessage, /) -> None:
        line = outbound.encoded(item, outbound.stdio_line)
        if line is not None:
            await self._lines.send(line)

    async def aclose(self) -> None:
        await self._lines.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], LineSender]


@asynccontextmanager
async def stdio_transport(spawn: Spawn, *, stderr: int) -> AsyncIterator[Streams]:
    """Start a server with `spawn` (its stderr goes to the fd `stderr`) and yield its message streams."""
    child_stdin, stdin = os.pipe()
    stdout, child_stdout = os.pipe()
    try:
        child = await spawn(child_stdin, child_stdout, stderr)
    except BaseException:
        for fd in (stdin, stdout):
            os.close(fd)
        raise
    finally:
        os.close(child_stdin)  # the child has its own copies now
        os.close(child_stdout)
    os.set_blocking(stdin, False)
    os.set_blocking(stdout, False)

    # No awaits from here until the task group is entered: a cancellation in the gap would leak the child.
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[bytes](0)
    writer_done = anyio.Event()

    async def stdout_reader() -> None:
        pending: list[bytes] = []  # the start of a line not yet ended
        delivering = True
        async with read_writer:
            while True:
                try:
                    await anyio.wait_readable(stdout)
                    chunk = os.read(stdout, READ_SIZE)
                except BlockingIOError:
                    continue
                except (anyio.ClosedResourceError, OSError):
                    return  # our shutdown closed stdout
                if not chunk:
                    return  # EOF: the server has exited, or closed its stdout
                if not delivering:
                    continue  # the session is gone: drain, so a server blocked writing can still exit
                if b"\n" not in chunk:
                    pending.append(chunk)
                    continue
                lines = chunk.split(b"\n")
                if pending:
                    lines[0] = b"".join([*pending, lines[0]])
                    pending.clear()
                if lines[-1]:
                    pending.append(lines[-1])
                for line in lines[:-1]:
                    try:
                        await read_writer.send(_parse_line(line))
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        delivering = False
                        break

    async def stdin_writer() -> None:
        try:
            async with write_reader:
                async for message in write_reader:
                    batch = [message]
                    while True:  # whatever else is already waiting goes out in the same write
                        try:
                            batch.append(write_reader.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await _write_all(stdin, b"".join(batch))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # The server stopped reading (it exited, or closed stdin) but may be alive: end the read
            # stream so the session sees the connection end instead of a request hanging forever.
            await read_writer.aclose()
        finally:
            writer_done.set()

    async def shutdown() -> None:
        read_stream.close()  # the reader drains from now on: a server stuck writing stdout cannot read stdin
        write_stream.close()
        with anyio.move_on_after(WRITER_FLUSH_TIMEOUT):
            await writer_done.wait()
        await _stop(child, stdin)
        _close(stdout)
        for stream in (read_stream, write_stream, read_writer, write_reader):
            await stream.aclose()
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        try:
            yield read_stream, LineSender(write_stream)
        finally:
            with anyio.CancelScope(shield=True):  # every wait inside is bounded
                await shutdown()
            tg.cancel_scope.cancel()


def _parse_line(line: bytes) -> SessionMessage | Exception:
    """One stdout line as a message; what does not parse is returned, for the session to surface, unless
    it is an answer that names its request: that request gets an error answer saying why."""
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError, invalid JSON or UTF-8 included
        return unreadable_answer(line, exc) or exc


def unreadable_answer(line: bytes, exc: ValueError) -> SessionMessage | None:
    """The error answer for a line the SDK refused that is a JSON-RPC answer with an id, else None."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text, why = line.decode("utf-8", "replace"), "it is not UTF-8"
    else:
        why = ""
    try:
        value = json.loads(text)  # Python's parser takes lone surrogate escapes, which the SDK's refuses
    except ValueError:
        return None
    if not isinstance(value, dict) or "method" in value or not ("result" in value or "error" in value):
        return None
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    if not why:
        why = unsendable(value) or (exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc))
    error = ErrorData(code=INTERNAL_ERROR, message=f"the answer could not be read: {why}", data=UNREADABLE)
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await anyio.wait_writable(fd)
            continue
        view = view[written:]


def _close(fd: int) -> None:
    """Close a pipe end, waking any task waiting on it first (it then sees ClosedResourceError)."""
    anyio.notify_closing(fd)
    with suppress(OSError):
        os.close(fd)


async def _stop(child: Child, stdin: int) -> None:
    """Close stdin, wait out the grace period, then signal the whole process group (the MCP spec's order)."""
    _close(stdin)
    if await _exited(child, PROCESS_TERMINATION_TIMEOUT):
        return
    await _terminate_group(child, FORCE_KILL_TIMEOUT)
    if not await _exited(child, KILL_REAP_TIMEOUT):
        logger.warning("MCP server process %d is still alive after SIGKILL; abandoning it", child.pid)


async def _terminate_group(child: Child, timeout: float) -> None:
    """SIGTERM the child's process group; SIGKILL whatever of it is left after `timeout` (as the SDK's
    stdio_client does). A group is gone only once every member has exited and been reaped."""
    group = child.pid  # its own session's leader; never os.getpgid(), which fails once the leader is reaped
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return  # the whole group is gone already
    except PermissionError:  # a member we may not signal (another user's, or a zombie on macOS): wait anyway
        logger.warning("no permission to signal all of MCP server process group %d; waiting for it anyway", group)
    with anyio.move_on_after(timeout):
        while _group_alive(group):
            _ = child.returncode  # reaps the leader, whose zombie would keep the group alive
            await anyio.sleep(EXIT_POLL_INTERVAL)
        return
    with suppress(ProcessLookupError, PermissionError):  # gone since the last look; or all we may kill
        os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    """Signal 0 to the group: only ESRCH says no member is left (EPERM is ambiguous)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


async def _exited(child: Child, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while child.returncode is None:
            await anyio.sleep(EXIT_POLL_INTERVAL)
        return True
    return False
