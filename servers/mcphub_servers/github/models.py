"""Compact output models for GitHub REST objects, and the functions that build them.

GitHub's JSON carries dozens of `*_url` fields per object; the models keep what a model needs to
answer questions and act (numbers, names, states, dates, one `html_url`), so results stay small.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

BODY_PREVIEW_CHARS = 300  # list results show the start of each body; issue_read/pull_request_read give all


class Paged(BaseModel):
    page: int
    next_page: int | None = Field(description="Pass as `page` for more results; null on the last page")
    last_page: int | None = None


class User(BaseModel):
    login: str
    id: int
    name: str | None = None
    type: str | None = None
    company: str | None = None
    blog: str | None = None
    location: str | None = None
    email: str | None = None
    bio: str | None = None
    public_repos: int | None = None
    followers: int | None = None
    following: int | None = None
    created_at: str | None = None
    html_url: str | None = None


class Repository(BaseModel):
    full_name: str
    description: str | None = None
    private: bool = False
    archived: bool = False
    fork: bool = False
    language: str | None = None
    topics: list[str] = []
    stargazers_count: int = 0
    forks_count: int = 0
    open_issues_count: int = 0
    default_branch: str | None = None
    license: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    pushed_at: str | None = None
    html_url: str


class RepositorySearch(Paged):
    total_count: int
    incomplete_results: bool
    items: list[Repository]


class Entry(BaseModel):
    name: str
    path: str
    type: str = Field(description="file, dir, symlink or submodule")
    size: int = 0
    sha: str


class FileContents(BaseModel):
    type: str = Field(description="file, dir, symlink or submodule")
    path: str
    sha: str | None = None
    size: int | None = None
    encoding: str | None = Field(None, description="utf-8 for text, base64 for binary content")
    content: str | None = None
    entries: list[Entry] | None = Field(None, description="A directory's entries")
    note: str | None = None
    html_url: str | None = None


class Commit(BaseModel):
    sha: str
    message: str
    author_name: str | None = None
    author_login: str | None = None
    date: str | None = None
    html_url: str | None = None


class CommitList(Paged):
    items: list[Commit]


class CodeHit(BaseModel):
    repository: str
    path: str
    name: str
    sha: str
    html_url: str


class CodeSearch(Paged):
    total_count: int
    incomplete_results: bool
    items: list[CodeHit]


class IssueSummary(BaseModel):
    number: int
    title: str
    state: str
    repository: str | None = None
    author: str | None = None
    labels: list[str] = []
    assignees: list[str] = []
    comments: int = 0
    is_pull_request: bool = False
    created_at: str | None = None
    updated_at: str | None = None
    closed_at: str | None = None
    body_preview: str | None = None
    html_url: str


class Issue(IssueSummary):
    state_reason: str | None = None
    milestone: str | None = None
    locked: bool = False
    body: str | None = None


class IssueList(Paged):
    items: list[IssueSummary]
    pull_requests_skipped: int = Field(description="Items on this page that were pull requests, not issues")


class IssueSearch(Paged):
    total_count: int
    incomplete_results: bool
    items: list[IssueSummary]


class Comment(BaseModel):
    id: int
    author: str | None = None
    author_association: str | None = None
    body: str
    created_at: str | None = None
    updated_at: str | None = None
    html_url: str | None = None


class IssueRead(Paged):
    issue: Issue | None = None
    comments: list[Comment] | None = None


class PullRequestSummary(BaseModel):
    number: int
    title: str
    state: str
    draft: bool = False
    author: str | None = None
    head: str | None = Field(None, description="Source branch (owner:branch)")
    base: str | None = Field(None, description="Target branch")
    labels: list[str] = []
    created_at: str | None = None
    updated_at: str | None = None
    merged_at: str | None = None
    html_url: str


class PullRequest(PullRequestSummary):
    head_sha: str | None = None
    merged: bool | None = None
    mergeable: bool | None = None
    closed_at: str | None = None
    comments: int | None = None
    review_comments: int | None = None
    commits: int | None = None
    additions: int | None = None
    deletions: int | None = None
    changed_files: int | None = None
    body: str | None = None


class PullRequestList(Paged):
    items: list[PullRequestSummary]


class PullRequestFile(BaseModel):
    filename: str
    status: str
    additions: int = 0
    deletions: int = 0
    changes: int = 0
    previous_filename: str | None = None
    patch: str | None = None


class PullRequestRead(Paged):
    pull_request: PullRequest | None = None
    files: list[PullRequestFile] | None = None
    diff: str | None = None
    diff_truncated: bool = False


def _login(obj: Any) -> str | None:
    return obj.get("login") if isinstance(obj, dict) else None


def _labels(raw: dict[str, Any]) -> list[str]:
    return [label["name"] if isinstance(label, dict) else str(label) for label in raw.get("labels") or []]


def _preview(body: str | None) -> str | None:
    if not body:
        return None
    return body if len(body) <= BODY_PREVIEW_CHARS else body[:BODY_PREVIEW_CHARS] + "…"


def _repo_from_url(url: str | None) -> str | None:
    if not url or "/repos/" not in url:
        return None
    return url.split("/repos/", 1)[1]


def user(raw: dict[str, Any]) -> User:
    return User.model_validate(raw)  # undeclared keys (all the *_url fields) are dropped


def repository(raw: dict[str, Any]) -> Repository:
    licence = raw.get("license")
    return Repository.model_validate(
        {**raw, "license": licence.get("spdx_id") if isinstance(licence, dict) else None}
    )


def commit(raw: dict[str, Any]) -> Commit:
    inner = raw["commit"]
    author = inner.get("author") or {}
    return Commit(
        sha=raw["sha"],
        message=inner["message"],
        author_name=author.get("name"),
        author_login=_login(raw.get("author")),
        date=author.get("date"),
        html_url=raw.get("html_url"),
    )


def code_hit(raw: dict[str, Any]) -> CodeHit:
    return CodeHit(
        repository=raw["repository"]["full_name"],
        path=raw["path"],
        name=raw["name"],
        sha=raw["sha"],
        html_url=raw["html_url"],
    )


def _issue_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": raw["number"],
        "title": raw["title"],
        "state": raw["state"],
        "repository": _repo_from_url(raw.get("repository_url")),
        "author": _login(raw.get("user")),
        "labels": _labels(raw),
        "assignees": [a["login"] for a in raw.get("assignees") or []],
        "comments": raw.get("comments", 0),
        "is_pull_request": "pull_request" in raw,
        "created_at": raw.get("created_at"),
        "updated_at": raw.get("updated_at"),
        "closed_at": raw.get("closed_at"),
        "html_url": raw["html_url"],
    }


def issue_summary(raw: dict[str, Any]) -> IssueSummary:
    return IssueSummary(**_issue_fields(raw), body_preview=_preview(raw.get("body")))


def issue(raw: dict[str, Any]) -> Issue:
    milestone = raw.get("milestone")
    return Issue(
        **_issue_fields(raw),
        state_reason=raw.get("state_reason"),
        milestone=milestone.get("title") if isinstance(milestone, dict) else None,
        locked=raw.get("locked", False),
        body=raw.get("body"),
    )


def comment(raw: dict[str, Any]) -> Comment:
    return Comment(
        id=raw["id"],
        author=_login(raw.get("user")),
        author_association=raw.get("author_association"),
        body=raw.get("body") or "",
        created_at=raw.get("created_at"),
        updated_at=raw.get("updated_at"),
        html_url=raw.get("html_url"),
    )


def _pr_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": raw["number"],
        "title": raw["title"],
        "state": raw["state"],
        "draft": raw.get("draft", False),
        "author": _login(raw.get("user")),
        "head": (raw.get("head") or {}).get("label"),
        "base": (raw.get("base") or {}).get("ref"),
        "labels": _labels(raw),
        "created_at": raw.get("created_at"),
        "updated_at": raw.get("updated_at"),
        "merged_at": raw.get("merged_at"),
        "html_url": raw["html_url"],
    }


def pull_request_summary(raw: dict[str, Any]) -> PullRequestSummary:
    return PullRequestSummary(**_pr_fields(raw))


def pull_request(raw: dict[str, Any]) -> PullRequest:
    keys: tuple[str, ...] = ("merged", "mergeable", "closed_at", "comments", "review_comments", "commits")
    keys += ("additions", "deletions", "changed_files", "body")
    return PullRequest.model_validate(
        {**_pr_fields(raw), "head_sha": (raw.get("head") or {}).get("sha"), **{k: raw.get(k) for k in keys}}
    )


def pull_request_file(raw: dict[str, Any]) -> PullRequestFile:
    return PullRequestFile.model_validate(raw)
