"""`mcphub users`: who is connected to which OAuth server, and who has a per-user instance running.

`mcphub users --connect SERVER --user USER` prints a connect link for that user instead (made from the
config and MCPHUB_SECRET_KEY, as the hub makes them): an OAuth server lists its tools through the first
user's connection, so someone must connect before any of its tools shows up in the specs.

Otherwise it asks a running hub (`GET /oauth/connections`, which needs a key allowed every server and tool: the
one in $MCPHUB_API_KEY or --api-key) rather than reading the token store: the tokens are encrypted
with the hub's MCPHUB_SECRET_KEY, and the in-memory store lives only in the hub's process. It prints
names and expiry times, never a token.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

import httpx2

from mcphub.config import HubConfig
from mcphub.errors import ConfigError
from mcphub.oauth import oauth_for

REQUEST_TIMEOUT = 10.0  # seconds for the hub to answer


def connect_link(config: HubConfig, server: str, user: str) -> str:
    """A connect link for `user` to `server`, made here (it needs only the config and MCPHUB_SECRET_KEY,
    the same as the hub's): how the first user connects an OAuth server, whose tools are listed through
    the first user's connection. ConfigError / NotFound when it cannot be made."""
    manager = oauth_for(config)
    if manager is None:
        raise ConfigError(f"no server of this config uses oauth: (asked for {server!r})")
    if not manager.applies_to(server):
        names = sorted(n for n in config.servers if manager.applies_to(n))
        raise ConfigError(f"--connect {server!r}: not a server with oauth: (OAuth servers: {', '.join(names)})")
    return manager.connect_link(server, user)


def run(url: str, key: str | None, out: Callable[[str], None]) -> int:
    """Print the table; 0, or 1 with a message when the hub cannot tell (unreachable, refused)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx2.get(f"{url.rstrip('/')}/oauth/connections", headers=headers, timeout=REQUEST_TIMEOUT)
    except httpx2.HTTPError as exc:
        out(f"error: cannot reach the hub at {url} ({type(exc).__name__}); is it running? (--url)")
        return 1
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        out(f"error: the hub at {url} answered {response.status_code}: "
            f"{message or 'not an mcphub answer'} (the key comes from --api-key or $MCPHUB_API_KEY)")
        return 1
    rows: dict[tuple[str, str], list[str]] = {}
    for each in body.get("connections", []):
        expires = each.get("expires_at")
        when = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S") \
            if isinstance(expires, (int, float)) else "-"
        rows[(each["server"], each["user"])] = ["yes", when, "-"]
    for server, users in (body.get("instances") or {}).items():
        for user in users:
            rows.setdefault((server, user), ["-", "-", "-"])[2] = "running"
    if not rows:
        out("no user is connected to an OAuth server, and no per-user instance is running")
        return 0
    table = [["SERVER", "USER", "CONNECTED", "EXPIRES (UTC)", "INSTANCE"]]
    table += [[server, user, *rest] for (server, user), rest in sorted(rows.items())]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0
