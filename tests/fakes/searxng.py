"""A fake SearXNG instance: `GET /search?format=json` with the real JSON shape.

Records each query (and the Authorization header), derives results from the query so tests can compute the
expected values, and can mimic the instance's failure modes: JSON not enabled in `search.formats` (403),
basic auth required (401), a slow answer, or a broken body.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PAGE_SIZE = 20  # SearXNG's usual page size; it has no limit parameter
TOTAL_HITS = 30  # results the fake "knows" for any query but NO_HITS
NO_HITS = "zzqx no such thing"


def hit(query: str, n: int) -> dict[str, Any]:
    """The n-th (0-based) result for a query, as SearXNG's JSON renders one."""
    engines = ["duckduckgo", "brave"] if n % 2 == 0 else ["wikipedia"]
    return {
        "url": f"https://example.org/{query.replace(' ', '-')}/{n}",
        "title": f"{query} result {n}",
        "content": f"Snippet {n} about {query}. " + "Long text. " * (40 if n == 0 else 1),
        "engine": engines[0],
        "engines": engines,
        "parsed_url": ["https", "example.org", f"/{n}", "", "", ""],
        "template": "default.html",
        "positions": [n + 1],
        "score": round(1.0 - n * 0.03, 2),
        "category": "general",
        "publishedDate": f"2026-06-{1 + n % 28:02d}T00:00:00" if n % 3 == 0 else None,
    }


@dataclass
class FakeSearxng:
    requests: list[dict[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    json_enabled: bool = True  # False: 403 for format=json, like a default settings.yml
    credentials: tuple[str, str] | None = None  # require this basic auth
    delay: float = 0.0
    raw_body: str | None = None

    async def _search(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.requests.append(query)
        self.authorizations.append(request.headers.get("authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            if request.headers.get("authorization") != f"Basic {token}":
                return PlainTextResponse("Unauthorized", status_code=401)
        if query.get("format") == "json" and not self.json_enabled:
            return PlainTextResponse("Forbidden", status_code=403)
        if self.raw_body is not None:
            return PlainTextResponse(self.raw_body, media_type="application/json")
        q = query.get("q", "")
        page = int(query.get("pageno", "1"))
        known = 0 if q == NO_HITS else TOTAL_HITS
        start = (page - 1) * PAGE_SIZE
        results = [hit(q, n) for n in range(start, min(start + PAGE_SIZE, known))]
        return JSONResponse(
            {
                "query": q,
                "number_of_results": 0,
                "results": results,
                "answers": [{"answer": f"{q} is a protocol", "url": "https://example.org/answer"}]
                if known
                else [],
                "corrections": [] if known else ["no such thing"],
                "infoboxes": [],
                "suggestions": [f"{q} tutorial", f"{q} server"] if known else [],
                "unresponsive_engines": [["google", "timeout"]],
            }
        )

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/search", self._search)])
