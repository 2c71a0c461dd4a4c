"""The github MCP server: a read-first subset of github/github-mcp-server's tools over GitHub REST.

Env: GITHUB_API_URL, GITHUB_PERSONAL_ACCESS_TOKEN (fallback GITHUB_TOKEN; unset → unauthenticated reads),
GITHUB_TIMEOUT, GITHUB_READ_ONLY (default 1; 0 registers issue_write and add_issue_comment).
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from mcphub_servers import _cli
from mcphub_servers.github import models as m
from mcphub_servers.github.client import GitHubAPI, Page, Settings, repo_path
from mcphub_servers.github.writes import register_write_tools

MAX_DIFF_CHARS = 100_000  # a diff beyond this would flood a model's context; the rest is cut

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)
T = TypeVar("T")

Owner = Annotated[str, Field(description="Repository owner (user or organization)")]
Repo = Annotated[str, Field(description="Repository name")]
PageArg = Annotated[int, Field(ge=1, description="Page number, from 1")]
PerPage = Annotated[int, Field(ge=1, le=100, description="Results per page (1-100)")]
Order = Annotated[Literal["asc", "desc"] | None, Field(description="Sort order")]


def _version() -> str:
    try:
        return importlib.metadata.version("mcphub")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def shaped(where: str, build: Callable[[], T]) -> T:
    """Build a compact model from GitHub JSON; JSON of the wrong shape becomes a ToolError naming the URL."""
    try:
        return build()
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # pydantic errors are ValueErrors
        raise ToolError(
            f"{where} answered JSON of an unexpected shape ({type(exc).__name__}: {exc})"
        ) from None


def _paged(page: int, info: Page) -> dict[str, Any]:
    return {"page": page, "next_page": info.next_page, "last_page": info.last_page}


def _file(raw: dict[str, Any]) -> m.FileContents:
    kind = raw["type"]
    out = m.FileContents(type=kind, path=raw["path"], sha=raw.get("sha"), size=raw.get("size"))
    out.html_url = raw.get("html_url")
    if kind == "symlink":
        out.note = f"symlink to {raw.get('target')}"
    elif kind == "submodule":
        out.note = f"submodule of {raw.get('submodule_git_url')}"
    elif raw.get("encoding") == "base64":
        try:
            data = base64.b64decode(raw.get("content") or "")
        except (binascii.Error, ValueError):
            raise ValueError("content is not valid base64") from None
        try:
            out.content, out.encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            out.content, out.encoding = base64.b64encode(data).decode("ascii"), "base64"
            out.note = "binary file; content is base64"
    else:
        out.note = (
            f"file too large for the contents API ({raw.get('size')} bytes); see {raw.get('download_url')}"
        )
    return out


def create_server(settings: Settings | None = None) -> MCPServer:
    version = _version()
    settings = settings or Settings.from_env()
    api = GitHubAPI(settings, user_agent=f"mcphub-github/{version}")
    root = settings.api_url
    mcp = MCPServer(
        "github",
        version=version,
        instructions="Read GitHub repositories, files, commits, issues and pull requests"
        + ("." if settings.read_only else ", and create or update issues and comments."),
        subscriptions=False,
        lifespan=api.connection.lifespan,
    )

    @mcp.tool(title="Get my GitHub user", annotations=READ_ONLY)
    async def get_me() -> m.User:
        """The GitHub user the token belongs to (needs GITHUB_PERSONAL_ACCESS_TOKEN)."""
        raw, _ = await api.get_json("/user")
        return shaped(f"GET {root}/user", lambda: m.user(raw))

    @mcp.tool(title="Search repositories", annotations=READ_ONLY)
    async def search_repositories(
        query: Annotated[
            str, Field(description="GitHub search syntax, e.g. 'mcp language:python stars:>100'")
        ],
        sort: Literal["stars", "forks", "help-wanted-issues", "updated"] | None = None,
        order: Order = None,
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.RepositorySearch:
        """Search GitHub repositories."""
        params = {"q": query, "sort": sort, "order": order, "page": page, "per_page": perPage}
        raw, info = await api.get_json("/search/repositories", params)
        return shaped(
            f"GET {root}/search/repositories",
            lambda: m.RepositorySearch(
                total_count=raw["total_count"],
                incomplete_results=raw.get("incomplete_results", False),
                items=[m.repository(r) for r in raw["items"]],
                **_paged(page, info),
            ),
        )

    @mcp.tool(title="Get file or directory contents", annotations=READ_ONLY)
    async def get_file_contents(
        owner: Owner,
        repo: Repo,
        path: Annotated[str, Field(description="Path in the repository; '/' for the root directory")] = "/",
        ref: Annotated[str | None, Field(description="Branch, tag or 'refs/pull/N/head'")] = None,
        sha: Annotated[str | None, Field(description="Commit SHA; overrides ref")] = None,
    ) -> m.FileContents:
        """A file's text (decoded) or a directory's entries."""
        if ".." in path.split("/"):
            raise ToolError(f"path {path!r} may not contain '..'")
        rel = quote(path.strip("/"), safe="/")
        where = f"{repo_path(owner, repo)}/contents" + (f"/{rel}" if rel else "")
        raw, _ = await api.get_json(where, {"ref": sha or ref})
        if isinstance(raw, list):
            return shaped(
                f"GET {root}{where}",
                lambda: m.FileContents(
                    type="dir", path=path.strip("/"), entries=[m.Entry.model_validate(e) for e in raw]
                ),
            )
        return shaped(f"GET {root}{where}", lambda: _file(raw))

    @mcp.tool(title="List commits", annotations=READ_ONLY)
    async def list_commits(
        owner: Owner,
        repo: Repo,
        sha: Annotated[str | None, Field(description="Branch name or commit SHA to start from")] = None,
        author: Annotated[str | None, Field(description="GitHub login or email")] = None,
        path: Annotated[str | None, Field(description="Only commits touching this path")] = None,
        since: Annotated[str | None, Field(description="ISO 8601 timestamp")] = None,
        until: Annotated[str | None, Field(description="ISO 8601 timestamp")] = None,
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.CommitList:
        """Commits of a branch, newest first."""
        where = f"{repo_path(owner, repo)}/commits"
        params = {"sha": sha, "author": author, "path": path, "since": since, "until": until}
        raw, info = await api.get_json(where, {**params, "page": page, "per_page": perPage})
        return shaped(
            f"GET {root}{where}", lambda: m.CommitList(items=[m.commit(c) for c in raw], **_paged(page, info))
        )

    @mcp.tool(title="Search code", annotations=READ_ONLY)
    async def search_code(
        query: Annotated[
            str, Field(description="GitHub code search syntax, e.g. 'MCPServer repo:owner/name'")
        ],
        sort: Literal["indexed"] | None = None,
        order: Order = None,
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.CodeSearch:
        """Search code across GitHub (needs a token)."""
        params = {"q": query, "sort": sort, "order": order, "page": page, "per_page": perPage}
        raw, info = await api.get_json("/search/code", params)
        return shaped(
            f"GET {root}/search/code",
            lambda: m.CodeSearch(
                total_count=raw["total_count"],
                incomplete_results=raw.get("incomplete_results", False),
                items=[m.code_hit(h) for h in raw["items"]],
                **_paged(page, info),
            ),
        )

    @mcp.tool(title="List issues", annotations=READ_ONLY)
    async def list_issues(
        owner: Owner,
        repo: Repo,
        state: Literal["open", "closed", "all", "OPEN", "CLOSED", "ALL"] = "open",
        labels: Annotated[list[str] | None, Field(description="Only issues with all these labels")] = None,
        since: Annotated[str | None, Field(description="Updated at or after (ISO 8601)")] = None,
        orderBy: Literal[
            "created", "updated", "comments", "CREATED_AT", "UPDATED_AT", "COMMENTS"
        ] = "created",
        direction: Literal["asc", "desc", "ASC", "DESC"] = "desc",
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.IssueList:
        """Issues of a repository (pull requests are left out)."""
        where = f"{repo_path(owner, repo)}/issues"
        params = {
            "state": state.lower(),
            "labels": ",".join(labels) if labels else None,
            "since": since,
            "sort": orderBy.lower().removesuffix("_at"),
            "direction": direction.lower(),
            "page": page,
            "per_page": perPage,
        }
        raw, info = await api.get_json(where, params)
        return shaped(
            f"GET {root}{where}",
            lambda: m.IssueList(
                items=[m.issue_summary(i) for i in raw if "pull_request" not in i],
                pull_requests_skipped=sum(1 for i in raw if "pull_request" in i),
                **_paged(page, info),
            ),
        )

    @mcp.tool(title="Search issues", annotations=READ_ONLY)
    async def search_issues(
        query: Annotated[
            str, Field(description="GitHub issue search syntax, e.g. 'label:bug is:open crash'")
        ],
        owner: Annotated[str | None, Field(description="Limit to this owner's repositories")] = None,
        repo: Annotated[str | None, Field(description="Limit to owner/repo (needs owner)")] = None,
        sort: Literal["comments", "reactions", "created", "updated", "interactions"] | None = None,
        order: Order = None,
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.IssueSearch:
        """Search issues across GitHub (adds is:issue unless the query says is:pr)."""
        q = query
        if not any(word in q for word in ("is:issue", "is:pr", "type:issue", "type:pr")):
            q = f"is:issue {q}"
        if owner and repo and "repo:" not in q:
            q = f"repo:{owner}/{repo} {q}"
        elif owner and "user:" not in q and "org:" not in q:
            q = f"user:{owner} {q}"
        params = {"q": q, "sort": sort, "order": order, "page": page, "per_page": perPage}
        raw, info = await api.get_json("/search/issues", params)
        return shaped(
            f"GET {root}/search/issues",
            lambda: m.IssueSearch(
                total_count=raw["total_count"],
                incomplete_results=raw.get("incomplete_results", False),
                items=[m.issue_summary(i) for i in raw["items"]],
                **_paged(page, info),
            ),
        )

    @mcp.tool(title="Read an issue", annotations=READ_ONLY)
    async def issue_read(
        method: Annotated[Literal["get", "get_comments"], Field(description="get: the issue; get_comments")],
        owner: Owner,
        repo: Repo,
        issue_number: Annotated[int, Field(ge=1)],
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.IssueRead:
        """An issue with its full body, or its comments."""
        where = f"{repo_path(owner, repo)}/issues/{issue_number}"
        if method == "get":
            raw, _ = await api.get_json(where)
            return shaped(f"GET {root}{where}", lambda: m.IssueRead(issue=m.issue(raw), **_paged(1, Page())))
        raw, info = await api.get_json(f"{where}/comments", {"page": page, "per_page": perPage})
        return shaped(
            f"GET {root}{where}/comments",
            lambda: m.IssueRead(comments=[m.comment(c) for c in raw], **_paged(page, info)),
        )

    @mcp.tool(title="List pull requests", annotations=READ_ONLY)
    async def list_pull_requests(
        owner: Owner,
        repo: Repo,
        state: Literal["open", "closed", "all"] = "open",
        head: Annotated[str | None, Field(description="Filter by head, 'user:branch'")] = None,
        base: Annotated[str | None, Field(description="Filter by base branch")] = None,
        sort: Literal["created", "updated", "popularity", "long-running"] = "created",
        direction: Literal["asc", "desc"] = "desc",
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.PullRequestList:
        """Pull requests of a repository."""
        where = f"{repo_path(owner, repo)}/pulls"
        params = {"state": state, "head": head, "base": base, "sort": sort, "direction": direction}
        raw, info = await api.get_json(where, {**params, "page": page, "per_page": perPage})
        return shaped(
            f"GET {root}{where}",
            lambda: m.PullRequestList(items=[m.pull_request_summary(p) for p in raw], **_paged(page, info)),
        )

    @mcp.tool(title="Read a pull request", annotations=READ_ONLY)
    async def pull_request_read(
        method: Annotated[
            Literal["get", "get_files", "get_diff"],
            Field(description="get: the pull request; get_files: changed files; get_diff: unified diff"),
        ],
        owner: Owner,
        repo: Repo,
        pullNumber: Annotated[int, Field(ge=1)],
        page: PageArg = 1,
        perPage: PerPage = 30,
    ) -> m.PullRequestRead:
        """A pull request, its changed files, or its diff."""
        where = f"{repo_path(owner, repo)}/pulls/{pullNumber}"
        if method == "get_diff":
            diff = (await api.call("GET", where, accept="application/vnd.github.diff")).text
            return m.PullRequestRead(
                diff=diff[:MAX_DIFF_CHARS], diff_truncated=len(diff) > MAX_DIFF_CHARS, **_paged(1, Page())
            )
        if method == "get":
            raw, _ = await api.get_json(where)
            return shaped(
                f"GET {root}{where}",
                lambda: m.PullRequestRead(pull_request=m.pull_request(raw), **_paged(1, Page())),
            )
        raw, info = await api.get_json(f"{where}/files", {"page": page, "per_page": perPage})
        return shaped(
            f"GET {root}{where}/files",
            lambda: m.PullRequestRead(files=[m.pull_request_file(f) for f in raw], **_paged(page, info)),
        )

    if not settings.read_only:
        register_write_tools(mcp, api)
    return mcp


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("github", "GitHub MCP server")
    args = parser.parse_args(argv)
    _cli.run(create_server(), args)
