"""The bundled SearXNG server against a fake SearXNG instance on 127.0.0.1 (the outside world, a uvicorn thread).

The server runs in-process (`Client(<its MCPServer>)`, the SDK's in-memory transport), built as
`python -m mcphub_servers.searxng` builds it (`create_server(Settings.from_env())`), with os.environ set as
that stdio child would see it (`child_environment`). One test runs the real stdio child on purpose:
`test_real_process_default_search_sends_the_reference_query_and_returns_ten_results` checks that the
`python -m` entry point reads SEARXNG_URL from the environment the hub gives it and answers over the real
wire; starting a python process for every test would cost ~0.8 s of imports each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import INVALID_PARAMS
from mcphub_servers.searxng.server import Settings, create_server

from tests import helpers
from tests.fakes.searxng import NO_HITS, FakeSearxng, hit
from tests.helpers import Front, free_port, serve_in_thread

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 30.0  # seconds: process start + handshake + a few calls
SERVER_ENV_PREFIXES = ("SEARXNG_", "AUTH_")  # every setting the server reads (Settings.from_env)


@pytest.fixture(scope="module")
def searxng_front() -> Iterator[tuple[Front, str]]:
    front = Front()
    with serve_in_thread(front) as url:
        yield front, url


@pytest.fixture
def fake(searxng_front: tuple[Front, str]) -> Iterator[tuple[FakeSearxng, str]]:
    front, url = searxng_front
    upstream = FakeSearxng()
    with front.behind(upstream.app):
        yield upstream, url


def _ours(name: str) -> bool:
    """A variable a stdio child of this server would not get from this process: searxng's settings and proxies."""
    return name.startswith(SERVER_ENV_PREFIXES) or name.lower().endswith("_proxy")


def child_environment(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """os.environ as a stdio child given only `env` sees it (tests.helpers.child_environment)."""
    return helpers.child_environment(env, drop=_ours)


@contextlib.asynccontextmanager
async def searxng_server(**env: str) -> AsyncIterator[Client]:
    """The server in-process, built from the environment like `python -m mcphub_servers.searxng`."""
    with child_environment(env):
        async with Client(create_server(Settings.from_env()), cache=None) as client:
            yield client


@contextlib.asynccontextmanager
async def searxng_process(**env: str) -> AsyncIterator[Client]:
    """The server as the hub runs it: a stdio child given only `env`."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcphub_servers.searxng"], env=env)
    async with Client(params, cache=None) as client:
        yield client


async def search(args: dict[str, Any], **env: str) -> Any:
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server(**env) as c:
            return await c.call_tool("searxng_web_search", args)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return text_of(result)


def expected_hit(query: str, n: int) -> dict[str, Any]:
    raw = hit(query, n)
    return {
        "title": raw["title"],
        "url": raw["url"],
        "content": raw["content"],
        "engines": raw["engines"],
        "score": raw["score"],
        "category": raw["category"],
        "published_date": raw["publishedDate"],
    }


async def test_offers_only_the_web_search_tool_with_mcp_searxng_arguments(
    fake: tuple[FakeSearxng, str],
) -> None:
    _, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server(SEARXNG_URL=url) as c:
            [tool] = (await c.list_tools()).tools
    assert tool.name == "searxng_web_search"
    props = tool.input_schema["properties"]
    assert {
        "query",
        "pageno",
        "time_range",
        "language",
        "safesearch",
        "categories",
        "engines",
        "num_results",
    } <= set(props)
    assert tool.input_schema["required"] == ["query"]
    assert props["pageno"]["default"] == 1 and props["pageno"]["minimum"] == 1
    assert props["language"]["default"] == "all"
    assert (props["num_results"]["minimum"], props["num_results"]["maximum"]) == (1, 20)
    assert tool.output_schema is not None and "results" in tool.output_schema["properties"]
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint and tool.annotations.open_world_hint


async def test_starts_without_searxng_url_and_says_to_set_it() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server() as c:
            assert len((await c.list_tools()).tools) == 1
            result = await c.call_tool("searxng_web_search", {"query": "mcp"})
    assert "SEARXNG_URL is not set" in error_text(result)


async def test_an_unknown_tool_is_a_jsonrpc_invalid_params_error_as_from_mcp_searxng() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server() as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("web_url_read", {"url": "http://127.0.0.1/"})
    assert (caught.value.code, str(caught.value)) == (INVALID_PARAMS, "Unknown tool: web_url_read")


async def test_real_process_default_search_sends_the_reference_query_and_returns_ten_results(
    fake: tuple[FakeSearxng, str],
) -> None:
    upstream, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_process(SEARXNG_URL=url) as c:
            result = await c.call_tool("searxng_web_search", {"query": "mcp"})
    assert not result.is_error, result
    assert upstream.requests == [{"q": "mcp", "format": "json", "pageno": "1", "language": "all"}]
    data = result.structured_content
    assert data["query"] == "mcp"
    assert data["results"] == [expected_hit("mcp", n) for n in range(10)]
    assert data["suggestions"] == ["mcp tutorial", "mcp server"]
    assert data["answers"] == ["mcp is a protocol"]
    assert data["unresponsive_engines"] == [{"engine": "google", "error": "timeout"}]


async def test_arguments_map_to_searxng_parameters_with_safesearch_as_integer(
    fake: tuple[FakeSearxng, str],
) -> None:
    upstream, url = fake
    args = {
        "query": "model context protocol",
        "pageno": 2,
        "time_range": "month",
        "language": "en",
        "safesearch": "2",
        "categories": "general,news",
        "engines": "duckduckgo,wikipedia",
        "num_results": 20,
    }
    result = await search(args, SEARXNG_URL=url + "/")
    assert upstream.requests == [
        {
            "q": "model context protocol",
            "format": "json",
            "pageno": "2",
            "time_range": "month",
            "language": "en",
            "safesearch": "2",
            "categories": "general,news",
            "engines": "duckduckgo,wikipedia",
        }
    ]
    # page 2 of 30 known hits holds hits 20..29
    assert [r["url"] for r in result.structured_content["results"]] == [
        hit("model context protocol", n)["url"] for n in range(20, 30)
    ]
    assert result.structured_content["pageno"] == 2


async def test_integer_safesearch_from_newer_mcp_searxng_prompts_is_accepted(
    fake: tuple[FakeSearxng, str],
) -> None:
    upstream, url = fake
    result = await search({"query": "mcp", "safesearch": 1}, SEARXNG_URL=url)
    assert not result.is_error, result
    assert upstream.requests[0]["safesearch"] == "1"


async def test_num_results_and_min_score_trim_the_page(fake: tuple[FakeSearxng, str]) -> None:
    _, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server(SEARXNG_URL=url) as c:
            three = await c.call_tool("searxng_web_search", {"query": "mcp", "num_results": 3})
            scored = await c.call_tool("searxng_web_search", {"query": "mcp", "min_score": 0.9, "num_results": 20})
    assert [r["title"] for r in three.structured_content["results"]] == [
        "mcp result 0",
        "mcp result 1",
        "mcp result 2",
    ]
    expected = [hit("mcp", n)["score"] for n in range(20) if hit("mcp", n)["score"] >= 0.9]
    assert [r["score"] for r in scored.structured_content["results"]] == expected
    assert len(expected) == 4


async def test_text_block_is_a_compact_numbered_list_for_the_model(fake: tuple[FakeSearxng, str]) -> None:
    _, url = fake
    text = text_of(await search({"query": "mcp", "num_results": 2}, SEARXNG_URL=url))
    lines = text.splitlines()
    assert lines[0] == "Answer: mcp is a protocol"
    assert lines[1] == 'Results for "mcp" (page 1):'
    assert lines[2] == "1. mcp result 0 (2026-06-01)"  # published date, when SearXNG has one
    assert lines[3] == f"   {hit('mcp', 0)['url']}"
    assert lines[4].endswith("…") and len(lines[4]) == 3 + 300  # long snippet cut to 300 characters
    assert lines[5:8] == [
        "2. mcp result 1",
        f"   {hit('mcp', 1)['url']}",
        "   Snippet 1 about mcp. Long text.",
    ]
    assert "Suggestions: mcp tutorial, mcp server" in lines
    assert "Unresponsive engines: google (timeout)" in lines
    assert "publishedDate" not in text and "{" not in text


async def test_no_results_is_an_empty_list_not_an_error(fake: tuple[FakeSearxng, str]) -> None:
    _, url = fake
    result = await search({"query": NO_HITS}, SEARXNG_URL=url)
    assert not result.is_error, result
    assert result.structured_content["results"] == []
    assert result.structured_content["corrections"] == ["no such thing"]
    assert text_of(result).startswith(f'No results for "{NO_HITS}"')


async def test_json_format_disabled_gives_the_settings_hint(fake: tuple[FakeSearxng, str]) -> None:
    upstream, url = fake
    upstream.json_enabled = False
    text = error_text(await search({"query": "mcp"}, SEARXNG_URL=url))
    assert f"GET {url}/search answered HTTP 403" in text
    assert "search.formats" in text and "json" in text


async def test_basic_auth_comes_from_searxng_or_auth_variables(fake: tuple[FakeSearxng, str]) -> None:
    upstream, url = fake
    upstream.credentials = ("alice", "pw")
    ok = await search({"query": "mcp"}, SEARXNG_URL=url, SEARXNG_USERNAME="alice", SEARXNG_PASSWORD="pw")
    alias = await search({"query": "mcp"}, SEARXNG_URL=url, AUTH_USERNAME="alice", AUTH_PASSWORD="pw")
    missing = await search({"query": "mcp"}, SEARXNG_URL=url)
    assert not ok.is_error and not alias.is_error
    assert upstream.authorizations[:2] == ["Basic YWxpY2U6cHc=", "Basic YWxpY2U6cHc="]
    text = error_text(missing)
    assert "HTTP 401" in text and "SEARXNG_USERNAME" in text


async def test_slow_instance_times_out_with_the_configured_timeout(fake: tuple[FakeSearxng, str]) -> None:
    upstream, url = fake
    upstream.delay = 1.0  # well past the 0.3 s timeout; the fake's thread waits this out before it can stop
    text = error_text(await search({"query": "mcp"}, SEARXNG_URL=url, SEARXNG_TIMEOUT="0.3"))
    assert f"GET {url}/search failed: timed out after 0.3s" in text


async def test_broken_bodies_are_tool_errors_naming_the_url(fake: tuple[FakeSearxng, str]) -> None:
    upstream, url = fake
    upstream.raw_body = "<html>oops"
    not_json = error_text(await search({"query": "mcp"}, SEARXNG_URL=url))
    upstream.raw_body = '{"query": "mcp", "results": "nope"}'
    wrong_shape = error_text(await search({"query": "mcp"}, SEARXNG_URL=url))
    assert f"{url}/search" in not_json and "not JSON" in not_json
    assert f"{url}/search" in wrong_shape and "not a SearXNG result page" in wrong_shape


async def test_nothing_listening_names_the_unreachable_url() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    text = error_text(await search({"query": "mcp"}, SEARXNG_URL=dead))
    assert f"GET {dead}/search failed: cannot reach upstream" in text


async def test_out_of_range_arguments_are_rejected_before_any_request(fake: tuple[FakeSearxng, str]) -> None:
    upstream, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with searxng_server(SEARXNG_URL=url) as c:
            too_many = await c.call_tool("searxng_web_search", {"query": "mcp", "num_results": 50})
            bad_safe = await c.call_tool("searxng_web_search", {"query": "mcp", "safesearch": "3"})
            page_zero = await c.call_tool("searxng_web_search", {"query": "mcp", "pageno": 0})
            bad_range = await c.call_tool("searxng_web_search", {"query": "mcp", "time_range": "decade"})
    assert "num_results" in error_text(too_many)
    assert "safesearch" in error_text(bad_safe)
    assert "pageno" in error_text(page_zero)
    assert "time_range" in error_text(bad_range)
    assert upstream.requests == []
