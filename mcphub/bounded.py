"""Reading an HTTP answer from a party the hub does not control with a bound on its size: the body, or
None once it passes the bound (what is past it is never read). Used for JWK sets (auth.py) and OAuth
metadata and token answers (oauth_discovery.py)."""

from __future__ import annotations

import httpx2


async def read_bounded(response: httpx2.Response, limit: int) -> bytes | None:
    """`response`'s body (streamed), or None when it is longer than `limit` bytes."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
