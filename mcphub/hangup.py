"""Noticing that an HTTP client hung up during a call, so the call can be cancelled (and with it the MCP
request upstream: the SDK sends notifications/cancelled). Used by the HTTP face and the MCP face."""

from __future__ import annotations

import asyncio

import anyio
from starlette.types import Receive

HANG_UP_WATCH_AFTER = 0.5  # seconds a call runs before the hub watches for a hang-up (under load, p99 > 50 ms)


class HangUpWatch:
    """Cancels `scope` if the HTTP client hangs up. Watching needs a task reading the ASGI receive
    channel, so it waits for the request body to be read (`body_pending`, then `body_read()`). Most calls
    end within milliseconds, so that task starts only once a call has run for HANG_UP_WATCH_AFTER. (A
    client that hangs up sooner is noticed then.) Plain asyncio: uvicorn always runs the hub on asyncio,
    and a timer handle is what keeps the common case at a few microseconds."""

    def __init__(self, receive: Receive, scope: anyio.CancelScope, *, body_pending: bool = False) -> None:
        self.seen = False
        self._receive = receive
        self._scope = scope
        self._task: asyncio.Task[None] | None = None
        self._reading = body_pending  # the body is not read yet: its reader is the receive channel's one reader
        self._due = False
        self._timer = asyncio.get_running_loop().call_later(HANG_UP_WATCH_AFTER, self._start)

    def body_read(self) -> None:
        """The body has been read (`body_pending`): the receive channel is free for the watch now."""
        self._reading = False
        if self._due:
            self._start()

    def _start(self) -> None:
        self._due = True
        if not self._reading and self._task is None:
            self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        try:
            while (await self._receive())["type"] != "http.disconnect":
                pass
        except OSError:  # the server's side of the connection failed: nothing left to watch
            return
        self.seen = True
        self._scope.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
