"""Where a remote MCP server's authorization server is, and what it offers (mcphub/oauth.py uses it).

From config (`oauth.authorization_endpoint` + `token_endpoint`), else discovered: the server's own 401
(`WWW-Authenticate: Bearer resource_metadata="..."`), else `/.well-known/oauth-protected-resource[/path]`
(RFC 9728), names its authorization server, whose RFC 8414 metadata (else OpenID discovery) gives the
endpoints. The 401's metadata URL is followed only on the server's own origin (scheme, host, port); the
protected resource must be on the server's own site, and the metadata's `issuer` the one
asked for; PKCE S256 must be supported where the metadata says what it supports. Bounded answers only:
each body read up to MAX_METADATA_BYTES, the server's own 401 probe read for its headers only, all of one
discovery within DISCOVERY_TIMEOUT and each token/registration/revocation request (`post`) within
REQUEST_TIMEOUT (HTTP_TIMEOUT bounds one read, not a server that keeps sending).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx2

from mcphub.bounded import read_bounded
from mcphub.config import HttpServer
from mcphub.errors import BadUpstreamResponse

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # seconds for one request to an authorization server or for discovery
MAX_METADATA_BYTES = 256 * 1024  # a bigger metadata or token answer is refused
DISCOVERY_TIMEOUT = 30.0  # seconds all of one server's discovery may take (a few small requests)
REQUEST_TIMEOUT = 20.0  # seconds one token, registration or revocation request may take, its answer read
_RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What the hub knows of one server's authorization server."""

    authorization: str
    token: str
    resource: str
    revocation: str | None = None
    registration: str | None = None
    auth_methods: tuple[str, ...] = ("client_secret_basic",)  # RFC 8414's default


def client(cfg: HttpServer) -> httpx2.AsyncClient:
    """An HTTP client for `cfg`'s authorization server (its proxy; redirects not followed)."""
    return httpx2.AsyncClient(timeout=HTTP_TIMEOUT, proxy=cfg.proxy, follow_redirects=False)


async def discover(server: str, cfg: HttpServer) -> Endpoints:
    """The endpoints of `server`'s authorization server: configured, else discovered. BadUpstreamResponse
    naming what is missing when they cannot be found."""
    oauth = cfg.oauth
    assert oauth is not None
    if oauth.authorization_endpoint is not None and oauth.token_endpoint is not None:
        return Endpoints(oauth.authorization_endpoint, oauth.token_endpoint, oauth.resource or cfg.url,
                         revocation=oauth.revocation_endpoint,
                         auth_methods=("client_secret_basic", "client_secret_post"))
    try:
        with anyio.fail_after(DISCOVERY_TIMEOUT):
            async with client(cfg) as http:
                resource_meta = await _resource_metadata(http, server, cfg)
                issuers = resource_meta.get("authorization_servers")
                if not isinstance(issuers, list) or not issuers or not isinstance(issuers[0], str):
                    raise _unreachable(server, "its protected-resource metadata names no authorization_servers")
                issuer = issuers[0]
                meta = await _server_metadata(http, server, issuer)
    except TimeoutError:
        raise _unreachable(server, f"it took longer than {DISCOVERY_TIMEOUT:g} s") from None
    resource = oauth.resource or resource_meta.get("resource") or cfg.url
    if not isinstance(resource, str) or origin(resource) != origin(cfg.url):
        raise _unreachable(server, f"its metadata names a resource on another site ({resource!r})")
    for field in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(meta.get(field), str):
            raise _unreachable(server, f"its authorization server's metadata has no {field}")
    challenges = meta.get("code_challenge_methods_supported")
    if isinstance(challenges, list) and "S256" not in challenges:
        raise _unreachable(server, "its authorization server does not support PKCE S256")
    methods = meta.get("token_endpoint_auth_methods_supported")
    logger.info("'%s': OAuth authorization server %s", server, issuer)
    return Endpoints(
        oauth.authorization_endpoint or str(meta["authorization_endpoint"]),
        oauth.token_endpoint or str(meta["token_endpoint"]), resource,
        revocation=oauth.revocation_endpoint or _str(meta.get("revocation_endpoint")),
        registration=_str(meta.get("registration_endpoint")),
        auth_methods=tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list)
        else ("client_secret_basic",))

async def _resource_metadata(http: httpx2.AsyncClient, server: str, cfg: HttpServer) -> dict[str, object]:
    candidates = []
    try:
        async with http.stream("GET", cfg.url, headers={"Accept": "application/json, text/event-stream"}) as probe:
            found = _RESOURCE_METADATA.search(probe.headers.get("www-authenticate", ""))  # (its body is not read)
        if probe.status_code == 401 and found:
            if origin(found.group(1)) == origin(cfg.url):
                candidates.append(found.group(1))
            else:  # (the hub would fetch whatever host the server names: its own site only)
                logger.warning("'%s': its 401 names protected-resource metadata on another site (%s): ignored, "
                               "looking at its own /.well-known/oauth-protected-resource", server,
                               _printable(origin(found.group(1))))
    except httpx2.HTTPError as exc:
        raise _unreachable(server, f"{cfg.url} cannot be reached ({type(exc).__name__})") from None
    parts = urlsplit(cfg.url)
    site = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    candidates += [f"{site}/.well-known/oauth-protected-resource{path}",
                   f"{site}/.well-known/oauth-protected-resource"]
    for url in dict.fromkeys(candidates):
        meta = await _json(http, url)
        if meta is not None:
            return meta
    raise _unreachable(server, f"it publishes no protected-resource metadata (tried {', '.join(candidates)}); "
                            "give oauth.authorization_endpoint and oauth.token_endpoint")

async def _server_metadata(http: httpx2.AsyncClient, server: str, issuer: str) -> dict[str, object]:
    parts = urlsplit(issuer)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    for url in (f"{origin}/.well-known/oauth-authorization-server{path}",
                f"{origin}/.well-known/openid-configuration{path}",
                f"{origin}{path}/.well-known/openid-configuration"):
        meta = await _json(http, url)
        if meta is not None:
            if meta.get("issuer") not in (issuer, issuer.rstrip("/")):
                raise _unreachable(server, f"the metadata at {url} is for another issuer")
            return meta
    raise _unreachable(server, f"its authorization server {issuer} publishes no RFC 8414 metadata")


def _unreachable(server: str, why: str) -> BadUpstreamResponse:
    return BadUpstreamResponse(f"server '{server}': OAuth discovery failed: {why}", server=server)


def origin(url: str) -> str:
    """scheme://host:port (the port the scheme implies when none is given), for comparing sites."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return "invalid " + url
    return f"{parts.scheme}://{parts.hostname or ''}:{port}".lower()


def _printable(text: str, limit: int = 200) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text)[:limit]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def post(cfg: HttpServer, url: str, *, data: dict[str, str] | None = None, json_body: object = None,
               auth: httpx2.Auth | None = None) -> tuple[int, dict[str, object]]:
    """POST to `cfg`'s authorization server: the status and the JSON object answered ({} when there is
    none, or it is bigger than MAX_METADATA_BYTES), all within REQUEST_TIMEOUT. Raises httpx2.HTTPError,
    or TimeoutError when it took longer."""
    with anyio.fail_after(REQUEST_TIMEOUT):
        async with client(cfg) as http, http.stream(
                "POST", url, data=data, json=json_body, auth=auth if auth is not None else httpx2.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"}) as response:
            body = await read_bounded(response, MAX_METADATA_BYTES)
    return response.status_code, _object(body) or {}


async def _json(http: httpx2.AsyncClient, url: str) -> dict[str, object] | None:
    """A JSON object from `url` (bounded), or None when there is none there."""
    try:
        async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                return None
            return _object(await read_bounded(response, MAX_METADATA_BYTES))
    except httpx2.HTTPError:
        return None


def _object(body: bytes | None) -> dict[str, object] | None:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
