"""GitHub REST calls: settings from env, auth headers, Link-header pagination, and every HTTP failure
turned into ToolError text that says what went wrong and what to do (never echoing the token).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx2
from mcp.server.mcpserver.exceptions import ToolError

from mcphub_servers._upstream import Connection, env_float, env_str, json_body, redact, request

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_TIMEOUT = 30.0  # seconds; search and diff endpoints can take several seconds
API_VERSION = "2022-11-28"
_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    api_url: str
    token: str | None
    timeout: float
    read_only: bool

    @classmethod
    def from_env(cls) -> Settings:
        raw_read_only = (env_str("GITHUB_READ_ONLY") or "1").lower()
        if raw_read_only not in _FALSE | _TRUE:
            raise SystemExit(f"GITHUB_READ_ONLY={raw_read_only!r} is not a boolean; use 1 or 0")
        return cls(
            api_url=(env_str("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
            token=env_str("GITHUB_PERSONAL_ACCESS_TOKEN") or env_str("GITHUB_TOKEN"),
            timeout=env_float("GITHUB_TIMEOUT", DEFAULT_TIMEOUT),
            read_only=raw_read_only not in _FALSE,
        )


@dataclass
class Page:
    """Where a paginated list stands, from the Link header."""

    next_page: int | None = None
    last_page: int | None = None


def segment(value: str) -> str:
    """One URL path segment from a user-supplied owner/repo name."""
    if not value or value in (".", "..") or "/" in value:
        raise ToolError(f"{value!r} is not a valid GitHub owner or repository name")
    return quote(value, safe="")


def repo_path(owner: str, repo: str) -> str:
    return f"/repos/{segment(owner)}/{segment(repo)}"


def _page_of(link: dict[str, str] | None) -> int | None:
    if not link:
        return None
    values = parse_qs(urlsplit(link.get("url", "")).query).get("page")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


class GitHubAPI:
    """GitHub REST over one HTTP client, opened and closed by the server lifespan
    (`MCPServer(..., lifespan=api.connection.lifespan)`)."""

    def __init__(self, settings: Settings, user_agent: str) -> None:
        self.settings = settings
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": user_agent,
        }
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self.connection = Connection("github", headers=headers, timeout=settings.timeout)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        accept: str | None = None,
    ) -> httpx2.Response:
        url = self.settings.api_url + path
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Accept": accept} if accept else None
        client = self.connection.get()
        response = await request(client, method, url, params=clean or None, json=json, headers=headers)
        if response.status_code >= 400:
            raise ToolError(self._explain(response))
        return response

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, Page]:
        response = await self.call("GET", path, params=params)
        links = response.links
        return json_body(response), Page(_page_of(links.get("next")), _page_of(links.get("last")))

    async def send_json(self, method: str, path: str, body: dict[str, Any]) -> Any:
        return json_body(await self.call(method, path, json=body))

    def _explain(self, response: httpx2.Response) -> str:
        status = response.status_code
        where = f"{response.request.method} {redact(str(response.request.url))}"
        body = _error_body(response)
        message = body.get("message") or response.reason_phrase or "no message"
        if status == 401:
            if self.settings.token:
                return (
                    f"{where}: GitHub rejected the token (HTTP 401 {message}); check that "
                    "GITHUB_PERSONAL_ACCESS_TOKEN is valid and not expired"
                )
            return (
                f"{where}: GitHub requires authentication here (HTTP 401); set GITHUB_PERSONAL_ACCESS_TOKEN"
            )
        if status in (403, 429):
            limited = _rate_limit(response, message)
            if limited:
                return f"{where}: GitHub rate limit exceeded (HTTP {status}: {message}); {limited}"
            return f"{where}: forbidden (HTTP {status}: {message}); the token may lack the needed permission"
        if status == 404:
            hint = "" if self.settings.token else " (private resources need GITHUB_PERSONAL_ACCESS_TOKEN)"
            return f"{where}: not found (HTTP 404){hint}"
        if status == 422:
            details = "; ".join(_describe(e) for e in body.get("errors") or [])
            return f"{where}: GitHub rejected the request (HTTP 422: {message})" + (
                f": {details}" if details else ""
            )
        return f"{where}: GitHub answered HTTP {status}: {message}"


def _error_body(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:200].strip()} if response.text.strip() else {}
    return body if isinstance(body, dict) else {}


def _describe(error: Any) -> str:
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return str(error)
    if error.get("message"):
        return str(error["message"])
    parts = [str(error[k]) for k in ("resource", "field", "code") if error.get(k)]
    return " ".join(parts) or str(error)


def _rate_limit(response: httpx2.Response, message: str) -> str | None:
    """When to retry, if the response is a (primary or secondary) rate limit; else None."""
    headers = response.headers
    retry_after = headers.get("retry-after")
    if retry_after and retry_after.strip().isdigit():
        return f"retry after {int(retry_after)} seconds"
    if headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            at = datetime.fromtimestamp(int(reset), UTC)
            wait = max(0, int(reset) - int(time.time()))
            return f"the limit resets at {at.isoformat()} (in {wait} seconds)"
        return "retry later"
    if response.status_code == 429 or "rate limit" in message.lower():
        return "retry in a minute"  # GitHub's advice for secondary limits that name no time
    return None
