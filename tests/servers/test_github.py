"""The bundled github server against a fake GitHub REST API on 127.0.0.1 (the outside world, a uvicorn thread).

The server runs in-process (`Client(<its MCPServer>)`, the SDK's in-memory transport), built by the same
`create_server()` that `python -m mcphub_servers.github` calls, with os.environ set as that stdio child would
see it (`child_environment`). One test runs the real stdio child on purpose:
`test_real_process_search_repositories_sends_bearer_token_and_params_and_reports_next_page` checks that the
`python -m` entry point reads its settings from the environment the hub gives it and that the token reaches
GitHub over the real wire; starting a python process for every test would cost ~0.8 s of imports each.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcphub_servers.github.server import create_server
from starlette.responses import Response

from tests import helpers
from tests.fakes.github import FILES, OWNER, PR_DIFF, REPO, TOKEN, GitHubFake, error
from tests.helpers import free_port, serve_in_thread

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 30.0  # seconds: process start + handshake + a few calls
SERVER_ENV_PREFIX = "GITHUB_"  # every setting the server reads (github/client.py Settings.from_env)
READ_TOOLS = {
    "get_me", "search_repositories", "get_file_contents", "list_commits", "search_code", "list_issues",
    "search_issues", "issue_read", "list_pull_requests", "pull_request_read",
}  # fmt: skip
WRITE_TOOLS = {"issue_write", "add_issue_comment"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[GitHubFake, str]]:
    fake = GitHubFake()
    with serve_in_thread(fake.app()) as base_url:
        yield fake, base_url


@pytest.fixture
def fake(served: tuple[GitHubFake, str]) -> GitHubFake:
    served[0].reset()
    return served[0]


@pytest.fixture
def api_url(served: tuple[GitHubFake, str]) -> str:
    return served[1]


def server_env(api_url: str, env: dict[str, str]) -> dict[str, str]:
    env = {"GITHUB_API_URL": api_url, "GITHUB_PERSONAL_ACCESS_TOKEN": TOKEN, **env}
    return {k: v for k, v in env.items() if v}  # pass "" to leave a variable out


def _ours(name: str) -> bool:
    """A variable a stdio child of this server would not get from this process: github's settings and proxies."""
    return name.startswith(SERVER_ENV_PREFIX) or name.lower().endswith("_proxy")


def child_environment(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """os.environ as a stdio child given only `env` sees it (tests.helpers.child_environment)."""
    return helpers.child_environment(env, drop=_ours)


@contextlib.asynccontextmanager
async def github_server(api_url: str, **env: str) -> AsyncIterator[Client]:
    """The server in-process, built from the environment like `python -m mcphub_servers.github`."""
    with child_environment(server_env(api_url, env)):
        async with Client(create_server(), cache=None) as client:
            yield client


@contextlib.asynccontextmanager
async def github_process(api_url: str, **env: str) -> AsyncIterator[Client]:
    """The server as the hub runs it: a stdio child given only `env`."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcphub_servers.github"], env=server_env(api_url, env)
    )
    async with Client(params, cache=None) as client:
        yield client


async def call(api_url: str, tool: str, args: dict[str, Any], **env: str) -> Any:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url, **env) as c:
            return await c.call_tool(tool, args)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, "\n".join(b.text for b in result.content)
    content: dict[str, Any] = result.structured_content
    return content


def error_text(result: Any) -> str:
    assert result.is_error, result
    return "\n".join(b.text for b in result.content)


def url_keys(value: Any, path: str = "") -> list[str]:
    """Every key ending in `url` except html_url, anywhere in a JSON value."""
    if isinstance(value, dict):
        found = [f"{path}.{k}" for k in value if k.endswith("url") and k != "html_url"]
        return found + [p for k, v in value.items() for p in url_keys(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in url_keys(v, f"{path}[{i}]")]
    return []


async def test_read_only_by_default_lists_only_read_tools_with_schemas_and_annotations(api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == READ_TOOLS
    assert tools["search_repositories"].input_schema["required"] == ["query"]
    assert set(tools["pull_request_read"].input_schema["required"]) == {
        "method",
        "owner",
        "repo",
        "pullNumber",
    }
    assert set(tools["issue_read"].input_schema["required"]) == {"method", "owner", "repo", "issue_number"}
    assert "perPage" in tools["list_issues"].input_schema["properties"]
    for tool in tools.values():
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.open_world_hint is True


async def test_write_tools_appear_when_read_only_is_off_and_create_an_issue(
    fake: GitHubFake, api_url: str
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url, GITHUB_READ_ONLY="0") as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            created = await c.call_tool(
                "issue_write",
                {"method": "create", "owner": OWNER, "repo": REPO, "title": "New bug", "labels": ["bug"]},
            )
            commented = await c.call_tool(
                "add_issue_comment", {"owner": OWNER, "repo": REPO, "issue_number": 12, "body": "On it."}
            )
    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    assert tools["issue_write"].annotations is not None
    assert tools["issue_write"].annotations.read_only_hint is False
    post_issue, post_comment = fake.requests
    assert (post_issue.method, post_issue.path) == ("POST", f"/repos/{OWNER}/{REPO}/issues")
    assert post_issue.body == {"title": "New bug", "labels": ["bug"]}
    assert ok(created)["number"] == 13
    assert ok(created)["labels"] == ["bug"]
    assert (post_comment.method, post_comment.path) == ("POST", f"/repos/{OWNER}/{REPO}/issues/12/comments")
    assert ok(commented)["body"] == "On it."


async def test_issue_update_sends_only_the_fields_given(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url,
        "issue_write",
        {"method": "update", "owner": OWNER, "repo": REPO, "issue_number": 10, "state": "closed",
         "state_reason": "completed"},
        GITHUB_READ_ONLY="0",
    )  # fmt: skip
    [patch] = fake.requests
    assert (patch.method, patch.path) == ("PATCH", f"/repos/{OWNER}/{REPO}/issues/10")
    assert patch.body == {"state": "closed", "state_reason": "completed"}
    assert ok(result)["state"] == "closed"


async def test_real_process_search_repositories_sends_bearer_token_and_params_and_reports_next_page(
    fake: GitHubFake, api_url: str
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_process(api_url) as c:
            result = await c.call_tool(
                "search_repositories", {"query": "mcp language:python", "sort": "stars", "page": 1, "perPage": 2}
            )
    [sent] = fake.requests
    assert sent.path == "/search/repositories"
    assert sent.params == {"q": "mcp language:python", "sort": "stars", "page": "1", "per_page": "2"}
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "application/vnd.github+json"
    assert sent.headers["x-github-api-version"] == "2022-11-28"
    assert sent.headers["user-agent"].startswith("mcphub-github/")
    out = ok(result)
    assert (out["total_count"], out["page"], out["next_page"], out["last_page"]) == (3, 1, 2, 2)
    assert [r["full_name"] for r in out["items"]] == [
        "modelcontextprotocol/python-sdk",
        "modelcontextprotocol/servers",
    ]
    first = out["items"][0]
    assert (first["stargazers_count"], first["license"], first["topics"]) == (19000, "MIT", ["mcp", "python"])


async def test_results_are_compact_without_the_apis_url_fields(fake: GitHubFake, api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url) as c:
            results = [
                await c.call_tool("search_repositories", {"query": "mcp"}),
                await c.call_tool("list_issues", {"owner": OWNER, "repo": REPO}),
                await c.call_tool(
                    "issue_read", {"method": "get", "owner": OWNER, "repo": REPO, "issue_number": 12}
                ),
                await c.call_tool("list_pull_requests", {"owner": OWNER, "repo": REPO}),
                await c.call_tool(
                    "pull_request_read", {"method": "get", "owner": OWNER, "repo": REPO, "pullNumber": 11}
                ),
                await c.call_tool("list_commits", {"owner": OWNER, "repo": REPO}),
                await c.call_tool("get_me", {}),
            ]
    for result in results:
        assert url_keys(ok(result)) == []
    assert ok(results[0])["items"][0]["html_url"] == "https://github.com/modelcontextprotocol/python-sdk"
    pr = ok(results[4])["pull_request"]
    assert (pr["head"], pr["base"], pr["additions"], pr["changed_files"]) == (
        "hubot:sse-keepalive",
        "main",
        12,
        2,
    )
    me = ok(results[6])
    assert (me["login"], me["name"], me["followers"]) == ("octocat", "The Octocat", 9000)


async def test_get_file_contents_decodes_base64_text(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url, "get_file_contents", {"owner": OWNER, "repo": REPO, "path": "README.md", "ref": "v1"}
    )
    [sent] = fake.requests
    assert (sent.path, sent.params) == (f"/repos/{OWNER}/{REPO}/contents/README.md", {"ref": "v1"})
    out = ok(result)
    assert (out["type"], out["encoding"]) == ("file", "utf-8")
    assert out["content"] == FILES["README.md"].decode("utf-8")
    assert out["size"] == len(FILES["README.md"])


async def test_get_file_contents_keeps_binary_files_as_base64(fake: GitHubFake, api_url: str) -> None:
    result = await call(api_url, "get_file_contents", {"owner": OWNER, "repo": REPO, "path": "src/logo.png"})
    out = ok(result)
    assert out["encoding"] == "base64"
    assert base64.b64decode(out["content"]) == FILES["src/logo.png"]


async def test_get_file_contents_of_a_directory_lists_its_entries(fake: GitHubFake, api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url) as c:
            root = ok(await c.call_tool("get_file_contents", {"owner": OWNER, "repo": REPO}))
            src = ok(await c.call_tool("get_file_contents", {"owner": OWNER, "repo": REPO, "path": "src/"}))
    assert [r.path for r in fake.requests] == [
        f"/repos/{OWNER}/{REPO}/contents",
        f"/repos/{OWNER}/{REPO}/contents/src",
    ]
    assert root["type"] == "dir"
    assert [(e["name"], e["type"]) for e in root["entries"]] == [("README.md", "file"), ("src", "dir")]
    assert [(e["path"], e["size"]) for e in src["entries"]] == [
        ("src/app.py", len(FILES["src/app.py"])), ("src/logo.png", len(FILES["src/logo.png"]))
    ]  # fmt: skip


async def test_list_issues_drops_pull_requests_and_maps_filters(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url,
        "list_issues",
        {"owner": OWNER, "repo": REPO, "state": "OPEN", "labels": ["bug", "p1"], "orderBy": "UPDATED_AT",
         "direction": "ASC", "perPage": 50},
    )  # fmt: skip
    [sent] = fake.requests
    assert sent.params == {
        "state": "open", "labels": "bug,p1", "sort": "updated", "direction": "asc",
        "page": "1", "per_page": "50",
    }  # fmt: skip
    out = ok(result)
    assert [i["number"] for i in out["items"]] == [12, 10]
    assert out["pull_requests_skipped"] == 1
    first = out["items"][0]
    assert (first["author"], first["labels"], first["assignees"], first["comments"]) == (
        "octocat", ["bug"], ["hubot"], 2
    )  # fmt: skip
    assert first["body_preview"].startswith("Steps:\n1. touch config.yaml")
    assert len(first["body_preview"]) == 301  # 300 characters and an ellipsis
    assert out["next_page"] is None


async def test_search_issues_adds_repo_and_is_issue_qualifiers(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url, "search_issues", {"query": "crash", "owner": OWNER, "repo": REPO, "perPage": 1}
    )
    [sent] = fake.requests
    assert sent.params["q"] == f"repo:{OWNER}/{REPO} is:issue crash"
    out = ok(result)
    assert (out["total_count"], out["next_page"], out["last_page"]) == (3, 2, 3)
    assert out["items"][0]["repository"] == f"{OWNER}/{REPO}"


async def test_issue_read_get_comments_pages_through_comments(fake: GitHubFake, api_url: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url) as c:
            args = {"method": "get_comments", "owner": OWNER, "repo": REPO, "issue_number": 12, "perPage": 1}
            first = ok(await c.call_tool("issue_read", args))
            second = ok(await c.call_tool("issue_read", {**args, "page": first["next_page"]}))
    assert [r.params["page"] for r in fake.requests] == ["1", "2"]
    assert [(x["author"], x["body"]) for x in first["comments"]] == [
        ("hubot", "I can reproduce this on 0.1.0.")
    ]
    assert [(x["author"], x["body"]) for x in second["comments"]] == [("octocat", "Fixed in #11.")]
    assert second["next_page"] is None


async def test_pull_request_read_get_diff_asks_for_the_diff_media_type(
    fake: GitHubFake, api_url: str
) -> None:
    result = await call(
        api_url, "pull_request_read", {"method": "get_diff", "owner": OWNER, "repo": REPO, "pullNumber": 11}
    )
    [sent] = fake.requests
    assert (sent.path, sent.headers["accept"]) == (
        f"/repos/{OWNER}/{REPO}/pulls/11",
        "application/vnd.github.diff",
    )
    assert ok(result)["diff"] == PR_DIFF
    assert ok(result)["diff_truncated"] is False


async def test_pull_request_read_get_files_lists_changes(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url, "pull_request_read", {"method": "get_files", "owner": OWNER, "repo": REPO, "pullNumber": 11}
    )
    files = ok(result)["files"]
    assert [(f["filename"], f["status"], f["changes"]) for f in files] == [
        ("mcphub/app.py", "modified", 12), ("docs/sse.md", "renamed", 3)
    ]  # fmt: skip
    assert files[1]["previous_filename"] == "docs/streaming.md"


async def test_list_commits_passes_filters_and_flattens_authors(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url, "list_commits", {"owner": OWNER, "repo": REPO, "sha": "main", "author": "monalisa"}
    )
    assert fake.requests[0].params == {"sha": "main", "author": "monalisa", "page": "1", "per_page": "30"}
    items = ok(result)["items"]
    assert [(c["sha"][:4], c["author_login"], c["author_name"]) for c in items] == [
        ("aaaa", "monalisa", "Mona Lisa"), ("bbbb", None, "Mona Lisa")
    ]  # fmt: skip
    assert items[0]["message"] == "Fix empty config crash\n\nCloses #12"


async def test_without_a_token_reads_are_unauthenticated_and_get_me_says_to_set_one(
    fake: GitHubFake, api_url: str
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(api_url, GITHUB_PERSONAL_ACCESS_TOKEN="") as c:
            repos = await c.call_tool("search_repositories", {"query": "mcp"})
            me = await c.call_tool("get_me", {})
    assert ok(repos)["total_count"] == 3
    assert all("authorization" not in r.headers for r in fake.requests)
    assert "requires authentication here (HTTP 401); set GITHUB_PERSONAL_ACCESS_TOKEN" in error_text(me)


async def test_github_token_is_the_fallback_secret(fake: GitHubFake, api_url: str) -> None:
    result = await call(api_url, "get_me", {}, GITHUB_PERSONAL_ACCESS_TOKEN="", GITHUB_TOKEN=TOKEN)
    assert ok(result)["login"] == "octocat"
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_the_packaged_default_config_passes_github_token_when_the_personal_token_is_unset(
    fake: GitHubFake, api_url: str, tmp_path: Path
) -> None:
    """End to end, as a user runs it: no ./mcphub.yaml, so the packaged default; only GITHUB_TOKEN set."""
    env = {k: v for k, v in os.environ.items() if not _ours(k) and k != "MCPHUB_API_KEY"}
    env.update(GITHUB_TOKEN=TOKEN, GITHUB_API_URL=api_url)
    done = subprocess.run([sys.executable, "-m", "mcphub", "call", "github", "get_me"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=CALL_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["login"] == "octocat"
    assert [r.headers.get("authorization") for r in fake.requests] == [f"Bearer {TOKEN}"]


async def test_bad_token_is_reported_without_echoing_it(fake: GitHubFake, api_url: str) -> None:
    wrong = "ghp_wrongWrongWrong"
    result = await call(api_url, "get_me", {}, GITHUB_PERSONAL_ACCESS_TOKEN=wrong)
    message = error_text(result)
    assert f"GET {api_url}/user: GitHub rejected the token (HTTP 401 Bad credentials)" in message
    assert wrong not in message


async def test_exhausted_rate_limit_says_when_it_resets(fake: GitHubFake, api_url: str) -> None:
    reset = int(time.time()) + 1800
    fake.respond_with = error(
        403,
        "API rate limit exceeded for user ID 583231.",
        headers={"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    result = await call(api_url, "search_repositories", {"query": "mcp"})
    message = error_text(result)
    assert (
        f"GET {api_url}/search/repositories: GitHub rate limit exceeded (HTTP 403: API rate limit" in message
    )
    assert f"the limit resets at {datetime.fromtimestamp(reset, UTC).isoformat()}" in message


async def test_secondary_rate_limit_says_to_retry_after_the_given_seconds(
    fake: GitHubFake, api_url: str
) -> None:
    fake.respond_with = error(429, "You have exceeded a secondary rate limit.", headers={"retry-after": "60"})
    result = await call(api_url, "list_issues", {"owner": OWNER, "repo": REPO})
    assert (
        "GitHub rate limit exceeded (HTTP 429: You have exceeded a secondary rate limit.); "
        "retry after 60 seconds"
    ) in error_text(result)


async def test_forbidden_without_rate_limit_points_at_permissions(fake: GitHubFake, api_url: str) -> None:
    fake.respond_with = error(403, "Resource not accessible by personal access token")
    result = await call(api_url, "list_issues", {"owner": OWNER, "repo": REPO})
    assert "forbidden (HTTP 403: Resource not accessible by personal access token)" in error_text(result)


async def test_unknown_issue_is_a_not_found_error_naming_the_url(fake: GitHubFake, api_url: str) -> None:
    result = await call(
        api_url, "issue_read", {"method": "get", "owner": OWNER, "repo": REPO, "issue_number": 999}
    )
    assert f"GET {api_url}/repos/{OWNER}/{REPO}/issues/999: not found (HTTP 404)" in error_text(result)


async def test_validation_failure_shows_githubs_message_and_errors(fake: GitHubFake, api_url: str) -> None:
    fake.respond_with = error(
        422,
        "Validation Failed",
        [
            {"resource": "Search", "field": "q", "code": "invalid"},
            {"message": "The listed users cannot be searched"},
        ],
    )
    result = await call(api_url, "search_issues", {"query": "author:ghost"})
    assert (
        "GitHub rejected the request (HTTP 422: Validation Failed): Search q invalid; "
        "The listed users cannot be searched"
    ) in error_text(result)


async def test_empty_search_returns_no_items_and_no_next_page(fake: GitHubFake, api_url: str) -> None:
    fake.repos = []
    out = ok(await call(api_url, "search_repositories", {"query": "zzzz-no-such-thing"}))
    assert (out["total_count"], out["items"], out["next_page"]) == (0, [], None)


async def test_slow_github_times_out_with_the_configured_timeout(fake: GitHubFake, api_url: str) -> None:
    fake.delay = 1.0  # well past the 0.3 s timeout; the fake's thread waits this out before it can stop
    result = await call(api_url, "get_me", {}, GITHUB_TIMEOUT="0.3")
    assert f"GET {api_url}/user failed: timed out after 0.3s" in error_text(result)


async def test_a_body_that_is_not_json_is_reported_with_the_url(fake: GitHubFake, api_url: str) -> None:
    fake.respond_with = Response("<html>Unicorn!</html>", media_type="text/html")
    result = await call(api_url, "search_repositories", {"query": "mcp"})
    message = error_text(result)
    assert f"GET {api_url}/search/repositories answered HTTP 200 with a body that is not JSON" in message
    assert "Unicorn" in message


async def test_json_of_the_wrong_shape_is_reported_with_the_url(fake: GitHubFake, api_url: str) -> None:
    fake.respond_with = Response('{"items": "nope"}', media_type="application/json")
    result = await call(api_url, "search_repositories", {"query": "mcp"})
    assert f"GET {api_url}/search/repositories answered JSON of an unexpected shape" in error_text(result)


async def test_starts_offline_and_names_the_unreachable_url() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with anyio.fail_after(CALL_TIMEOUT):
        async with github_server(dead) as c:
            assert {t.name for t in (await c.list_tools()).tools} == READ_TOOLS
            result = await c.call_tool("get_me", {})
    assert f"GET {dead}/user failed: cannot reach upstream" in error_text(result)


async def test_file_paths_cannot_climb_out_of_the_repository(fake: GitHubFake, api_url: str) -> None:
    result = await call(api_url, "get_file_contents", {"owner": OWNER, "repo": REPO, "path": "../../../user"})
    assert "path '../../../user' may not contain '..'" in error_text(result)
    assert fake.requests == []
