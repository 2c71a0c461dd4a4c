"""What every bundled server needs to talk to its upstream API: env settings, one HTTP client, and
failures turned into ToolError text a model can act on (always naming the URL that failed).

Standalone: imports nothing from mcphub.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from mcp.server.mcpserver.exceptions import ToolError

DEFAULT_TIMEOUT = 15.0  # seconds; upstream APIs answer in well under a second when healthy


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def redact(url: str) -> str:
    """The URL without userinfo and query string, safe to show in an error (queries may hold keys)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Connection:
    """The server process's one HTTP client, opened and closed by the server lifespan:
    `MCPServer(..., lifespan=connection.lifespan)`, then `connection.get()` inside tools."""

    def __init__(self, server: str, **client_options: Any) -> None:
        self._server = server
        self._options = client_options  # make_client's keywords
        self.client: httpx2.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(self, _server: Any) -> AsyncIterator[dict[str, Any]]:
        async with make_client(**self._options) as client:
            self.client = client
            try:
                yield {}
            finally:
                self.client = None

    def get(self) -> httpx2.AsyncClient:
        if self.client is None:  # pragma: no cover - tools only run inside the lifespan
            raise RuntimeError(f"{self._server} server HTTP client used outside the server lifespan")
        return self.client


def make_client(
    *, headers: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT, auth: Any = None
) -> httpx2.AsyncClient:
    """One client per server process. Honours HTTP(S)_PROXY from the environment the hub gives it."""
    return httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=True,
        auth=auth,
        trust_env=True,
    )


async def request(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    params: Any = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """Send one request; a transport failure becomes a ToolError naming the URL. Status is not checked."""
    try:
        return await client.request(method, url, params=params, json=json, headers=headers)
    except httpx2.TimeoutException:
        raise ToolError(f"{method} {redact(url)} failed: timed out after {client.timeout.read}s") from None
    except httpx2.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(f"{method} {redact(url)} failed: cannot reach upstream ({reason})") from None


def json_body(response: httpx2.Response) -> Any:
    """The response's JSON, or a ToolError saying the upstream answered something else."""
    try:
        return response.json()
    except ValueError:
        snippet = response.text[:200].replace("\n", " ")
        raise ToolError(
            f"{response.request.method} {redact(str(response.request.url))} answered "
            f"HTTP {response.status_code} with a body that is not JSON: {snippet!r}"
        ) from None
