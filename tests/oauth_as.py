"""A real OAuth 2.1 authorization server (authlib's server side) and the remote MCP server it protects,
each on its own uvicorn thread on 127.0.0.1, for tests/test_oauth.py.

The authorization server: authorization code with PKCE (S256 required), refresh tokens (rotated),
RFC 7009 revocation, RFC 8414 metadata and an open RFC 7591 registration endpoint. Its sign-in page
auto-approves whoever the browser logged in as (`GET /login?user=alice` sets a cookie), or refuses
when the browser logged in with `deny=1`.

The MCP server is the SDK's own streamable-HTTP server with its bearer-token check: it answers 401 with
`WWW-Authenticate: Bearer resource_metadata=...`, serves RFC 9728 metadata, and verifies tokens against
the authorization server's store (shared memory, as an introspection call would). Its tool `whoami`
reports the token's subject and serial number (never the token).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Error, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.helpers import free_port, serve_in_thread

SCOPE = "files:read"


@dataclass
class User:
    name: str

    def get_user_id(self) -> str:
        return self.name


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    auth_method: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s == SCOPE)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    code_challenge: str | None
    code_challenge_method: str | None
    resource: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    serial: int
    access_token: str
    refresh_token: str | None
    client_id: str
    user: User
    scope: str
    expires_at: float
    resource: str | None
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> User:
        return self.user

    def get_client(self) -> None:
        return None


@dataclass
class Store:
    """Everything the authorization server knows; the tests read `grants` and `revoked`."""

    expires_in: int = 3600
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)  # by access token
    grants: list[tuple[str, str]] = field(default_factory=list)  # (grant type, user) per token issued
    revocations: list[str] = field(default_factory=list)  # users whose tokens were revoked
    resources: list[str | None] = field(default_factory=list)  # the `resource` of each authorization request
    rejected: int = 0  # bearer tokens the MCP server refused (expired, revoked, unknown)
    unavailable: bool = False  # the token endpoint answers 503 (a proxy in front of a server that is down)
    refreshes: list[str] = field(default_factory=list)  # the refresh token of each refresh request, as sent
    lock: threading.Lock = field(default_factory=threading.Lock)
    serials: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def by_refresh(self, refresh_token: str) -> Token | None:
        return next((t for t in self.tokens.values() if t.refresh_token == refresh_token), None)


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return self._values

    @property
    def datalist(self) -> dict[str, list[str]]:
        return {k: [v] for k, v in self._values.items()}


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: Request, form: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = form
        self.payload = _Payload({**self._args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, store: Store) -> None:
        super().__init__(scopes_supported=[SCOPE])
        self.store = store
        self.register_token_generator("default", self._token)

    def _token(self, grant_type: str, client: Client, user: User | None = None, scope: str | None = None,
               expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        token = {"token_type": "Bearer", "access_token": generate_token(32), "expires_in": self.store.expires_in,
                 "scope": scope or ""}
        if include_refresh_token:
            token["refresh_token"] = generate_token(40)
        return token

    def query_client(self, client_id: str) -> Client | None:
        return self.store.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        grant_type = request.payload.data.get("grant_type", "")
        resource = request.payload.data.get("resource")
        if request.authorization_code is not None:
            resource = request.authorization_code.resource
        with self.store.lock:
            self.store.tokens[token["access_token"]] = Token(
                next(self.store.serials), token["access_token"], token.get("refresh_token"),
                request.client.client_id, request.user, token.get("scope", ""),
                time.time() + token["expires_in"], resource)
            self.store.grants.append((grant_type, request.user.name))

    def get_error_uri(self, request: Any, error: Any) -> None:
        return None

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        headers = dict(headers)
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=headers)
        return Response(body or b"", status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: _Request) -> None:
        data = request.payload.data
        store: Store = self.server.store
        store.codes[code] = Code(code, request.client.client_id, data.get("redirect_uri", ""),
                                 request.payload.scope or "", request.user, data.get("code_challenge"),
                                 data.get("code_challenge_method"), data.get("resource"))

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found: Code | None = self.server.store.codes.get(code)
        return found if found is not None and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.store.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> User:
        return authorization_code.user


class _RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        found = self.server.store.by_refresh(refresh_token)
        return None if found is None or found.revoked else found

    def authenticate_user(self, refresh_token: Token) -> User:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.revoked = True


class _Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        store: Store = self.server.store
        return store.tokens.get(token_string) or store.by_refresh(token_string)

    def revoke_token(self, token: Token, request: Any) -> None:
        token.revoked = True
        self.server.store.revocations.append(token.user.name)


class AuthorizationServerApp:
    """The authorization server's ASGI app over a `Store`."""

    def __init__(self, store: Store, *, registration: bool = True) -> None:
        self.store = store
        self.url = ""  # set once it listens
        self.registration = registration
        self.server = _Server(store)
        self.server.register_grant(_CodeGrant, [CodeChallenge(required=True)])
        self.server.register_grant(_RefreshGrant)
        self.server.register_endpoint(_Revocation)
        self.app = Starlette(routes=[
            Route("/.well-known/oauth-authorization-server", self.metadata),
            Route("/login", self.login),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
            Route("/revoke", self.revoke, methods=["POST"]),
            Route("/register", self.register, methods=["POST"]),
        ])

    async def metadata(self, request: Request) -> Response:
        body = {"issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token", "revocation_endpoint": f"{self.url}/revoke",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"], "scopes_supported": [SCOPE],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"]}
        if self.registration:
            body["registration_endpoint"] = f"{self.url}/register"
        return JSONResponse(body)

    async def login(self, request: Request) -> Response:
        response = HTMLResponse("logged in")
        response.set_cookie("user", request.query_params.get("user", ""))
        response.set_cookie("deny", request.query_params.get("deny", ""))
        return response

    async def authorize(self, request: Request) -> Response:
        user = request.cookies.get("user")
        if not user:
            return HTMLResponse("log in first", status_code=401)
        oauth_request = _Request(request, {})
        self.store.resources.append(request.query_params.get("resource"))
        grant_user = None if request.cookies.get("deny") else User(user)
        try:
            grant = self.server.get_consent_grant(oauth_request, end_user=grant_user)
        except OAuth2Error as exc:
            return JSONResponse(dict(exc.get_body()), status_code=exc.status_code)
        response: Response = self.server.create_authorization_response(oauth_request, grant_user=grant_user,
                                                                       grant=grant)
        return response

    async def token(self, request: Request) -> Response:
        if self.store.unavailable:
            return HTMLResponse("<h1>503 Service Unavailable</h1>", status_code=503)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if form.get("grant_type") == "refresh_token":
            self.store.refreshes.append(form.get("refresh_token", ""))
        response: Response = self.server.create_token_response(_Request(request, form))
        return response

    async def revoke(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        response: Response = self.server.create_endpoint_response("revocation", _Request(request, form))
        return response

    async def register(self, request: Request) -> Response:
        body = await request.json()
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        client = Client(generate_token(16), None if method == "none" else generate_token(32),
                        list(body.get("redirect_uris") or []), method)
        self.store.clients[client.client_id] = client
        answer = {"client_id": client.client_id, "redirect_uris": client.redirect_uris,
                  "token_endpoint_auth_method": method, "grant_types": ["authorization_code", "refresh_token"]}
        if client.client_secret is not None:
            answer["client_secret"] = client.client_secret
        return JSONResponse(answer, status_code=201)


class _Verifier:
    """The MCP server's token check: the authorization server's own record of the token."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        found = self.store.tokens.get(token)
        if found is None or found.revoked or found.is_expired():
            self.store.rejected += 1
            return None
        return AccessToken(token=token, client_id=found.client_id, scopes=found.scope.split(),
                           expires_at=int(found.expires_at), resource=found.resource, subject=found.user.name)


def protected_server(store: Store, issuer: str, url: str) -> Starlette:
    """The remote MCP server at `url` (…/mcp), whose tokens `issuer` issues."""
    mcp = MCPServer("files", token_verifier=_Verifier(store),
                    auth=AuthSettings(issuer_url=issuer, resource_server_url=url, required_scopes=[SCOPE],
                                      validate_token_resource=True))

    @mcp.tool()
    def whoami() -> dict[str, Any]:
        """Who the bearer token was issued to, and which token it is (its serial number)."""
        token = get_access_token()
        assert token is not None
        found = store.tokens[token.token]
        return {"subject": token.subject, "serial": found.serial}

    app: Starlette = mcp.streamable_http_app(stateless_http=True, json_response=True)
    return app


@dataclass
class Upstream:
    """The authorization server and the MCP server it protects, both listening."""

    store: Store
    issuer: str
    mcp_url: str
    authorization_server: AuthorizationServerApp


@contextlib.contextmanager
def upstream(*, expires_in: int = 3600, registration: bool = True) -> Iterator[Upstream]:
    store = Store(expires_in=expires_in)
    as_port, mcp_port = free_port(), free_port()
    issuer, mcp_url = f"http://127.0.0.1:{as_port}", f"http://127.0.0.1:{mcp_port}/mcp"
    authorization = AuthorizationServerApp(store, registration=registration)
    authorization.url = issuer
    with _serving(authorization.app, as_port), _serving(protected_server(store, issuer, mcp_url), mcp_port):
        yield Upstream(store, issuer, mcp_url, authorization)


@contextlib.contextmanager
def _serving(app: Any, port: int) -> Iterator[None]:
    """uvicorn on 127.0.0.1:`port` in a thread, with the app's lifespan (the MCP server's session manager)."""
    with serve_in_thread(app, port=port, lifespan="on"):
        yield


def login_url(issuer: str, user: str, *, deny: bool = False) -> str:
    return f"{issuer}/login?" + urlencode({"user": user, "deny": "1" if deny else ""})
