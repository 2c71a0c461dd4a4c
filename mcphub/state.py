"""Shared state for several hub replicas (`hub.state: redis://...`): rate limits in Redis (jobs: shared_jobs.py).

Without `hub.state` every hub keeps its buckets in its own memory (mcphub/ratelimit.py). With it, each
hub's `StateStore` holds one Redis client (redis.asyncio, a small pool) and `SharedRateLimiter` takes
tokens in one Lua script per call: the same token buckets as in memory, refilled by Redis's own clock
(`TIME`), so two replicas share a key's limit exactly and atomically, whatever their clocks say.

Redis trouble is not an outage. A failed command, or a failed ping of the monitor that runs while
`async with store.running()`, marks the store down (one warning per outage, `mcphub_state_errors_total`
per failure). While down, calls with a rate limit follow `hub.state_failure`: `open` (default) lets them
through unlimited, `closed` answers them 503 with Retry-After; calls without a limit never touch Redis.
Down, the limiter tries Redis again at most every `RETRY_INTERVAL` (no call waits on a dead Redis in
the meantime) and the monitor pings it every `PING_INTERVAL`: the first success brings the shared
limits back, without a restart. `/readyz` shows the store's state but stays 200 for it: every replica
shares the one Redis, so taking them all out of a load balancer would turn a Redis outage into a hub
outage (under `closed`, only rate-limited calls are refused).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import anyio

from mcphub.config import redacted_url
from mcphub.errors import RateLimited, ServerUnavailable
from mcphub.ratelimit import Limit

if TYPE_CHECKING:  # redis is imported by a StateStore only: a hub without hub.state never loads it (~7 MiB)
    import redis.asyncio as redis

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0  # seconds to connect to Redis: it is near the hub; a call must not hang on it
COMMAND_TIMEOUT = 1.0  # seconds for one command (the limiter's script is O(buckets), well under 1 ms)
RETRY_INTERVAL = 1.0  # seconds, while Redis is down, between the limiter's attempts (calls meanwhile skip it)
PING_INTERVAL = 5.0  # seconds between the monitor's pings: /readyz and recovery without calls
CLOSED_RETRY_AFTER = 5  # seconds a caller refused under state_failure: closed is told to wait
MAX_CONNECTIONS = 64  # pooled connections per hub; more concurrent calls wait for one (bounded by the timeout)
KEY_PREFIX = "mcphub:ratelimit:"

# KEYS: one hash per bucket; ARGV: requests, per (seconds) for each. Returns {0} and takes a token from
# every bucket, or {index of the first short bucket (1-based), seconds until all have a token} and takes none.
# Floats travel as strings: Redis turns a Lua number into an integer.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local short, wait = 0, 0
for i = 1, #KEYS do
  local capacity, per = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local rate = capacity / per
  local bucket = redis.call('HMGET', KEYS[i], 'tokens', 'updated')
  local left = tonumber(bucket[1])
  if left == nil then
    left = capacity
  else
    left = math.min(capacity, left + math.max(0, now - tonumber(bucket[2])) * rate)
  end
  tokens[i] = left
  if left < 1 then
    if short == 0 then short = i end
    wait = math.max(wait, (1 - left) / rate)
  end
end
if short > 0 then return {short, tostring(wait)} end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - 1), 'updated', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 * i]) * 1000) + 1000)
end
return {0}
"""


class StateStore:
    """One hub's connection to its shared state (hub.state), and whether it can be reached now."""

    def __init__(self, url: str, failure: Literal["open", "closed"], *,
                 on_error: Callable[[str], None] = lambda operation: None) -> None:
        self.shown_url = redacted_url(url)  # what logs, messages and /readyz may show: no password
        self.failure = failure
        self._on_error = on_error
        import redis.asyncio as redis  # here, not at the top: see TYPE_CHECKING above (tests/test_cost_fences.py)
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.errors: tuple[type[Exception], ...] = (RedisError, OSError)  # what a failed command raises
        # blocking: a call past MAX_CONNECTIONS waits (up to COMMAND_TIMEOUT) for a connection, where the
        # default pool would fail it as if Redis were down
        pool = redis.BlockingConnectionPool.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT, timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 1),  # once more at once: a pooled connection may predate a Redis restart
            max_connections=MAX_CONNECTIONS, decode_responses=True)
        self.client: redis.Redis = redis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
        self.up: bool | None = None  # None: not tried yet
        self.last_error: str | None = None
        self._retry_at = 0.0

    @property
    def usable(self) -> bool:
        """Worth trying now: up, untried, or down for RETRY_INTERVAL since the last attempt."""
        return self.up is not False or time.monotonic() >= self._retry_at

    def succeeded(self) -> None:
        if self.up is False:
            logger.warning("shared state at %s is reachable again: rate limits are shared again", self.shown_url)
        elif self.up is None:
            logger.info("shared state at %s: connected", self.shown_url)
        self.up, self.last_error = True, None

    def failed(self, operation: str, exc: BaseException) -> None:
        self._on_error(operation)
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        self.last_error = _describe(exc)
        if self.up is not False:  # once per outage, not per call
            policy = ("rate-limited calls pass unlimited" if self.failure == "open"
                      else "rate-limited calls are refused 503")
            logger.warning("shared state at %s is unreachable (%s): %s until it is back (hub.state_failure: %s)",
                           self.shown_url, self.last_error, policy, self.failure)
        self.up = False

    def unavailable(self, server: str | None, tool: str | None) -> ServerUnavailable:
        return ServerUnavailable(
            f"the hub's shared state (Redis at {self.shown_url}) is unreachable and hub.state_failure is "
            f"'closed', so rate-limited calls are refused until it is back; retry in {CLOSED_RETRY_AFTER}s",
            retry_after=CLOSED_RETRY_AFTER, server=server, tool=tool)

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except self.errors as exc:
            self.failed("ping", exc)
        else:
            self.succeeded()

    def status(self) -> dict[str, str | bool | None]:
        """What /readyz shows of the store."""
        state = {None: "connecting", True: "up", False: "unreachable"}[self.up]
        return {"store": "redis", "url": self.shown_url, "state": state, "failure": self.failure,
                "last_error": self.last_error}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[StateStore]:
        """Ping now (a hub whose Redis is down at start says so, and serves) and every PING_INTERVAL;
        close the client on the way out."""
        try:
            async with anyio.create_task_group() as monitor:
                await self.ping()
                monitor.start_soon(self._monitor)
                try:
                    yield self
                finally:
                    monitor.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def _monitor(self) -> None:
        while True:
            await anyio.sleep(PING_INTERVAL)  # a period, not a wait for a condition
            await self.ping()


@asynccontextmanager
async def kept(store: StateStore | None) -> AsyncIterator[None]:
    """`store.running()`, or nothing for a hub without hub.state."""
    if store is None:
        yield
        return
    async with store.running():
        yield


class SharedRateLimiter:
    """`RateLimiter`'s buckets in Redis, shared by every hub on it (see the module docstring)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._take = store.client.register_script(_TAKE)

    async def take(self, limits: Sequence[Limit], *, server: str | None = None, tool: str | None = None) -> None:
        """Take one token from each of `limits`, or raise RateLimited and take none; while the store
        is down, pass (state_failure: open) or raise ServerUnavailable (closed)."""
        if not limits:
            return
        store = self.store
        if store.usable:
            keys = [_key(limit) for limit in limits]
            args: list[str | float] = []
            for limit in limits:
                args += [limit.limit.requests, limit.limit.per]
            try:
                answer = await self._take(keys=keys, args=args)
            except store.errors as exc:
                store.failed("ratelimit", exc)
            else:
                store.succeeded()
                if answer[0] == 0:
                    return
                limit, wait = limits[int(answer[0]) - 1], float(answer[1])
                raise RateLimited(
                    f"rate limit of {limit.label} reached ({limit.limit.requests} requests per "
                    f"{limit.limit.per:g}s); retry in {math.ceil(wait)}s",
                    retry_after=math.ceil(wait), server=server, tool=tool,
                )
        if store.failure == "closed":
            raise store.unavailable(server, tool)


def _key(limit: Limit) -> str:
    """The bucket's Redis key: who (a key's or subject's name, a server; never a secret) and the limit."""
    who = limit.key if isinstance(limit.key, tuple) else (limit.key,)
    return KEY_PREFIX + json.dumps([*map(str, who), limit.limit.requests, limit.limit.per], separators=(",", ":"))


def _describe(exc: BaseException) -> str:
    """An error as a log line and /readyz may show it: its type and first line (redis-py's messages name
    host and port, never the password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
