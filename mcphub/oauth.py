"""OAuth 2.1 to remote MCP servers, per user: each user connects their own account once, in a browser.

A server with `oauth:` in its config is called with the calling user's own access token (an
`httpx2.Auth` from `auth_for`, on that user's connection). Where the endpoints are not configured they
are discovered, once per server: the server's 401 `WWW-Authenticate: Bearer resource_metadata="..."`
(else `/.well-known/oauth-protected-resource[/path]`, RFC 9728) names its authorization server, whose
RFC 8414 metadata (else OpenID discovery) gives the endpoints. Without a configured `client_id` the hub
registers itself (RFC 7591 dynamic registration, as a public client using PKCE) where the authorization
server offers it; client ID metadata documents are not implemented.

The flow, for a user without tokens: a call answers `OAuthRequired` (403 `oauth_required`, or a URL
elicitation on the MCP face) carrying a connect link, `{public_url}/oauth/{server}/connect?link=...`.
A browser cannot send the hub's key, so the link itself is the credential: encrypted and authenticated
with a key derived from MCPHUB_SECRET_KEY, naming the user and the server, valid CONNECT_LINK_TTL
seconds and once. It redirects to the authorization server (authorization code + PKCE S256, `state`,
RFC 8707 `resource`); `state` is sealed the same way, holds the PKCE verifier and is single-use. The
callback exchanges the code and stores the tokens encrypted (mcphub/oauth_store.py). Tokens are
refreshed REFRESH_MARGIN before they expire, and once more when the server answers 401, one refresh at
a time per user and server (across replicas with Redis: a refresh token is good once); a refresh the
authorization server refuses (REFUSALS) forgets them (the user is asked to connect again), any other
failure keeps them and answers 503 with Retry-After. `forget` deletes them
and revokes the refresh token at the authorization server (RFC 7009) where it has an endpoint.

No token, code, verifier, client secret or MCPHUB_SECRET_KEY is ever logged or put in a message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import anyio
import httpx2

from mcphub import oauth_discovery as discovery
from mcphub.config import HttpServer, HubConfig, OAuthClient
from mcphub.errors import (
    ConfigError,
    Forbidden,
    HubError,
    NotFound,
    OAuthRequired,
    ServerUnavailable,
)
from mcphub.oauth_discovery import Endpoints, discover
from mcphub.oauth_store import SECRET_KEY_ENV, MemoryStore, RedisStore, Sealer, SecretStore
from mcphub.state import StateStore

logger = logging.getLogger(__name__)

CONNECT_LINK_TTL = 600.0  # seconds a connect link works (it travels through a chat to a browser)
STATE_TTL = 600.0  # seconds from leaving for the authorization server to coming back to the callback
REFRESH_MARGIN = 60.0  # seconds before expiry a token is refreshed (at most a tenth of its lifetime)
RETRY_AFTER = 5  # seconds a caller is told to wait when the authorization server cannot be reached
# the refresh answers (RFC 6749 5.2, on 400/401) that end a connection: the grant or client is no longer
# good, so asking again cannot help; any other failure (5xx, a proxy's page, no access_token) keeps the tokens
REFUSALS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
# seconds one refresh may hold its lock: discovery, a registration and the token request, each bounded; a
# replica that dies holding it delays the others' refresh this long (a waiter gives up after twice that)
REFRESH_LOCK_TTL = discovery.DISCOVERY_TIMEOUT + 2 * discovery.REQUEST_TIMEOUT
CALLBACK = "/oauth/{server}/callback"
CONNECT = "/oauth/{server}/connect"
STATE_COOKIE = "mcphub_oauth_state"  # holds the state's nonce in the browser that started the sign-in


@dataclass(frozen=True, slots=True)
class Connection:
    """Who is connected to which server (never a token)."""

    server: str
    user: str
    expires_at: float | None
    refreshable: bool


@dataclass(frozen=True, slots=True)
class SignIn:
    """Where `begin` sends the browser, and the nonce of its `state`: the browser keeps the nonce in
    STATE_COOKIE and the callback requires it, so a sign-in completes only in the browser that began it."""

    url: str
    nonce: str


class FlowError(HubError):
    """The browser part went wrong: shown as a page with this status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status_code = status


def sealer_from_env(environ: Mapping[str, str], config: HubConfig, source: str = "config") -> Sealer | None:
    """The sealer when any server uses `oauth:`; a ConfigError when MCPHUB_SECRET_KEY is missing or weak."""
    users = sorted(name for name, cfg in config.servers.items() if isinstance(cfg, HttpServer) and cfg.oauth)
    if not users:
        return None
    secret = environ.get(SECRET_KEY_ENV, "")
    if not secret:
        raise ConfigError(f"{source}: servers.{users[0]}.oauth: environment variable {SECRET_KEY_ENV} is not set: "
                          "it encrypts users' OAuth tokens and signs connect links (set it to a long random "
                          "value, e.g. `openssl rand -hex 32`, the same on every replica)")
    try:
        return Sealer(secret)
    except ValueError as exc:
        raise ConfigError(f"{source}: servers.{users[0]}.oauth: {exc}") from None


def oauth_for(config: HubConfig, environ: Mapping[str, str] | None = None) -> OAuth | None:
    """The process's `OAuth` when any server uses it (tokens in memory until `use_redis`); a ConfigError
    when MCPHUB_SECRET_KEY is missing."""
    sealer = sealer_from_env(os.environ if environ is None else environ, config)
    if sealer is None:
        return None
    return OAuth(config, sealer, MemoryStore())


class OAuthServers:
    """Which servers use `oauth:`, as a `user_servers.UserAuthSource` for commands that run servers without
    users (`mcphub check`, `mcphub tools`): such a server is per-user (its listing instance does not try to
    connect without a token), and no user connects here."""

    def __init__(self, config: HubConfig) -> None:
        self._config = config

    def applies_to(self, server: str) -> bool:
        cfg = self._config.servers.get(server)
        return isinstance(cfg, HttpServer) and cfg.oauth is not None

    def auth_for(self, server: str, user: str) -> httpx2.Auth:
        raise Forbidden(f"server '{server}' is called with each user's own OAuth connection, made through the "
                        "running hub (GET /oauth/{server}/connect)", server=server)


class OAuth:
    """Every user's OAuth connections to the servers of one hub config (`reconfigure` on reload)."""

    def __init__(self, config: HubConfig, sealer: Sealer, store: SecretStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._sealer = sealer
        self._store = store
        self._clock = clock
        self._endpoints: dict[str, Endpoints] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._known: set[tuple[str, str]] = set()  # (server, user) found connected by `require` (for `auth_for`)

    def reconfigure(self, config: HubConfig) -> None:
        self.config = config
        self._endpoints.clear()

    def use_redis(self, state: StateStore) -> None:
        """Keep tokens in the hub's Redis (`hub.state`): every replica sees a user's connection."""
        self._store = RedisStore(state.client)

    # ------------------------------------------------------------------------------- for the call path

    def applies_to(self, server: str) -> bool:
        cfg = self.config.servers.get(server)
        return isinstance(cfg, HttpServer) and cfg.oauth is not None

    def auth_for(self, server: str, user: str) -> httpx2.Auth:
        """The `auth=` of `user`'s connection to `server` (a `user_servers.UserAuthSource`): their bearer
        token, refreshed as needed. OAuthRequired unless `require` found them connected."""
        if (server, user) not in self._known:
            raise self.required(server, user)
        return UserAuth(self, server, user)

    async def require(self, server: str, user: str, tool: str | None = None) -> None:
        """Raises OAuthRequired (with a fresh connect link) unless `user` has tokens for `server`: the
        call path asks before each call to a server with `oauth:` (the store may be Redis: async). A token
        about to expire is refreshed here, before the call: a refresh that fails is then this call's 503
        (or 403 to connect again) in its own words, not a failure inside the call's connection."""
        try:
            await self.access_token(server, user)
        except OAuthRequired:
            self._known.discard((server, user))
            raise self.required(server, user, tool) from None
        self._known.add((server, user))

    def required(self, server: str, user: str, tool: str | None = None) -> OAuthRequired:
        url = self.connect_link(server, user)
        minutes = max(1, int(CONNECT_LINK_TTL // 60))
        return OAuthRequired(
            f"server '{server}' needs you to connect your own account first: open {url} in a browser "
            f"(the link works once, for {minutes} minutes, and only for you), then call again",
            url, server=server, tool=tool)

    async def access_token(self, server: str, user: str, *, rejected: str | None = None) -> str:
        """`user`'s access token for `server`, refreshed when it is about to expire or when the server
        rejected `rejected`. Raises OAuthRequired when there is none (or it cannot be refreshed)."""
        tokens = await self._tokens(server, user)
        if tokens is not None and not self._stale(tokens, rejected):
            return str(tokens["access_token"])
        key = _key(server, user)
        try:  # one refresh at a time: per process, and across replicas when the store is Redis
            async with self._locks.setdefault(key, anyio.Lock()), self._store.lock(key, REFRESH_LOCK_TTL):
                tokens = await self._tokens(server, user)  # another task or replica may have refreshed it
                if tokens is None:
                    raise self.required(server, user)
                if self._stale(tokens, rejected):
                    try:
                        tokens = await self._refresh(server, user, tokens)
                    except ServerUnavailable:
                        if rejected is not None or not self._alive(tokens):
                            raise
                        # refreshed early, REFRESH_MARGIN before expiry: the current token works meanwhile
                return str(tokens["access_token"])
        except TimeoutError:
            raise ServerUnavailable(f"server '{server}': your token is being renewed elsewhere and it is taking "
                                    "long; retry shortly", retry_after=RETRY_AFTER, server=server) from None

    def _alive(self, tokens: dict[str, object]) -> bool:
        expires_at = tokens.get("expires_at")
        return not isinstance(expires_at, (int, float)) or self._clock() < expires_at

    def _stale(self, tokens: dict[str, object], rejected: str | None) -> bool:
        if rejected is not None and tokens.get("access_token") == rejected:
            return True
        expires_at, lifetime = tokens.get("expires_at"), tokens.get("lifetime")
        if not isinstance(expires_at, (int, float)):
            return False
        margin = min(REFRESH_MARGIN, float(lifetime) / 10) if isinstance(lifetime, (int, float)) else REFRESH_MARGIN
        return self._clock() >= expires_at - margin

    async def _refresh(self, server: str, user: str, tokens: dict[str, object]) -> dict[str, object]:
        refresh_token = tokens.get("refresh_token")
        if not isinstance(refresh_token, str):
            await self._store.delete(_key(server, user))
            self._known.discard((server, user))
            logger.info("'%s': the access token of %s expired and there is no refresh token: not connected",
                        server, user)
            raise self.required(server, user)
        endpoints = await self.endpoints(server)
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": endpoints.resource}
        status, answer = await self._token_request(server, endpoints, form)
        if status >= 400 or not isinstance(answer.get("access_token"), str):
            latest = await self._tokens(server, user)
            if latest is not None and latest.get("refresh_token") != refresh_token:
                return latest  # another replica refreshed it first (the AS rotated the refresh token)
            if not (status in (400, 401) and answer.get("error") in REFUSALS):
                logger.warning("'%s': refreshing the token of %s failed (%s): kept, tried again on the next call",
                               server, user, _oauth_error(answer, status))
                raise ServerUnavailable(f"server '{server}': its authorization server did not renew your token "
                                        f"({_oauth_error(answer, status)}); retry shortly",
                                        retry_after=RETRY_AFTER, server=server)
            await self._store.delete(_key(server, user))
            self._known.discard((server, user))
            logger.info("'%s': refreshing the token of %s was refused (%s): not connected", server, user,
                        _oauth_error(answer, status))
            raise self.required(server, user)
        renewed = self._tokens_from(answer, previous_refresh=refresh_token)
        await self._save(server, user, renewed)
        logger.info("'%s': refreshed the token of %s", server, user)
        return renewed

    # ------------------------------------------------------------------------------------- the flow

    def connect_link(self, server: str, user: str) -> str:
        sealed = self._sealer.link(json.dumps({"s": server, "u": user, "n": secrets.token_urlsafe(16)}).encode())
        return self.public_url + CONNECT.format(server=server) + "?" + urlencode({"link": sealed})

    async def link_user(self, server: str, link: str) -> str:
        """The user a connect link names, checked but not used up (the page that asks "connect for whom?")."""
        self._config_of(server)
        claims = self._open(link, CONNECT_LINK_TTL, "connect link")
        if claims.get("s") != server:
            raise FlowError(f"this connect link is for another server than '{server}'")
        if await self._store.get("used/" + str(claims.get("n"))) is not None:
            raise FlowError("this connect link was already used: call the tool again for a new one")
        return str(claims.get("u"))

    async def begin(self, server: str, link: str | None, user: str | None = None) -> SignIn:
        """Where to send the browser: the authorization server's sign-in, for the user the link names
        (or `user`, authenticated with the hub's own credential)."""
        self._config_of(server)
        if user is None:
            claims = self._open(link, CONNECT_LINK_TTL, "connect link")
            if claims.get("s") != server:
                raise FlowError(f"this connect link is for another server than '{server}'")
            if not await self._store.claim("used/" + str(claims.get("n")), CONNECT_LINK_TTL + 60):
                raise FlowError("this connect link was already used: call the tool again for a new one")
            user = str(claims.get("u"))
        endpoints = await self.endpoints(server)
        client = await self._client(server, endpoints)
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        state = self._sealer.link(json.dumps({"s": server, "u": user, "v": verifier, "n": nonce}).encode())
        # authlib.oauth2 (~1.5 MiB) is imported at the first sign-in, not by every hub (tests/test_cost_fences.py)
        from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
        from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

        scopes = self._config_of(server).scopes
        url: str = prepare_grant_uri(
            endpoints.authorization, client.client_id, "code", redirect_uri=self.redirect_uri(server),
            scope=" ".join(scopes) if scopes else None, state=state,
            code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256",
            resource=endpoints.resource)
        return SignIn(url, nonce)

    async def finish(self, server: str, query: Mapping[str, str], nonce: str | None) -> str:
        """The callback: check `state` (and that `nonce`, from the browser's STATE_COOKIE, is its own),
        exchange the code, store the tokens. Returns the user."""
        self._config_of(server)
        claims = self._open(query.get("state"), STATE_TTL, "sign-in state")
        if claims.get("s") != server:
            raise FlowError(f"this sign-in was started for another server than '{server}'")
        done = FlowError("this sign-in was already completed (the page was loaded twice?): "
                         "call the tool again if you are not connected")
        if await self._store.get("used/" + str(claims.get("n"))) is not None:
            raise done
        if nonce is None or not secrets.compare_digest(nonce.encode(), str(claims.get("n")).encode()):
            raise FlowError("this sign-in was started in another browser: open your connect link again, in the "
                            "browser you sign in with (call the tool again for a new link if it was used)")
        if not await self._store.claim("used/" + str(claims.get("n")), STATE_TTL + 60):
            raise done
        user = str(claims.get("u"))
        if query.get("error"):
            description = query.get("error_description", "")
            raise FlowError(f"the authorization server did not grant access to '{server}': "
                            f"{_printable(query['error'])}{': ' + _printable(description) if description else ''}",
                            403)
        code = query.get("code")
        if not code:
            raise FlowError("the authorization server sent no code")
        endpoints = await self.endpoints(server)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri(server),
                "code_verifier": str(claims.get("v")), "resource": endpoints.resource}
        status, answer = await self._token_request(server, endpoints, form)
        if status >= 400 or not isinstance(answer.get("access_token"), str):
            raise FlowError(f"the authorization server refused the code for '{server}' "
                            f"({_oauth_error(answer, status)}): start again from the tool",
                            502 if status >= 500 else 400)
        await self._save(server, user, self._tokens_from(answer))
        logger.info("'%s': %s connected", server, user)
        return user

    async def forget(self, server: str, user: str) -> bool:
        """Delete `user`'s tokens for `server` and revoke them where the server's AS can. True if there were any."""
        self._config_of(server)
        tokens = await self._tokens(server, user)
        await self._store.delete(_key(server, user))
        self._known.discard((server, user))
        if tokens is None:
            return False
        logger.info("'%s': %s disconnected", server, user)
        try:
            endpoints = await self.endpoints(server)
        except HubError:
            return True
        if endpoints.revocation is not None:
            for hint in ("refresh_token", "access_token"):
                token = tokens.get(hint)
                if isinstance(token, str):
                    try:
                        status, answer = await self._token_request(server, endpoints, {
                            "token": token, "token_type_hint": hint}, url=endpoints.revocation)
                    except ServerUnavailable as exc:  # forgotten here all the same
                        status, answer = 503, {"error_description": str(exc)}
                    if status >= 400:
                        logger.warning("'%s': revoking a token of %s failed (%s)", server, user,
                                       _oauth_error(answer, status))
        return True

    async def connections(self) -> list[Connection]:
        found = []
        for name in await self._store.names("token/"):
            _, server, user = name.split("/", 2)
            tokens = await self._tokens(server, user)
            if tokens is None:
                continue
            expires_at = tokens.get("expires_at")
            found.append(Connection(server, user, float(expires_at) if isinstance(expires_at, (int, float)) else None,
                                    isinstance(tokens.get("refresh_token"), str)))
        return sorted(found, key=lambda c: (c.server, c.user))

    @property
    def public_url(self) -> str:
        return self.config.hub.public_url or self.config.hub.local_url

    def redirect_uri(self, server: str) -> str:
        return self.public_url + CALLBACK.format(server=server)

    # -------------------------------------------------------------------------------- discovery

    async def endpoints(self, server: str) -> Endpoints:
        known = self._endpoints.get(server)
        if known is None:
            known = self._endpoints[server] = await discover(server, self._server(server))
        return known

    async def _client(self, server: str, endpoints: Endpoints) -> _Client:
        oauth = self._config_of(server)
        if oauth.client_id is not None:
            return _Client(oauth.client_id, oauth.client_secret)
        stored = await self._store.get("client/" + server)
        plain = None if stored is None else self._sealer.open(stored)
        if plain is not None:
            data = json.loads(plain)
            same = (data.get("redirect_uri"), data.get("registration")) == (self.redirect_uri(server),
                                                                              endpoints.registration)
            if same:
                return _Client(str(data["client_id"]), _str(data.get("client_secret")))
        if endpoints.registration is None:
            raise FlowError(f"server '{server}': its authorization server offers no dynamic client registration; "
                            f"register mcphub there (redirect URI {self.redirect_uri(server)}) and give "
                            "oauth.client_id (and client_secret)", 502)
        body = {"client_name": oauth.client_name, "redirect_uris": [self.redirect_uri(server)],
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "token_endpoint_auth_method": "none"}
        if oauth.scopes:
            body["scope"] = " ".join(oauth.scopes)
        try:
            status, answer = await discovery.post(self._server(server), endpoints.registration, json_body=body)
        except (httpx2.HTTPError, TimeoutError) as exc:
            raise FlowError(f"server '{server}': registering with its authorization server failed "
                            f"({type(exc).__name__})", 502) from None
        client_id = answer.get("client_id")
        if status >= 400 or not isinstance(client_id, str):
            raise FlowError(f"server '{server}': its authorization server refused to register mcphub "
                            f"({_oauth_error(answer, status)}); give oauth.client_id instead", 502)
        client = _Client(client_id, _str(answer.get("client_secret")))
        record = {"client_id": client.client_id, "client_secret": client.client_secret,
                  "redirect_uri": self.redirect_uri(server), "registration": endpoints.registration}
        await self._store.put("client/" + server, self._sealer.seal(json.dumps(record).encode()))
        logger.info("'%s': registered with its authorization server", server)
        return client

    # ---------------------------------------------------------------------------------- helpers

    async def _token_request(self, server: str, endpoints: Endpoints, form: dict[str, str],
                             url: str | None = None) -> tuple[int, dict[str, object]]:
        client = await self._client(server, endpoints)
        auth: httpx2.Auth | None = None
        form = {k: v for k, v in form.items() if v}
        if client.client_secret is not None and "client_secret_basic" in endpoints.auth_methods:
            auth = httpx2.BasicAuth(quote(client.client_id, safe=""), quote(client.client_secret, safe=""))
        else:
            form["client_id"] = client.client_id
            if client.client_secret is not None:
                form["client_secret"] = client.client_secret
        try:
            return await discovery.post(self._server(server), url or endpoints.token, data=form, auth=auth)
        except (httpx2.HTTPError, TimeoutError) as exc:
            why = f"no answer within {discovery.REQUEST_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else \
                type(exc).__name__
            raise ServerUnavailable(f"server '{server}': its authorization server cannot be reached "
                                    f"({why}); retry shortly", retry_after=RETRY_AFTER, server=server) from None

    def _tokens_from(self, answer: dict[str, object], previous_refresh: str | None = None) -> dict[str, object]:
        tokens: dict[str, object] = {"access_token": answer["access_token"],
                                     "refresh_token": answer.get("refresh_token") or previous_refresh,
                                     "scope": answer.get("scope")}
        expires_in = answer.get("expires_in")
        if isinstance(expires_in, (int, float)) and expires_in > 0:
            tokens["expires_at"] = self._clock() + float(expires_in)
            tokens["lifetime"] = float(expires_in)
        return tokens

    async def _save(self, server: str, user: str, tokens: dict[str, object]) -> None:
        await self._store.put(_key(server, user), self._sealer.seal(json.dumps(tokens).encode()))

    async def _tokens(self, server: str, user: str) -> dict[str, object] | None:
        sealed = await self._store.get(_key(server, user))
        plain = None if sealed is None else self._sealer.open(sealed)
        if plain is None:
            return None  # none, or sealed under another MCPHUB_SECRET_KEY: connect again
        data = json.loads(plain)
        return data if isinstance(data, dict) and isinstance(data.get("access_token"), str) else None

    def _open(self, token: str | None, ttl: float, what: str) -> dict[str, object]:
        plain = None if not token else self._sealer.open_link(token, ttl)
        if plain is None:
            raise FlowError(f"this {what} is not valid: it was altered, made by another hub, or is older than "
                            f"{int(ttl // 60)} minutes; call the tool again for a new link")
        data = json.loads(plain)
        if not isinstance(data, dict):
            raise FlowError(f"this {what} is not valid")
        return data

    def _server(self, server: str) -> HttpServer:
        cfg = self.config.servers.get(server)
        if not isinstance(cfg, HttpServer) or cfg.oauth is None:
            names = sorted(n for n in self.config.servers if self.applies_to(n))
            raise NotFound(f"no OAuth server named '{server}' (OAuth servers: {', '.join(names) or 'none'})",
                           server=server)
        return cfg

    def _config_of(self, server: str) -> OAuthClient:
        oauth = self._server(server).oauth
        assert oauth is not None
        return oauth

@dataclass(frozen=True, slots=True)
class _Client:
    client_id: str
    client_secret: str | None


class UserAuth(httpx2.Auth):
    """One user's bearer token on their connection to one server: refreshed before it expires, and
    once more when the server answers 401 (then the request is sent again)."""

    def __init__(self, oauth: OAuth, server: str, user: str) -> None:
        self._oauth = oauth
        self._server = server
        self._user = user

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._oauth.access_token(self._server, self._user)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        try:
            token = await self._oauth.access_token(self._server, self._user, rejected=token)
        except OAuthRequired:
            return  # the 401 stands; the next call asks the user to connect again
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _key(server: str, user: str) -> str:
    return f"token/{server}/{user}"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _printable(text: str, limit: int = 200) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text)[:limit]


def _oauth_error(answer: dict[str, object], status: int) -> str:
    error = answer.get("error")
    description = answer.get("error_description")
    text = f"HTTP {status}"
    if isinstance(error, str):
        text += f", {_printable(error, 64)}"
    if isinstance(description, str):
        text += f": {_printable(description)}"
    return text
