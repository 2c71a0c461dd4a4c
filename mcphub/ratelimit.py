"""Token buckets in memory: per API key, per JWT subject, per server; and calls in flight per caller.

A `RateLimit(requests=N, per=S)` is a bucket of N tokens (the burst) refilled at N/S tokens a second. A
call takes one token from every bucket that applies to it (the caller's and the server's), or from none:
a call refused by the server's bucket does not also spend the caller's. A refusal is `RateLimited` (429)
with `Retry-After`, the whole seconds until every bucket involved holds a token again.

Buckets are keyed by who (or which server) and by the limit itself, so a reload that changes a limit
starts a fresh bucket and one that keeps it keeps the bucket. The number of buckets is bounded: past
`max_buckets` the least recently used is dropped (a caller who comes back gets a full bucket), which
only matters with more distinct JWT subjects than that. Single event loop, no await inside `acquire`:
no lock needed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from mcphub.config import RateLimit
from mcphub.errors import RateLimited

MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Limit:
    """One bucket a call must take a token from: `key` identifies it, `label` names it in the 429."""

    key: Hashable
    limit: RateLimit
    label: str


class Limiter(Protocol):
    """What the invoker takes tokens from: `RateLimiter` here, or state.SharedRateLimiter (hub.state)."""

    async def take(self, limits: Sequence[Limit], *, server: str | None = None, tool: str | None = None) -> None:
        """Take one token from each of `limits`, or raise (RateLimited, or another HubError) and take none."""


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.tokens = capacity
        self.updated = now


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[tuple[Hashable, RateLimit], _Bucket] = OrderedDict()

    async def take(self, limits: Sequence[Limit], *, server: str | None = None, tool: str | None = None) -> None:
        self.acquire(limits, server=server, tool=tool)

    def acquire(self, limits: Sequence[Limit], *, server: str | None = None, tool: str | None = None) -> None:
        """Take one token from each of `limits`, or raise RateLimited and take none."""
        if not limits:
            return
        now = self._clock()
        buckets = [(limit, self._refilled(limit, now)) for limit in limits]
        short = [(limit, bucket) for limit, bucket in buckets if bucket.tokens < 1]
        if short:
            wait = max((1 - bucket.tokens) * limit.limit.per / limit.limit.requests for limit, bucket in short)
            limit = short[0][0]
            raise RateLimited(
                f"rate limit of {limit.label} reached ({limit.limit.requests} requests per "
                f"{limit.limit.per:g}s); retry in {math.ceil(wait)}s",
                retry_after=math.ceil(wait), server=server, tool=tool,
            )
        for _, bucket in buckets:
            bucket.tokens -= 1

    def _refilled(self, limit: Limit, now: float) -> _Bucket:
        key = (limit.key, limit.limit)
        bucket = self._buckets.get(key)
        capacity = float(limit.limit.requests)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(capacity, bucket.tokens + elapsed * limit.limit.requests / limit.limit.per)
            bucket.updated = now
        return bucket


class ConcurrencyLimiter:
    """Calls in flight per caller: `hold(who, limit)` is a slot for one call, or RateLimited (429).

    A caller over hub.limits.max_concurrent_calls is told to retry in a second (its earlier calls end
    or time out meanwhile); other callers are not affected. Counts live only while calls do, so the
    table holds at most one entry per caller with a call in flight."""

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, int] = {}

    def in_flight(self, who: Hashable) -> int:
        return self._in_flight.get(who, 0)

    @contextmanager
    def hold(self, who: Hashable, limit: int, *, label: str, server: str | None = None,
             tool: str | None = None) -> Iterator[None]:
        count = self._in_flight.get(who, 0)
        if count >= limit:
            raise RateLimited(
                f"{label} has {count} calls in flight, the most this hub runs at once for one caller "
                "(hub.limits.max_concurrent_calls); retry when one has ended", retry_after=1, server=server, tool=tool)
        self._in_flight[who] = count + 1
        try:
            yield
        finally:
            left = self._in_flight[who] - 1
            if left:
                self._in_flight[who] = left
            else:
                del self._in_flight[who]
