"""The arxiv MCP server: search_papers, get_abstract, get_papers over arXiv's export API.

Tool names follow arxiv-mcp-server; the implementation is our own (Atom parsed with xml.etree).
Env: ARXIV_API_URL, ARXIV_MIN_INTERVAL, ARXIV_TIMEOUT, ARXIV_USER_AGENT. No secret.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcphub_servers import _cli
from mcphub_servers.arxiv.client import SORTS, ArxivAPI, Settings, build_search_query
from mcphub_servers.arxiv.feed import Paper, normalize_id, split_version

MAX_SEARCH_RESULTS = 50
MAX_PAPER_IDS = 20

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def _version() -> str:
    try:
        return importlib.metadata.version("mcphub")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class SearchResult(BaseModel):
    search_query: str = Field(description="The search_query sent to arXiv")
    total_results: int
    start: int
    returned: int
    next_start: int | None = Field(description="Pass as `start` for the next page; null on the last page")
    papers: list[Paper]


class PaperList(BaseModel):
    papers: list[Paper] = Field(description="In the order the ids were given")
    missing: list[str] = Field(description="Requested ids arXiv does not know")


def _matches(paper: Paper, wanted: str) -> bool:
    base, version = split_version(wanted)
    return paper.id == base and (version is None or paper.versioned_id == wanted)


def create_server(settings: Settings | None = None) -> MCPServer:
    version = _version()
    api = ArxivAPI(settings or Settings.from_env(version))
    mcp = MCPServer(
        "arxiv",
        version=version,
        instructions="Search arXiv and read paper metadata and abstracts. Requests are rate limited "
        "(one every few seconds), so prefer one good search over many small ones.",
        subscriptions=False,
        lifespan=api.connection.lifespan,
    )

    @mcp.tool(title="Search arXiv", annotations=READ_ONLY)
    async def search_papers(
        query: Annotated[
            str,
            Field(
                description="Words to search for, or arXiv query syntax "
                '(ti:, au:, abs:, cat:, all: with AND/OR/ANDNOT, e.g. au:hinton AND ti:"deep learning")'
            ),
        ],
        max_results: Annotated[int, Field(ge=1, le=MAX_SEARCH_RESULTS)] = 5,
        start: Annotated[int, Field(ge=0, description="Offset of the first result (pagination)")] = 0,
        date_from: Annotated[str | None, Field(description="Submitted on or after, YYYY-MM-DD")] = None,
        date_to: Annotated[str | None, Field(description="Submitted on or before, YYYY-MM-DD")] = None,
        categories: Annotated[
            list[str] | None, Field(description="arXiv categories, any of, e.g. ['cs.CL', 'cs.LG']")
        ] = None,
        sort_by: Annotated[
            Literal["relevance", "date", "updated"],
            Field(description="relevance, date (submitted) or updated (last revised)"),
        ] = "relevance",
        sort_order: Literal["descending", "ascending"] = "descending",
    ) -> SearchResult:
        """Search arXiv papers; returns titles, authors, abstracts, categories and links."""
        search_query = build_search_query(query, categories=categories, date_from=date_from, date_to=date_to)
        feed = await api.query(
            {
                "search_query": search_query,
                "start": start,
                "max_results": max_results,
                "sortBy": SORTS[sort_by],
                "sortOrder": sort_order,
            }
        )
        returned = len(feed.papers)
        end = feed.start + returned
        return SearchResult(
            search_query=search_query,
            total_results=feed.total_results,
            start=feed.start,
            returned=returned,
            next_start=end if returned and end < feed.total_results else None,
            papers=feed.papers,
        )

    @mcp.tool(title="Get an arXiv abstract", annotations=READ_ONLY)
    async def get_abstract(
        paper_id: Annotated[
            str, Field(description="arXiv id: 2401.12345, 2401.12345v2, hep-th/9901001 or an arxiv.org URL")
        ],
    ) -> Paper:
        """Get one paper's metadata and abstract by arXiv id (latest version unless a version is given)."""
        wanted = normalize_id(paper_id)
        feed = await api.query({"id_list": wanted, "start": 0, "max_results": 1}, lookup=f"paper {wanted}")
        for paper in feed.papers:
            if _matches(paper, wanted):
                return paper
        raise ToolError(f"arXiv paper {wanted} not found")

    @mcp.tool(title="Get several arXiv papers", annotations=READ_ONLY)
    async def get_papers(
        paper_ids: Annotated[
            list[str], Field(min_length=1, max_length=MAX_PAPER_IDS, description="arXiv ids")
        ],
    ) -> PaperList:
        """Get metadata and abstracts for up to 20 papers in one request."""
        wanted = list(dict.fromkeys(normalize_id(p) for p in paper_ids))
        feed = await api.query(
            {"id_list": ",".join(wanted), "start": 0, "max_results": len(wanted)},
            lookup=f"papers {', '.join(wanted)}",
        )
        found: list[Paper] = []
        missing: list[str] = []
        for paper_id in wanted:
            paper = next((p for p in feed.papers if _matches(p, paper_id)), None)
            if paper is None:
                missing.append(paper_id)
            else:
                found.append(paper)
        if not found:
            raise ToolError(f"arXiv papers not found: {', '.join(missing)}")
        return PaperList(papers=found, missing=missing)

    return mcp


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("arxiv", "arXiv MCP server")
    args = parser.parse_args(argv)
    _cli.run(create_server(), args)
