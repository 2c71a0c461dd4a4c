"""The SearXNG server: `searxng_web_search`, named and argued like `mcp-searxng`'s tool.

Environment (read once at startup; the server starts without any of it):

* `SEARXNG_URL` (required at call time, no public default): the instance's base URL; `/search` is appended
* `SEARXNG_TIMEOUT` (seconds, default 15)
* `SEARXNG_USERNAME` / `SEARXNG_PASSWORD` (aliases `AUTH_USERNAME` / `AUTH_PASSWORD`): HTTP basic auth

The instance must allow the JSON format (`search.formats: [html, json]` in its settings.yml); otherwise it
answers 403 and the tool error says so. Page fetching (`web_url_read`) is deliberately not offered: leave it
to `mcp-server-fetch`, which guards against private addresses.
"""

import importlib.metadata
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx2
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field

from mcphub_servers import _cli, _protocol, _upstream

SERVER_NAME = "mcphub-searxng"
SNIPPET_CHARS = 300  # per result in the text block; the structured content keeps the whole snippet
FORMATS_HINT = (
    "the instance does not serve format=json: add json to `search.formats` in its settings.yml "
    "(e.g. `search.formats: [html, json]`) and restart SearXNG"
)

try:
    SERVER_VERSION = importlib.metadata.version("mcphub")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    SERVER_VERSION = "0.0.0"

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


class SearchHit(BaseModel):
    title: str
    url: str
    content: str = ""
    engines: list[str] = Field(default_factory=list)
    score: float | None = None
    category: str | None = None
    published_date: str | None = None


class UnresponsiveEngine(BaseModel):
    engine: str
    error: str


class SearchResults(BaseModel):
    query: str
    pageno: int
    number_of_results: int | None = Field(
        default=None, description="SearXNG's estimate of all matches (often 0 = unknown)"
    )
    results: list[SearchHit]
    suggestions: list[str] = Field(default_factory=list)
    answers: list[str] = Field(default_factory=list)
    corrections: list[str] = Field(default_factory=list)
    unresponsive_engines: list[UnresponsiveEngine] = Field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    url: str | None
    timeout: float
    username: str | None
    password: str | None

    @classmethod
    def from_env(cls) -> "Settings":
        url = _upstream.env_str("SEARXNG_URL")
        return cls(
            url=url.rstrip("/") if url else None,
            timeout=_upstream.env_float("SEARXNG_TIMEOUT", _upstream.DEFAULT_TIMEOUT),
            username=_upstream.env_str("SEARXNG_USERNAME") or _upstream.env_str("AUTH_USERNAME"),
            password=_upstream.env_str("SEARXNG_PASSWORD") or _upstream.env_str("AUTH_PASSWORD"),
        )

    def search_url(self) -> str:
        if not self.url:
            raise ToolError(
                "SEARXNG_URL is not set: set it to your SearXNG instance's base URL "
                "(e.g. SEARXNG_URL=http://127.0.0.1:8080) in this server's environment"
            )
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).hostname:
            raise ToolError(f"SEARXNG_URL={_upstream.redact(self.url)!r} is not an http(s) URL")
        return f"{self.url}/search"



def _status_error(status: int, where: str) -> ToolError:
    if status == 403:
        return ToolError(f"GET {where} answered HTTP 403 Forbidden: {FORMATS_HINT}")
    if status == 401:
        return ToolError(
            f"GET {where} answered HTTP 401 Unauthorized: set SEARXNG_USERNAME and SEARXNG_PASSWORD "
            "(or AUTH_USERNAME / AUTH_PASSWORD) for the instance's basic auth"
        )
    if status == 429:
        return ToolError(f"GET {where} answered HTTP 429: the instance's rate limiter refused; try again later")
    return ToolError(f"GET {where} answered HTTP {status}")


def _int_to_str(value: Any) -> Any:
    """Accept newer mcp-searxng's integer safesearch (0/1/2) while advertising 1.16.0's string enum."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _answer_text(answer: Any) -> str:
    """SearXNG answers are strings in older releases, objects with an `answer` field in newer ones."""
    if isinstance(answer, dict):
        return str(answer.get("answer") or answer.get("content") or "")
    return str(answer)


def parse_results(body: Any, pageno: int) -> SearchResults:
    """SearXNG's JSON body as our model; ValueError/TypeError/KeyError when the shape is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ValueError("no 'results' list")
    hits = []
    for item in body["results"]:
        hits.append(
            SearchHit(
                title=item.get("title") or item["url"],
                url=item["url"],
                content=item.get("content") or "",
                engines=item.get("engines") or ([item["engine"]] if item.get("engine") else []),
                score=item.get("score"),
                category=item.get("category"),
                published_date=item.get("publishedDate") or None,
            )
        )
    unresponsive = [
        UnresponsiveEngine(engine=str(entry[0]), error=str(entry[1]) if len(entry) > 1 else "")
        if isinstance(entry, list | tuple) and entry
        else UnresponsiveEngine(engine=str(entry), error="")
        for entry in body.get("unresponsive_engines") or []
    ]
    return SearchResults(
        query=str(body.get("query", "")),
        pageno=pageno,
        number_of_results=body.get("number_of_results"),
        results=hits,
        suggestions=[str(s) for s in body.get("suggestions") or []],
        answers=[text for text in map(_answer_text, body.get("answers") or []) if text],
        corrections=[str(c) for c in body.get("corrections") or []],
        unresponsive_engines=unresponsive,
    )


def compact_text(found: SearchResults) -> str:
    """What the model reads: numbered title / URL / snippet lines, then answers and suggestions."""
    lines: list[str] = []
    if found.answers:
        lines.extend(f"Answer: {answer}" for answer in found.answers)
    if found.results:
        lines.append(f'Results for "{found.query}" (page {found.pageno}):')
        for n, hit in enumerate(found.results, start=1):
            dated = f" ({hit.published_date[:10]})" if hit.published_date else ""
            lines.append(f"{n}. {hit.title}{dated}")
            lines.append(f"   {hit.url}")
            snippet = " ".join(hit.content.split())
            if snippet:
                if len(snippet) > SNIPPET_CHARS:
                    snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
                lines.append(f"   {snippet}")
    else:
        lines.append(f'No results for "{found.query}" (page {found.pageno}).')
    if found.corrections:
        lines.append("Did you mean: " + ", ".join(found.corrections))
    if found.suggestions:
        lines.append("Suggestions: " + ", ".join(found.suggestions))
    if found.unresponsive_engines:
        lines.append(
            "Unresponsive engines: " + ", ".join(f"{e.engine} ({e.error})" for e in found.unresponsive_engines)
        )
    return "\n".join(lines)


def create_server(settings: Settings) -> MCPServer:
    auth = httpx2.BasicAuth(settings.username, settings.password or "") if settings.username else None
    connection = _upstream.Connection(
        "searxng", timeout=settings.timeout, auth=auth, headers={"Accept": "application/json"}
    )
    server = MCPServer(SERVER_NAME, version=SERVER_VERSION, subscriptions=False, lifespan=connection.lifespan)
    _protocol.reject_unknown_tools(server)

    @server.tool(
        title="Web search (SearXNG)",
        description="Performs a web search using the SearXNG API, ideal for general queries, news, articles, "
        "and online content. Use this for broad information gathering, recent events, or when you need "
        "diverse web sources.",
        annotations=READ_ONLY,
    )
    async def searxng_web_search(
        query: Annotated[str, Field(min_length=1, description="The search query")],
        pageno: Annotated[int, Field(ge=1, description="Search page number (starts at 1)")] = 1,
        time_range: Annotated[
            Literal["day", "week", "month", "year"] | None, Field(description="Only results from this period")
        ] = None,
        language: Annotated[str, Field(description="Language code for results, e.g. 'en', 'fr', 'de'")] = "all",
        safesearch: Annotated[
            Literal["0", "1", "2"] | None,
            BeforeValidator(_int_to_str),
            Field(description="Safe search: '0' none, '1' moderate, '2' strict (default: the instance's)"),
        ] = None,
        categories: Annotated[
            str | None, Field(description="Comma-separated SearXNG categories, e.g. 'general,news'")
        ] = None,
        engines: Annotated[
            str | None, Field(description="Comma-separated engines, e.g. 'duckduckgo,wikipedia'")
        ] = None,
        num_results: Annotated[int, Field(ge=1, le=20, description="At most this many results")] = 10,
        min_score: Annotated[
            float | None, Field(ge=0, le=1, description="Drop results whose SearXNG score is below this")
        ] = None,
    ) -> Annotated[CallToolResult, SearchResults]:
        url = settings.search_url()
        params: dict[str, Any] = {"q": query, "format": "json", "pageno": pageno, "language": language}
        if time_range:
            params["time_range"] = time_range
        if safesearch is not None:
            params["safesearch"] = int(safesearch)
        if categories and categories.strip():
            params["categories"] = categories.strip()
        if engines and engines.strip():
            params["engines"] = engines.strip()

        response = await _upstream.request(connection.get(), "GET", url, params=params)
        if response.status_code >= 400:
            raise _status_error(response.status_code, _upstream.redact(url))
        body = _upstream.json_body(response)
        try:
            found = parse_results(body, pageno)
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
        ) as exc:  # pydantic's ValidationError is a ValueError
            raise ToolError(
                f"GET {_upstream.redact(url)} answered JSON that is not a SearXNG result page "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if not found.query:
            found.query = query
        if min_score is not None:
            found.results = [hit for hit in found.results if (hit.score or 0.0) >= min_score]
        found.results = found.results[:num_results]
        return CallToolResult(
            content=[TextContent(type="text", text=compact_text(found))],
            structured_content=found.model_dump(mode="json"),
        )

    return server


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("searxng", "MCP server: web search through SearXNG")
    args = parser.parse_args(argv)
    _cli.run(create_server(Settings.from_env()), args)
