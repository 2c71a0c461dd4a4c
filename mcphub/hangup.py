"""Noticing that an HTTP client hung up during a call, so the call can be cancelled (and with it the MCP
request upstream: the SDK sends notifications/cancelled). Used by the HTTP face and the MCP face."""

from __future__ import annotations

import asyncio

import anyio
from starlette.types import Receive

HANG_UP_WATCH_AFTER = 0.5  # seconds a call runs before the hub watches for a hang-up (under load, p99 > 50 ms)


class HangUpWatch:
    """Cancels `scope` if the HTTP client hangs up. Watching needs a task reading the ASGI receive
    channel (so start it once the request body has been read); most calls end within milliseconds, so
    that task starts only once a call has run for HANG_UP_WATCH_AFTER. (A client that hangs up sooner is
    noticed then.) Plain asyncio: uvicorn always runs the hub on asyncio, and a timer handle is what keeps
    the common case at a few microseconds."""

    def __init__(self, receive: Receive, scope: anyio.CancelScope) -> None:
        self.seen = False
        self._receive = receive
        self._scope = scope
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(HANG_UP_WATCH_AFTER, self._start)

    def _start(self) -> None:
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
