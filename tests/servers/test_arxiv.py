"""The bundled arxiv server against a fake arXiv export API on 127.0.0.1 (the outside world, a uvicorn thread).

The server runs in-process (`Client(<its MCPServer>)`, the SDK's in-memory transport), built by the same
`create_server()` that `python -m mcphub_servers.arxiv` calls, with os.environ set as that stdio child would
see it (`child_environment`). One test runs the real stdio child on purpose:
`test_real_process_search_sends_query_filters_paging_and_sort_and_returns_parsed_papers` checks that the
`python -m` entry point reads its settings (API URL, user agent) from the environment the hub gives it and
answers over the real wire; starting a python process for every test would cost ~0.8 s of imports each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcphub_servers.arxiv.client import RateLimiter
from mcphub_servers.arxiv.server import create_server
from starlette.responses import Response

from tests import helpers
from tests.fakes.arxiv import ArxivFake, error_entry_xml, feed_xml
from tests.helpers import free_port, serve_in_thread

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 30.0  # seconds: process start + handshake + a few calls
USER_AGENT = "mcphub-tests/1.0 (mailto:tests@example.org)"
SERVER_ENV_PREFIX = "ARXIV_"  # every setting the server reads (arxiv/client.py Settings.from_env)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ArxivFake, str]]:
    fake = ArxivFake()
    with serve_in_thread(fake.app()) as base_url:
        yield fake, base_url


@pytest.fixture
def fake(served: tuple[ArxivFake, str]) -> ArxivFake:
    served[0].reset()
    return served[0]


@pytest.fixture
def api_url(served: tuple[ArxivFake, str]) -> str:
    return served[1] + "/api/query"


def server_env(api_url: str, env: dict[str, str]) -> dict[str, str]:
    return {"ARXIV_API_URL": api_url, "ARXIV_MIN_INTERVAL": "0", "ARXIV_USER_AGENT": USER_AGENT, **env}


def _ours(name: str) -> bool:
    """A variable a stdio child of this server would not get from this process: arxiv's settings and proxies."""
    return name.startswith(SERVER_ENV_PREFIX) or name.lower().endswith("_proxy")


def child_environment(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """os.environ as a stdio child given only `env` sees it (tests.helpers.child_environment)."""
    return helpers.child_environment(env, drop=_ours)


@contextlib.asynccontextmanager
async def arxiv_server(api_url: str, **env: str) -> AsyncIterator[Client]:
    """The server in-process, built from the environment like `python -m mcphub_servers.arxiv`."""
    with child_environment(server_env(api_url, env)):
        async with Client(create_server(), cache=None) as client:
            yield client


@contextlib.asynccontextmanager
async def arxiv_process(api_url: str, **env: str) -> AsyncIterator[Client]:
    """The server as the hub runs it: a stdio child given only `env`."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcphub_servers.arxiv"], env=server_env(api_url, env)
    )
    async with Client(params, cache=None) as client:
        yield client


async def call(api_url: str, tool: str, args: dict[str, Any], **env: str) -> Any:
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url, **env) as c:
            return await c.call_tool(tool, args)


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return text(result)


async def test_lists_three_read_only_tools_with_output_schemas(api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == {"search_papers", "get_abstract", "get_papers"}
    assert tools["search_papers"].input_schema["required"] == ["query"]
    assert tools["get_abstract"].input_schema["required"] == ["paper_id"]
    assert tools["search_papers"].input_schema["properties"]["max_results"]["maximum"] == 50
    search_output = tools["search_papers"].output_schema
    assert search_output is not None
    assert set(search_output["properties"]) >= {
        "total_results",
        "start",
        "returned",
        "next_start",
        "papers",
    }
    for tool in tools.values():
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.destructive_hint is False
        assert tool.annotations.open_world_hint is True


async def test_real_process_search_sends_query_filters_paging_and_sort_and_returns_parsed_papers(
    fake: ArxivFake, api_url: str
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_process(api_url) as c:
            result = await c.call_tool(
                "search_papers",
                {
                    "query": 'transformer "machine translation"',
                    "categories": ["cs.CL", "cs.LG"],
                    "date_from": "2017-01-01",
                    "date_to": "2024-12-31",
                    "sort_by": "date",
                    "max_results": 2,
                },
            )
    assert not result.is_error, text(result)
    [sent] = fake.requests
    assert sent.params == {
        "search_query": '(all:transformer AND all:"machine translation") AND (cat:cs.CL OR cat:cs.LG) '
        "AND (submittedDate:[201701010000 TO 202412312359])",
        "start": "0",
        "max_results": "2",
        "sortBy": "submittedDate",
        "sortOrder": "descending",
    }
    assert sent.headers["user-agent"] == USER_AGENT
    out = result.structured_content
    assert (out["total_results"], out["start"], out["returned"], out["next_start"]) == (3, 0, 2, 2)
    first, second = out["papers"]
    assert first == {
        "id": "1706.03762",
        "versioned_id": "1706.03762v7",
        "title": "Attention Is All You Need",
        "authors": ["Ashish Vaswani", "Noam Shazeer", "Niki Parmar", "Jakob Uszkoreit"],
        "summary": "The dominant sequence transduction models are based on complex recurrent or "
        "convolutional neural networks in an encoder-decoder configuration. We propose "
        "a new simple network architecture, the Transformer.",
        "categories": ["cs.CL", "cs.LG"],
        "primary_category": "cs.CL",
        "published": "2017-06-12T17:57:34Z",
        "updated": "2023-08-02T00:41:18Z",
        "abs_url": "http://arxiv.org/abs/1706.03762v7",
        "pdf_url": "http://arxiv.org/pdf/1706.03762v7",
    }
    assert second["id"] == "hep-th/9711200"
    assert second["pdf_url"] == "http://arxiv.org/pdf/hep-th/9711200v3"


async def test_arxiv_query_syntax_is_passed_through_and_relevance_is_the_default_sort(
    fake: ArxivFake, api_url: str
) -> None:
    result = await call(api_url, "search_papers", {"query": 'au:maldacena AND ti:"large N"', "start": 1})
    assert not result.is_error, text(result)
    [sent] = fake.requests
    assert sent.params["search_query"] == 'au:maldacena AND ti:"large N"'
    assert (sent.params["sortBy"], sent.params["start"], sent.params["max_results"]) == (
        "relevance",
        "1",
        "5",
    )


async def test_last_page_has_no_next_start_and_a_middle_page_points_past_itself(
    fake: ArxivFake, api_url: str
) -> None:
    last = await call(api_url, "search_papers", {"query": "physics", "start": 2, "max_results": 2})
    assert last.structured_content["returned"] == 1
    assert last.structured_content["next_start"] is None
    assert last.structured_content["papers"][0]["title"] == "Mixtral of Experts"  # line break folded

    fake.total_results = 1000
    middle = await call(api_url, "search_papers", {"query": "physics", "start": 1, "max_results": 2})
    assert middle.structured_content["total_results"] == 1000
    assert middle.structured_content["next_start"] == 3


async def test_search_without_hits_returns_an_empty_page(fake: ArxivFake, api_url: str) -> None:
    fake.papers = []
    result = await call(api_url, "search_papers", {"query": "nothing matches this"})
    assert not result.is_error, text(result)
    assert result.structured_content["total_results"] == 0
    assert result.structured_content["papers"] == []
    assert result.structured_content["next_start"] is None


async def test_bad_dates_are_rejected_without_calling_arxiv(fake: ArxivFake, api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url) as c:
            not_a_date = error_text(
                await c.call_tool("search_papers", {"query": "x", "date_from": "2024/01/01"})
            )
            reversed_range = error_text(
                await c.call_tool(
                    "search_papers", {"query": "x", "date_from": "2024-02-01", "date_to": "2024-01-01"}
                )
            )
    assert "date_from='2024/01/01' is not a date; expected YYYY-MM-DD" in not_a_date
    assert "date_from 2024-02-01 is after date_to 2024-01-01" in reversed_range
    assert fake.requests == []


async def test_get_abstract_accepts_versioned_old_style_and_url_ids(fake: ArxivFake, api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url) as c:
            v2 = await c.call_tool("get_abstract", {"paper_id": "1706.03762v2"})
            old = await c.call_tool("get_abstract", {"paper_id": "hep-th/9711200"})
            url = await c.call_tool("get_abstract", {"paper_id": "https://arxiv.org/abs/2401.04088"})
    assert [r.params["id_list"] for r in fake.requests] == ["1706.03762v2", "hep-th/9711200", "2401.04088"]
    assert v2.structured_content["versioned_id"] == "1706.03762v2"
    assert v2.structured_content["pdf_url"] == "http://arxiv.org/pdf/1706.03762v2"
    assert old.structured_content["id"] == "hep-th/9711200"
    assert old.structured_content["versioned_id"] == "hep-th/9711200v3"
    assert old.structured_content["authors"] == ["Juan M. Maldacena"]
    assert url.structured_content["categories"] == ["cs.LG", "cs.CL"]
    assert url.structured_content["primary_category"] == "cs.LG"


async def test_unknown_paper_is_a_not_found_error(fake: ArxivFake, api_url: str) -> None:
    result = await call(api_url, "get_abstract", {"paper_id": "2501.00001"})
    assert "arXiv paper 2501.00001 not found" in error_text(result)
    assert fake.requests[0].params["id_list"] == "2501.00001"


async def test_arxiv_error_entry_means_not_found_for_ids_and_rejected_for_searches(
    fake: ArxivFake, api_url: str
) -> None:
    error_feed = feed_xml(
        [error_entry_xml("incorrect id format for 1706.03762")], total=1, start=0, per_page=1
    )
    fake.override = Response(error_feed, status_code=400, media_type="application/atom+xml")
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url) as c:
            lookup = error_text(await c.call_tool("get_abstract", {"paper_id": "1706.03762"}))
            search = error_text(await c.call_tool("search_papers", {"query": "x"}))
    assert "arXiv paper 1706.03762 not found" in lookup
    assert "incorrect id format for 1706.03762" in lookup
    assert f"arXiv rejected the request (GET {api_url}): incorrect id format for 1706.03762" in search


async def test_malformed_ids_are_rejected_without_calling_arxiv(fake: ArxivFake, api_url: str) -> None:
    result = await call(api_url, "get_abstract", {"paper_id": "attention is all you need"})
    assert "'attention is all you need' is not an arXiv id" in error_text(result)
    assert fake.requests == []


async def test_get_papers_keeps_the_requested_order_and_lists_missing_ids(
    fake: ArxivFake, api_url: str
) -> None:
    ids = ["hep-th/9711200", "1706.03762", "2501.99999", "1706.03762"]
    result = await call(api_url, "get_papers", {"paper_ids": ids})
    assert not result.is_error, text(result)
    [sent] = fake.requests
    assert sent.params["id_list"] == "hep-th/9711200,1706.03762,2501.99999"
    assert sent.params["max_results"] == "3"
    out = result.structured_content
    assert [p["versioned_id"] for p in out["papers"]] == ["hep-th/9711200v3", "1706.03762v7"]
    assert out["missing"] == ["2501.99999"]


async def test_busy_arxiv_answer_says_when_to_retry(fake: ArxivFake, api_url: str) -> None:
    fake.override = Response("Rate exceeded.", status_code=503, headers={"Retry-After": "30"})
    result = await call(api_url, "search_papers", {"query": "x"})
    assert f"GET {api_url} answered HTTP 503; arXiv asks to retry after 30 s" in error_text(result)


async def test_a_body_that_is_not_atom_is_reported_with_the_url(fake: ArxivFake, api_url: str) -> None:
    fake.override = Response("<html><body>maintenance</body></html>", media_type="text/html")
    result = await call(api_url, "search_papers", {"query": "x"})
    message = error_text(result)
    assert f"GET {api_url} answered a body that is not an Atom feed (root element 'html')" in message
    assert "maintenance" in message


async def test_slow_arxiv_times_out_with_the_configured_timeout(fake: ArxivFake, api_url: str) -> None:
    fake.delay = 1.0  # well past the 0.3 s timeout; the fake's thread waits this out before it can stop
    result = await call(api_url, "get_abstract", {"paper_id": "1706.03762"}, ARXIV_TIMEOUT="0.3")
    assert f"GET {api_url} failed: timed out after 0.3s" in error_text(result)


async def test_starts_offline_and_names_the_unreachable_url() -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/api/query"
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(dead_url) as c:
            assert len((await c.list_tools()).tools) == 3
            result = await c.call_tool("search_papers", {"query": "x"})
    assert f"GET {dead_url} failed: cannot reach upstream" in error_text(result)


async def test_concurrent_calls_reach_arxiv_at_least_min_interval_apart(
    fake: ArxivFake, api_url: str
) -> None:
    results: list[Any] = []
    with anyio.fail_after(CALL_TIMEOUT):
        async with arxiv_server(api_url, ARXIV_MIN_INTERVAL="0.5") as c:

            async def one(query: str) -> None:
                results.append(await c.call_tool("search_papers", {"query": query}))

            async with anyio.create_task_group() as tg:
                for query in ("first", "second", "third"):
                    tg.start_soon(one, query)
    assert [r.is_error for r in results] == [False, False, False]
    arrivals = [r.arrived for r in fake.requests]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 2
    assert min(gaps) >= 0.5, gaps


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_rate_limiter_waits_only_for_what_is_left_of_the_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3.0, clock=clock, sleep=clock.sleep)

    async def request_taking(seconds: float) -> Any:
        clock.now += seconds
        return seconds

    first: object = await limiter.run(lambda: request_taking(0.5))  # first request: no wait
    assert first == 0.5
    clock.now += 1.0  # the caller thinks for a second
    await limiter.run(lambda: request_taking(0.5))  # 2 s of the 3 s interval are left
    await limiter.run(lambda: request_taking(0.0))  # straight after: the whole interval
    clock.now += 10.0
    await limiter.run(lambda: request_taking(0.0))  # long after: no wait
    assert clock.sleeps == [2.0, 3.0]
