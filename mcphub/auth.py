"""Who is calling, and what they may call.

API keys arrive as `Authorization: Bearer <key>`. Keys are held only as SHA-256 digests and compared in
constant time against every configured digest (no early exit), so neither a wrong key nor a right one
is faster to check. Scopes: `servers` (names, `*` for all) and optionally `tools` (bare tool names).
Knows nothing of MCP or the supervisor.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from mcphub.config import AuthConfig, key_hash
from mcphub.errors import Forbidden, Unauthorized

_ALL = frozenset({"*"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or, when no credential is configured at all, the anonymous one)."""

    name: str
    servers: frozenset[str] = _ALL
    tools: frozenset[str] | None = None  # None: every tool of the allowed servers

    def may_use_server(self, server: str) -> bool:
        return "*" in self.servers or server in self.servers

    def may_call(self, server: str, tool: str) -> bool:
        return self.may_use_server(server) and (self.tools is None or tool in self.tools)

    def check(self, server: str, tool: str | None = None) -> None:
        if not self.may_use_server(server):
            raise Forbidden(f"credential '{self.name}' may not use server '{server}'", server=server, tool=tool)
        if tool is not None and not self.may_call(server, tool):
            raise Forbidden(f"credential '{self.name}' may not call tool '{tool}'", server=server, tool=tool)


ANONYMOUS = Principal(name="anonymous")


class Authenticator:
    def __init__(self, config: AuthConfig, *, extra_keys: Iterable[str] = ()) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for key in config.api_keys:
            principal = Principal(
                name=key.name,
                servers=frozenset(key.servers),
                tools=frozenset(key.tools) if key.tools is not None else None,
            )
            entries.append((_digest_bytes(key.digest), principal))
        for i, key in enumerate(k for k in extra_keys if k):
            entries.append((_digest_bytes(key_hash(key)), Principal(name="api-key" if i == 0 else f"api-key-{i}")))
        self._entries = entries
        self._jwt_configured = config.jwt is not None

    @property
    def enabled(self) -> bool:
        """True once any credential is configured: from then on every call needs one."""
        return bool(self._entries) or self._jwt_configured

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller for this Authorization header; None when no credential was sent.

        Raises Unauthorized for a malformed header or an unknown credential.
        """
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(digest, presented) and found is None:
                found = principal
        if found is None:
            raise Unauthorized("invalid credential")
        return found

    def require(self, authorization: str | None) -> Principal:
        """The caller, who must have sent a valid credential if any is configured."""
        principal = self.authenticate(authorization)
        if principal is not None:
            return principal
        if self.enabled:
            raise Unauthorized("missing credential: send 'Authorization: Bearer <key>'")
        return ANONYMOUS


def _digest_bytes(digest: str) -> bytes:
    return bytes.fromhex(digest.removeprefix("sha256:"))
