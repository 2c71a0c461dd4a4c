"""A fake GitHub REST API: the endpoints the github server uses, answering GitHub's JSON shapes (with all
their `*_url` fields), Link-header pagination and GitHub's error bodies.

It records every request (method, path, query, headers, JSON body) and can be told to misbehave.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API = "https://api.github.com"
TOKEN = "ghp_fakeTokenForTests0123456789abcdefABCD"
OWNER, REPO = "octo-org", "hello-world"


def user_json(login: str, user_id: int) -> dict[str, Any]:
    u = f"{API}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": f"MDQ6VXNlcj{user_id}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": u,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}",
        "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs",
        "repos_url": f"{u}/repos",
        "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events",
        "type": "User",
        "site_admin": False,
    }


def repo_json(full_name: str, repo_id: int, stars: int, **extra: Any) -> dict[str, Any]:
    owner, name = full_name.split("/")
    u = f"{API}/repos/{full_name}"
    return {
        "id": repo_id,
        "node_id": f"R_kgDO{repo_id}",
        "name": name,
        "full_name": full_name,
        "private": False,
        "owner": user_json(owner, repo_id + 1),
        "html_url": f"https://github.com/{full_name}",
        "description": extra.get("description"),
        "fork": False,
        "url": u,
        "forks_url": f"{u}/forks",
        "keys_url": f"{u}/keys{{/key_id}}",
        "issues_url": f"{u}/issues{{/number}}",
        "pulls_url": f"{u}/pulls{{/number}}",
        "contents_url": f"{u}/contents/{{+path}}",
        "commits_url": f"{u}/commits{{/sha}}",
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"https://github.com/{full_name}.git",
        "created_at": "2024-11-25T10:00:00Z",
        "updated_at": "2026-07-30T12:00:00Z",
        "pushed_at": "2026-07-29T08:30:00Z",
        "homepage": None,
        "size": 4242,
        "stargazers_count": stars,
        "watchers_count": stars,
        "language": extra.get("language", "Python"),
        "forks_count": stars // 10,
        "open_issues_count": 7,
        "license": {"key": "mit", "name": "MIT License", "spdx_id": "MIT", "url": f"{API}/licenses/mit"},
        "topics": extra.get("topics", []),
        "archived": False,
        "default_branch": "main",
        "score": 1.0,
    }


REPOS = [
    repo_json(
        "modelcontextprotocol/python-sdk",
        862584018,
        19000,
        description="The official Python SDK",
        topics=["mcp", "python"],
    ),
    repo_json(
        "modelcontextprotocol/servers",
        890668799,
        70000,
        description="Model Context Protocol Servers",
        language="TypeScript",
    ),
    repo_json(
        "github/github-mcp-server",
        942771284,
        23000,
        description="GitHub's official MCP Server",
        language="Go",
    ),
]

FILES: dict[str, bytes] = {
    "README.md": "# hello-world\n\nGrüße from the fake — ünïcode survives base64.\n".encode(),
    "src/app.py": b"def main() -> None:\n    print('hello')\n",
    "src/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
}


def issue_json(number: int, title: str, *, pull: bool = False, body: str | None = None, **extra: Any) -> dict:
    u = f"{API}/repos/{OWNER}/{REPO}/issues/{number}"
    item: dict[str, Any] = {
        "url": u,
        "repository_url": f"{API}/repos/{OWNER}/{REPO}",
        "labels_url": f"{u}/labels{{/name}}",
        "comments_url": f"{u}/comments",
        "events_url": f"{u}/events",
        "html_url": f"https://github.com/{OWNER}/{REPO}/{'pull' if pull else 'issues'}/{number}",
        "id": 2000000000 + number,
        "node_id": f"I_kwDO{number}",
        "number": number,
        "title": title,
        "user": user_json("octocat", 583231),
        "labels": [
            {
                "id": 1,
                "node_id": "LA_1",
                "url": f"{API}/repos/{OWNER}/{REPO}/labels/bug",
                "name": name,
                "color": "d73a4a",
                "default": True,
                "description": None,
            }
            for name in extra.get("labels", [])
        ],
        "state": extra.get("state", "open"),
        "locked": False,
        "assignee": None,
        "assignees": [user_json(a, 1000 + i) for i, a in enumerate(extra.get("assignees", []))],
        "milestone": None,
        "comments": extra.get("comments", 0),
        "created_at": "2026-07-01T09:00:00Z",
        "updated_at": "2026-07-02T09:00:00Z",
        "closed_at": None,
        "author_association": "MEMBER",
        "state_reason": None,
        "body": body,
        "reactions": {"url": f"{u}/reactions", "total_count": 0, "+1": 0},
        "timeline_url": f"{u}/timeline",
    }
    if pull:
        p = f"{API}/repos/{OWNER}/{REPO}/pulls/{number}"
        item["pull_request"] = {
            "url": p,
            "html_url": item["html_url"],
            "diff_url": f"{item['html_url']}.diff",
            "patch_url": f"{item['html_url']}.patch",
            "merged_at": None,
        }
    return item


ISSUES = [
    issue_json(
        12,
        "Crash when the config file is empty",
        labels=["bug"],
        assignees=["hubot"],
        comments=2,
        body="Steps:\n1. touch config.yaml\n2. mcphub serve config.yaml\n" + "x" * 400,
    ),
    issue_json(11, "Add SSE keep-alive", pull=True, body="Closes #9"),
    issue_json(10, "Document the arxiv server", labels=["docs"], body=None),
]

COMMENTS = [
    {
        "url": f"{API}/repos/{OWNER}/{REPO}/issues/comments/{cid}",
        "html_url": f"https://github.com/{OWNER}/{REPO}/issues/12#issuecomment-{cid}",
        "issue_url": f"{API}/repos/{OWNER}/{REPO}/issues/12",
        "id": cid,
        "node_id": f"IC_{cid}",
        "user": user_json(login, cid),
        "created_at": f"2026-07-0{i + 2}T10:00:00Z",
        "updated_at": f"2026-07-0{i + 2}T10:00:00Z",
        "author_association": assoc,
        "body": text,
    }
    for i, (cid, login, assoc, text) in enumerate(
        [
            (3001, "hubot", "CONTRIBUTOR", "I can reproduce this on 0.1.0."),
            (3002, "octocat", "MEMBER", "Fixed in #11."),
        ]
    )
]


def pull_json(number: int) -> dict[str, Any]:
    u = f"{API}/repos/{OWNER}/{REPO}/pulls/{number}"
    branch = {
        "label": "hubot:sse-keepalive",
        "ref": "sse-keepalive",
        "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "user": user_json("hubot", 1000),
        "repo": REPOS[0],
    }
    return {
        "url": u,
        "id": 1800000000 + number,
        "node_id": f"PR_{number}",
        "html_url": f"https://github.com/{OWNER}/{REPO}/pull/{number}",
        "diff_url": f"https://github.com/{OWNER}/{REPO}/pull/{number}.diff",
        "patch_url": f"https://github.com/{OWNER}/{REPO}/pull/{number}.patch",
        "issue_url": f"{API}/repos/{OWNER}/{REPO}/issues/{number}",
        "commits_url": f"{u}/commits",
        "review_comments_url": f"{u}/comments",
        "statuses_url": f"{API}/repos/{OWNER}/{REPO}/statuses/{branch['sha']}",
        "number": number,
        "state": "open",
        "locked": False,
        "title": "Add SSE keep-alive",
        "user": user_json("hubot", 1000),
        "body": "Closes #9",
        "labels": [],
        "milestone": None,
        "created_at": "2026-07-03T09:00:00Z",
        "updated_at": "2026-07-04T09:00:00Z",
        "closed_at": None,
        "merged_at": None,
        "merge_commit_sha": None,
        "draft": False,
        "head": branch,
        "base": {**branch, "label": f"{OWNER}:main", "ref": "main"},
        "_links": {"self": {"href": u}, "html": {"href": f"https://github.com/{OWNER}/{REPO}/pull/{number}"}},
        "author_association": "CONTRIBUTOR",
        "merged": False,
        "mergeable": True,
        "comments": 1,
        "review_comments": 0,
        "commits": 2,
        "additions": 12,
        "deletions": 3,
        "changed_files": 2,
    }


PR_FILES = [
    {
        "sha": "bbcd538c8e72b8c175046e27cc8f907076331401",
        "filename": "mcphub/app.py",
        "status": "modified",
        "additions": 10,
        "deletions": 2,
        "changes": 12,
        "blob_url": f"https://github.com/{OWNER}/{REPO}/blob/6dcb09b/mcphub/app.py",
        "raw_url": f"https://github.com/{OWNER}/{REPO}/raw/6dcb09b/mcphub/app.py",
        "contents_url": f"{API}/repos/{OWNER}/{REPO}/contents/mcphub/app.py?ref=6dcb09b",
        "patch": "@@ -1,2 +1,10 @@\n+KEEPALIVE = 15",
    },
    {
        "sha": "aacd538c8e72b8c175046e27cc8f907076331402",
        "filename": "docs/sse.md",
        "status": "renamed",
        "previous_filename": "docs/streaming.md",
        "additions": 2,
        "deletions": 1,
        "changes": 3,
        "blob_url": "",
        "raw_url": "",
        "contents_url": "",
        "patch": "@@ -1 +1,2 @@\n-old\n+new\n+more",
    },
]
PR_DIFF = (
    "diff --git a/mcphub/app.py b/mcphub/app.py\nindex 1111111..2222222 100644\n--- a/mcphub/app.py\n"
    "+++ b/mcphub/app.py\n@@ -1,2 +1,10 @@\n+KEEPALIVE = 15\n"
)


def commit_json(sha: str, message: str, login: str | None) -> dict[str, Any]:
    return {
        "sha": sha,
        "node_id": f"C_{sha[:8]}",
        "commit": {
            "author": {"name": "Mona Lisa", "email": "mona@example.com", "date": "2026-07-20T10:00:00Z"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "date": "2026-07-20T10:00:00Z"},
            "message": message,
            "tree": {"sha": "f" * 40, "url": f"{API}/tree"},
            "url": f"{API}/repos/{OWNER}/{REPO}/git/commits/{sha}",
            "comment_count": 0,
        },
        "url": f"{API}/repos/{OWNER}/{REPO}/commits/{sha}",
        "html_url": f"https://github.com/{OWNER}/{REPO}/commit/{sha}",
        "comments_url": f"{API}/repos/{OWNER}/{REPO}/commits/{sha}/comments",
        "author": user_json(login, 7) if login else None,
        "committer": user_json("web-flow", 19864447),
        "parents": [],
    }


COMMITS = [
    commit_json("a" * 40, "Fix empty config crash\n\nCloses #12", "monalisa"),
    commit_json("b" * 40, "Initial commit", None),
]


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class GitHubFake:
    token: str = TOKEN
    delay: float = 0.0
    respond_with: Response | None = None  # answer every request with this
    issues: list[dict[str, Any]] = field(default_factory=lambda: list(ISSUES))
    repos: list[dict[str, Any]] = field(default_factory=lambda: list(REPOS))
    requests: list[Recorded] = field(default_factory=list)

    def reset(self) -> None:
        self.delay, self.respond_with = 0.0, None
        self.issues, self.repos = list(ISSUES), list(REPOS)
        self.requests.clear()

    def app(self) -> Starlette:
        r = "/repos/{owner}/{repo}"
        routes = [
            Route("/user", self.me),
            Route("/search/repositories", self.search_repositories),
            Route("/search/code", self.search_code),
            Route("/search/issues", self.search_issues),
            Route(f"{r}/contents", self.contents),
            Route(f"{r}/contents/{{path:path}}", self.contents),
            Route(f"{r}/commits", self.commits),
            Route(f"{r}/issues", self.list_or_create_issue, methods=["GET", "POST"]),
            Route(f"{r}/issues/{{number:int}}", self.issue, methods=["GET", "PATCH"]),
            Route(f"{r}/issues/{{number:int}}/comments", self.comments, methods=["GET", "POST"]),
            Route(f"{r}/pulls", self.pulls),
            Route(f"{r}/pulls/{{number:int}}", self.pull),
            Route(f"{r}/pulls/{{number:int}}/files", self.pull_files),
        ]
        return Starlette(routes=routes, middleware=[])

    async def _gate(self, request: Request, *, needs_auth: bool = False) -> Response | None:
        raw = await request.body()
        self.requests.append(
            Recorded(
                request.method,
                request.url.path,
                dict(request.query_params),
                dict(request.headers),
                json.loads(raw) if raw else None,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.respond_with is not None:
            return self.respond_with
        auth = request.headers.get("authorization")
        if auth is not None and auth != f"Bearer {self.token}":
            return error(401, "Bad credentials")
        if auth is None and needs_auth:
            return error(401, "Requires authentication")
        return None

    def _page(self, request: Request, items: list[Any], wrap: Any = None) -> Response:
        page = int(request.query_params.get("page", "1"))
        per_page = int(request.query_params.get("per_page", "30"))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        base = str(request.url.remove_query_params("page"))
        sep = "&" if "?" in base else "?"
        if page < last:
            links.append(f'<{base}{sep}page={page + 1}>; rel="next"')
            links.append(f'<{base}{sep}page={last}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        body = wrap(chunk) if wrap else chunk
        return JSONResponse(body, headers=headers)

    async def me(self, request: Request) -> Response:
        return await self._gate(request, needs_auth=True) or JSONResponse(
            {
                **user_json("octocat", 583231),
                "name": "The Octocat",
                "company": "@github",
                "blog": "https://github.blog",
                "location": "San Francisco",
                "email": None,
                "bio": None,
                "public_repos": 8,
                "followers": 9000,
                "following": 9,
                "created_at": "2011-01-25T18:44:36Z",
            }
        )

    async def search_repositories(self, request: Request) -> Response:
        return await self._gate(request) or self._page(
            request,
            self.repos,
            lambda chunk: {"total_count": len(self.repos), "incomplete_results": False, "items": chunk},
        )

    async def search_code(self, request: Request) -> Response:
        hit = {
            "name": "app.py",
            "path": "src/app.py",
            "sha": "c" * 40,
            "url": f"{API}/x",
            "git_url": f"{API}/y",
            "html_url": f"https://github.com/{OWNER}/{REPO}/blob/main/src/app.py",
            "repository": REPOS[0],
            "score": 1.0,
        }
        return await self._gate(request, needs_auth=True) or self._page(
            request, [hit], lambda chunk: {"total_count": 1, "incomplete_results": False, "items": chunk}
        )

    async def search_issues(self, request: Request) -> Response:
        return await self._gate(request) or self._page(
            request,
            self.issues,
            lambda chunk: {"total_count": len(self.issues), "incomplete_results": False, "items": chunk},
        )

    async def contents(self, request: Request) -> Response:
        if denied := await self._gate(request):
            return denied
        path = request.path_params.get("path", "").strip("/")
        if path in FILES:
            data = FILES[path]
            encoded = base64.b64encode(data).decode()
            content = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"
            return JSONResponse({**_entry(path, "file", len(data)), "content": content, "encoding": "base64"})
        prefix = f"{path}/" if path else ""
        children = sorted({p[len(prefix) :].split("/")[0] for p in FILES if p.startswith(prefix)})
        if not children:
            return error(404, "Not Found")
        entries = [
            _entry(prefix + c, "file" if prefix + c in FILES else "dir", len(FILES.get(prefix + c, b"")))
            for c in children
        ]
        return JSONResponse(entries)

    async def commits(self, request: Request) -> Response:
        return await self._gate(request) or self._page(request, COMMITS)

    async def list_or_create_issue(self, request: Request) -> Response:
        if denied := await self._gate(request):
            return denied
        if request.method == "POST":
            body = self.requests[-1].body
            if not body.get("title"):
                return error(
                    422,
                    "Validation Failed",
                    [{"resource": "Issue", "field": "title", "code": "missing_field"}],
                )
            return JSONResponse(
                issue_json(13, body["title"], body=body.get("body"), labels=body.get("labels", [])),
                status_code=201,
            )
        return self._page(request, self.issues)

    async def issue(self, request: Request) -> Response:
        if denied := await self._gate(request):
            return denied
        number = request.path_params["number"]
        found = next((i for i in self.issues if i["number"] == number), None)
        if found is None:
            return error(404, "Not Found")
        if request.method == "PATCH":
            return JSONResponse({**found, **self.requests[-1].body})
        return JSONResponse(found)

    async def comments(self, request: Request) -> Response:
        if denied := await self._gate(request):
            return denied
        if request.method == "POST":
            return JSONResponse(
                {**COMMENTS[0], "id": 3003, "body": self.requests[-1].body["body"]}, status_code=201
            )
        return self._page(request, COMMENTS)

    async def pulls(self, request: Request) -> Response:
        return await self._gate(request) or self._page(request, [pull_json(11)])

    async def pull(self, request: Request) -> Response:
        if denied := await self._gate(request):
            return denied
        if request.headers.get("accept") == "application/vnd.github.diff":
            return Response(PR_DIFF, media_type="text/plain; charset=utf-8")
        return JSONResponse(pull_json(request.path_params["number"]))

    async def pull_files(self, request: Request) -> Response:
        return await self._gate(request) or self._page(request, PR_FILES)


def _entry(path: str, kind: str, size: int) -> dict[str, Any]:
    u = f"{API}/repos/{OWNER}/{REPO}/contents/{path}?ref=main"
    return {
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": hashlib.sha1(path.encode()).hexdigest(),
        "size": size,
        "url": u,
        "html_url": f"https://github.com/{OWNER}/{REPO}/blob/main/{path}",
        "git_url": f"{API}/repos/{OWNER}/{REPO}/git/blobs/x",
        "download_url": f"https://raw.githubusercontent.com/{OWNER}/{REPO}/main/{path}"
        if kind == "file"
        else None,
        "type": kind,
        "_links": {"self": u},
    }


def error(
    status: int, message: str, errors: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": str(status),
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)
