"""What every HTTP request must be before the app sees it: an ASGI middleware in front of every route.

    Host         one of the names the hub answers to, else 421 (DNS rebinding)
    Origin       with no credential configured, a state-changing request from a page of another site is
                 refused 403 (CSRF): only same-origin pages (Swagger UI) and hub.cors_origins may post
    Content-Type a request that carries a body declares it `application/json`, else 415
    body size    at most hub.limits.max_body_bytes, else 413: from Content-Length or while it streams,
                 raised by `receive()` when the app first reads the body, so a route that checks the
                 caller first (a tool call: credential, scope, rate limit) answers 401/403/429 without
                 reading any of it; a response sent before the body was read closes the connection
                 when the rest is over the limit or of unknown length (uvicorn would read it to discard it)

The Host rule. DNS rebinding needs a name the attacker controls, pointed at the hub's address: a page of
`http://evil.example:8000` then talks to the hub as its own origin, with `Host: evil.example:8000`. So:
  - accepted always: IP literals (`127.0.0.1:8000`, `[::1]`, `192.168.1.5`: an address cannot be
    rebound), `localhost` and `*.localhost` (RFC 6761: loopback), no Host at all (no browser sends that);
  - accepted: the host the listener is bound to when it is a name, the host of the instance's own `url`
    (how sibling hubs reach it), and every entry of `hub.allowed_hosts` (`name`, `*.suffix`, or `*`);
  - a listener bound to every address (0.0.0.0, ::) with no `allowed_hosts` accepts any name: it
    answers on every interface under whatever names the network gives it (containers reach `hub:8000`,
    LAN clients `nas.lan:8000`); list the names in `allowed_hosts` to have them checked there too.
The check needs to know the bound host, so it is on when `serve` builds the app (`Hosts`), off for an
app not on a socket of serve's (tests through an ASGI transport, embedding): `create_app(hosts=None)`.

The Origin rule. Browsers send `Origin` on every cross-origin request and on every POST; curl, Open
WebUI's backend, the OpenAI SDK, MCP clients and other hubs send none. A credential sent in the
`Authorization` header is itself the CSRF defence (a page cannot make a browser attach it), so the rule
applies only while no credential is configured. Same origin: the Origin's host equals the Host header's
(and so do the ports when the Host header names one).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcphub.config import WILDCARD_ADDRESSES
from mcphub.errors import BodyTooLarge, CrossSiteRequest, HubError, MisdirectedRequest, UnsupportedMediaType
from mcphub.invoker import Invoker
from mcphub.logs import printable

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("mcphub.access")

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
_JSON = JSON.encode()
MAX_REMEMBERED_HOSTS = 64  # Host values whose answer is kept (a flood of distinct ones only empties it)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CLOSE = (b"connection", b"close")
MAX_QUOTED = 200  # characters of a header value quoted back in an error message


@dataclass(frozen=True)
class Hosts:
    """The names a listener answers to besides `hub.allowed_hosts` (read per request: reloadable)."""

    bound: str  # the address or name the listener is bound to
    names: frozenset[str] = frozenset()  # the bound name, the host of the instance's own `url`

    @classmethod
    def of_listener(cls, bound: str, url: str | None = None) -> Hosts:
        names = {bound.lower().strip("[]")}
        if url:
            own = urlsplit(url).hostname
            if own:
                names.add(own.lower())
        return cls(bound=bound.strip("[]"), names=frozenset(names))

    def accepts(self, host: str, allowed: Sequence[str]) -> bool:
        name = _hostname(host)
        if name is None or _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        if not allowed and self.bound in WILDCARD_ADDRESSES:
            return True
        if name in self.names:
            return True
        return any(pattern == "*" or pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:]))
                   for pattern in allowed)


class Guard:
    """The checks of the module docstring, in that order, for every HTTP request."""

    def __init__(self, app: ASGIApp, *, invoker: Invoker, hosts: Hosts | None = None) -> None:
        self.app = app
        self.invoker = invoker
        self.hosts = hosts
        self._hosts_seen: dict[bytes, bool] = {}  # Host header → accepted, under `_hosts_of`
        self._hosts_of: object = None  # the hub.allowed_hosts list the answers above were given under

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = content_type = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"origin":
                origin = value
            elif name == b"transfer-encoding":
                chunked = True
        declared = _length(length)
        has_body = chunked or bool(declared)
        hub = self.invoker.config.hub
        try:
            if self.hosts is not None and host is not None and not self._accepts(host, hub.allowed_hosts):
                raise MisdirectedRequest(
                    f"this hub does not answer to Host '{_quoted(host)}' (a page of another site may be "
                    "reaching it by DNS rebinding); if that is a name clients use, add it to hub.allowed_hosts")
            if origin is not None and scope["method"] in STATE_CHANGING and not self.invoker.auth.enabled:
                if not _origin_allowed(origin.decode("latin-1"), host, hub.cors_origins):
                    raise CrossSiteRequest(
                        f"cross-site request refused: a page of '{_quoted(origin)}' may not "
                        f"{scope['method']} to this hub, which has no credential configured; add the origin "
                        "to hub.cors_origins, or configure a credential (auth.api_keys)")
            if has_body and content_type != _JSON and _media_type(content_type) != JSON:
                got = f"'{_quoted(content_type)}'" if content_type else "none"
                raise UnsupportedMediaType(
                    f"the request body must be JSON sent with 'Content-Type: application/json' (got {got}; "
                    "curl sends form data with -d: use --json, or add -H 'Content-Type: application/json')")
        except HubError as exc:
            self.invoker.metrics.refused(exc.status_code)
            access_logger.info("- %s %s %d (%s)", scope["method"], printable(scope["path"]), exc.status_code, exc.type,
                               extra={"audit": {"principal": None, "method": scope["method"],
                                                "path": scope["path"], "status": exc.status_code}})
            await _send_error(send, exc, close=has_body)
            return
        limit = hub.limits.max_body_bytes
        if not chunked and (declared or 0) <= limit:  # the parser holds a body to its Content-Length
            await self.app(scope, receive, send)
            return
        await _Body(self.app, limit, declared, chunked)(scope, receive, send)

    def _accepts(self, host: bytes, allowed: list[str]) -> bool:
        """`Hosts.accepts`, remembered per Host value (clients send a handful) until allowed_hosts changes."""
        assert self.hosts is not None
        if self._hosts_of is not allowed or len(self._hosts_seen) >= MAX_REMEMBERED_HOSTS:
            self._hosts_seen.clear()
            self._hosts_of = allowed
        known = self._hosts_seen.get(host)
        if known is None:
            known = self._hosts_seen[host] = self.hosts.accepts(host.decode("latin-1"), allowed)
        return known


class _Body:
    """One request's body, limited: `receive` raises BodyTooLarge past the limit (see the docstring)."""

    def __init__(self, app: ASGIApp, limit: int, declared: int | None, chunked: bool) -> None:
        self.app = app
        self.limit = limit
        self.declared = None if chunked else declared
        self.received = 0
        self.complete = False
        self.started = False
        self.refused: BodyTooLarge | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def limited_receive() -> Message:
            if self.refused is None and self.declared is not None and self.declared > self.limit:
                self.refused = self._too_large(f"of {self.declared} bytes (Content-Length)")
            if self.refused is not None:
                raise self.refused
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = self._too_large(f"of more than {self.limit} bytes")
                    raise self.refused
                if not message.get("more_body", False):
                    self.complete = True
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not self.started:
                self.started = True
                if not self.complete and (self.declared is None or self.declared > self.limit):
                    # the unread rest is over the limit or of unknown length: end the connection with
                    # this response rather than let uvicorn read the rest to discard it
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge as exc:  # a route that read the body without answering the error itself
            if self.started:
                raise
            self.started = True
            await _send_error(send, exc, close=True)

    def _too_large(self, how: str) -> BodyTooLarge:
        return BodyTooLarge(f"the request body {how} is over this hub's limit of {self.limit} bytes "
                            "(hub.limits.max_body_bytes); send large data by reference (a URL or a path)")


async def _send_error(send: Send, exc: HubError, *, close: bool) -> None:
    body = _json(exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers().items()]
    if close:  # the body was not read: end the connection rather than read it to discard it
        headers.append(_CLOSE)
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(exc: HubError) -> bytes:
    return json.dumps(exc.body(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # uvicorn's parser refuses a bad Content-Length before the app sees it


def _media_type(content_type: bytes | None) -> str:
    return (content_type or b"").decode("latin-1").split(";", 1)[0].strip().lower()


def _hostname(host: str) -> str | None:
    """The name in a Host header (port, brackets and a trailing dot removed, lower case); None if empty."""
    host = host.strip().lower()
    if not host:
        return None
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def _port(host: str) -> int | None:
    if host.startswith("["):
        rest = host.split("]", 1)[1] if "]" in host else ""
        return int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if host.count(":") == 1:
        port = host.rsplit(":", 1)[1]
        return int(port) if port.isdigit() else None
    return None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _origin_allowed(origin: str, host_header: bytes | None, cors_origins: Sequence[str]) -> bool:
    if origin in cors_origins or "*" in cors_origins:
        return True
    if host_header is None:
        return False
    host = host_header.decode("latin-1")
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.hostname is None or parts.hostname != _hostname(host):
        return False
    port = _port(host.strip())
    return port is None or port == origin_port


def _quoted(value: bytes) -> str:
    """A header value as an error message may quote it: escaped, and cut to MAX_QUOTED characters."""
    shown = printable(value.decode("latin-1"))
    return shown if len(shown) <= MAX_QUOTED else shown[:MAX_QUOTED] + "..."
