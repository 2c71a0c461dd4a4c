"""Talking to the arXiv export API politely: one request at a time, at least `min_interval` seconds apart,
and every failure turned into a ToolError that names the URL.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import httpx2
from mcp.server.mcpserver.exceptions import ToolError

from mcphub_servers._upstream import Connection, env_float, env_str, redact, request
from mcphub_servers.arxiv.feed import Feed, parse_feed

DEFAULT_API_URL = "https://export.arxiv.org/api/query"
DEFAULT_MIN_INTERVAL = 3.0  # seconds; arXiv's API terms ask for no more than one request every 3 s
DEFAULT_TIMEOUT = 30.0  # seconds; the export API is slow on large result sets
ARXIV_EPOCH = "19910801"  # first arXiv submissions; lower bound when only date_to is given

SORTS = {
    "relevance": "relevance",
    "date": "submittedDate",
    "updated": "lastUpdatedDate",
}
# A query that already uses arXiv's syntax is sent as is; plain words are AND-ed over all fields.
_FIELD_SYNTAX = re.compile(
    r"\b(?:ti|au|abs|co|jr|cat|rn|id|all|submittedDate|lastUpdatedDate):|\b(?:AND|OR|ANDNOT)\b"
)
_TERMS = re.compile(r'"([^"]+)"|(\S+)')
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Settings:
    api_url: str
    min_interval: float
    timeout: float
    user_agent: str

    @classmethod
    def from_env(cls, version: str) -> Settings:
        return cls(
            api_url=env_str("ARXIV_API_URL", DEFAULT_API_URL) or DEFAULT_API_URL,
            min_interval=max(0.0, env_float("ARXIV_MIN_INTERVAL", DEFAULT_MIN_INTERVAL)),
            timeout=env_float("ARXIV_TIMEOUT", DEFAULT_TIMEOUT),
            user_agent=env_str("ARXIV_USER_AGENT") or f"mcphub-arxiv/{version}",
        )


class RateLimiter:
    """Serialises callers and keeps `min_interval` seconds between the end of one request and the start
    of the next. `clock` and `sleep` are injectable so tests can drive it without waiting."""

    def __init__(
        self,
        min_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._last_done: float | None = None

    async def run(self, call: Callable[[], Awaitable[httpx2.Response]]) -> httpx2.Response:
        async with self._lock:
            if self._last_done is not None:
                wait = self._last_done + self.min_interval - self._clock()
                if wait > 0:
                    await self._sleep(wait)
            try:
                return await call()
            finally:
                self._last_done = self._clock()


def _date_bound(value: str, name: str) -> str:
    if not _DATE.match(value):
        raise ToolError(f"{name}={value!r} is not a date; expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError:
        raise ToolError(f"{name}={value!r} is not a valid calendar date") from None


def build_search_query(
    query: str,
    *,
    categories: list[str] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
) -> str:
    """The `search_query` parameter: the user's query, OR-ed categories, and a submittedDate range."""
    query = query.strip()
    parts: list[str] = []
    if query:
        if _FIELD_SYNTAX.search(query):
            parts.append(query)
        else:
            terms = [f'all:"{phrase}"' if phrase else f"all:{word}" for phrase, word in _TERMS.findall(query)]
            parts.append(" AND ".join(terms))
    cats = [c.strip() for c in categories or [] if c.strip()]
    if cats:
        parts.append(" OR ".join(f"cat:{c}" for c in cats))
    if date_from or date_to:
        low = _date_bound(date_from, "date_from") if date_from else ARXIV_EPOCH
        high = _date_bound(date_to, "date_to") if date_to else datetime.now(UTC).strftime("%Y%m%d")
        if low > high:
            raise ToolError(f"date_from {date_from} is after date_to {date_to}")
        parts.append(f"submittedDate:[{low}0000 TO {high}2359]")
    if not parts:
        raise ToolError("give a query, categories or a date range to search for")
    if len(parts) == 1:
        return parts[0]
    return " AND ".join(f"({p})" for p in parts)


class ArxivAPI:
    """The export API over one HTTP client, opened and closed by the server lifespan
    (`MCPServer(..., lifespan=api.connection.lifespan)`)."""

    def __init__(self, settings: Settings, *, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter or RateLimiter(settings.min_interval)
        self.connection = Connection("arxiv", headers={"User-Agent": settings.user_agent}, timeout=settings.timeout)

    async def query(self, params: dict[str, str | int], *, lookup: str | None = None) -> Feed:
        """One API call. `lookup` names what is being fetched by id: arXiv's error entries then mean
        "not found" rather than "bad query"."""
        url = self.settings.api_url
        client = self.connection.get()
        response = await self.limiter.run(lambda: request(client, "GET", url, params=params))
        where = f"GET {redact(url)}"
        try:
            feed = parse_feed(response.content, default_start=int(params.get("start", 0)))
        except ValueError as exc:
            if response.status_code != 200:
                raise ToolError(
                    f"{where} answered HTTP {response.status_code}{_retry_hint(response)}"
                ) from None
            snippet = response.text[:200].replace("\n", " ")
            raise ToolError(f"{where} answered a body that is {exc}: {snippet!r}") from None
        if feed.errors and lookup:
            raise ToolError(f"arXiv {lookup} not found ({where} says: {'; '.join(feed.errors)})")
        if feed.errors:
            raise ToolError(f"arXiv rejected the request ({where}): {'; '.join(feed.errors)}")
        if response.status_code != 200:
            raise ToolError(f"{where} answered HTTP {response.status_code}{_retry_hint(response)}")
        return feed


def _retry_hint(response: httpx2.Response) -> str:
    retry_after = response.headers.get("retry-after")
    if retry_after:
        return f"; arXiv asks to retry after {retry_after} s"
    if response.status_code in (429, 503):
        return "; arXiv is busy or rate limiting, retry in a minute"
    return ""
