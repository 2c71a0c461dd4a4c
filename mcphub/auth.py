"""Who is calling, and what they may call.

Credentials arrive as `Authorization: Bearer <credential>`: an API key, or a JWT when `auth.jwt` is set.

API keys are held only as SHA-256 digests and compared in constant time against every configured
digest (no early exit), so neither a wrong key nor a right one is faster to check. A presented value is
always checked against the keys first, so a key that happens to look like a JWT still works; it is
verified as a JWT only when it is not a key, JWT verification is configured, and it has a JWT's shape
(three dot-separated base64url segments).

JWTs are verified with joserfc (authlib's JOSE implementation; `authlib.jose` is deprecated in its
favour): with an HMAC shared secret (`auth.jwt.secret`: how Open WebUI forwards the signed-in user's
session token, signed with WEBUI_SECRET_KEY, claims `{"id": ..., "exp": ...}`) or with the public keys
of a JWKS URL (`auth.jwt.jwks_url`, RS256/ES256 by default). Refused with 401: a bad signature, an
algorithm outside `auth.jwt.algorithms` (so `alg: none` too), `exp` in the past or missing (unless
`require_exp: false`), `nbf` or `iat` in the future, an `iss` other than `issuer`, an `aud` without
`audience`, a token naming no subject. Clock skew allowed: CLOCK_SKEW seconds. No message echoes the
token or a claim from it.

Scopes: an API key has its configured `servers` and `tools`. A JWT may use every server, unless
`auth.jwt.scopes` is set: then only the servers its matching entries list (keys are `claim=value`, or a
bare value of the `scope`/`scp` claim). A token's own `mcphub_servers` / `mcphub_tools` claims (a list
or a space-separated string) narrow that further. The principal's name is the token's `sub`, else
`email`, else `id` (Open WebUI).

JWKS keys are fetched with httpx2 when first needed, cached, refetched when a token names an unknown
`kid` (at most once per JWKS_COOLDOWN seconds, so random kids cannot make the hub hammer the identity
provider) and after JWKS_MAX_AGE seconds; the response is bounded in size and key count. The async
`prepare()` does the fetching; the sync checks (`authenticate`, `require`) only read the cache.
Knows nothing of MCP or the supervisor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import httpx2

from mcphub.bounded import read_bounded
from mcphub.config import AuthConfig, ForwardedUser, JwtConfig, RateLimit, UserConfig, key_hash
from mcphub.errors import Forbidden, ServerUnavailable, Unauthorized
from mcphub.ratelimit import Limit

# joserfc (with the parts of cryptography it needs, ~2 MiB) is imported where a token is checked, so a hub
# without auth.jwt or a forwarded-user JWT never loads it (tests/test_cost_fences.py).
if TYPE_CHECKING:
    from joserfc import jwt
    from joserfc.jwk import Key, OctKey

logger = logging.getLogger(__name__)

_ALL = frozenset({"*"})
CLOCK_SKEW = 30  # seconds of leeway on exp / nbf / iat
JWKS_COOLDOWN = 30.0  # seconds: at least this long between two fetches of the key set
JWKS_MAX_AGE = 600.0  # seconds: refetch a key set this old when next needed
JWKS_TIMEOUT = 5.0  # seconds for one fetch
JWKS_MAX_BYTES = 256 * 1024
JWKS_MAX_KEYS = 64
MAX_TOKEN_CHARS = 16 * 1024  # a bigger bearer value is refused before any parsing
MAX_NAME_CHARS = 128
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e\u00a0-\uffff]")  # no spaces or controls: one token in a log line


def _key_type(alg: str) -> type[Key] | None:
    """The joserfc key class an algorithm (RS256, ES384, ...) verifies with."""
    from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

    types: dict[str, type[Key]] = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey, "HS": OctKey}
    return types.get(alg[:2])


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or, when no credential is configured at all, the anonymous one)."""

    name: str
    servers: frozenset[str] = _ALL
    tools: frozenset[str] | None = None  # None: every tool of the allowed servers
    kind: str = "key"  # "key", "jwt" or "anonymous": with `name`, who the audit line names
    rate_limit: RateLimit | None = None
    # a forwarded user's: the request headers that named them (the user JWT, or the plain headers), passed
    # on to a mounted hub with the call, so that it acts as the same user (never logged, never to a server)
    vouchers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def audit_name(self) -> str:
        return f"{self.kind}:{self.name}"

    def may_use_server(self, server: str) -> bool:
        return "*" in self.servers or server in self.servers

    def may_call(self, server: str, tool: str) -> bool:
        return self.may_use_server(server) and (self.tools is None or tool in self.tools)

    def check(self, server: str, tool: str | None = None) -> None:
        if not self.may_use_server(server):
            raise Forbidden(f"credential '{self.name}' may not use server '{server}'", server=server, tool=tool)
        if tool is not None and not self.may_call(server, tool):
            raise Forbidden(f"credential '{self.name}' may not call tool '{tool}'", server=server, tool=tool)


ANONYMOUS = Principal(name="anonymous", kind="anonymous")


class Authenticator:
    def __init__(self, config: AuthConfig, *, extra_keys: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        entries: list[tuple[bytes, Principal]] = []
        self._forwarding: dict[str, _Forwarding] = {}
        for key in config.api_keys:
            principal = Principal(
                name=key.name,
                servers=frozenset(key.servers),
                tools=frozenset(key.tools) if key.tools is not None else None,
                rate_limit=key.rate_limit,
            )
            entries.append((_digest_bytes(key.digest), principal))
            if key.forwarded_user is not None:
                self._forwarding[key.name] = _Forwarding(key.forwarded_user, config.users)
        for i, extra in enumerate(k for k in extra_keys if k):
            entries.append((_digest_bytes(key_hash(extra)), Principal(name="api-key" if i == 0 else f"api-key-{i}")))
        self._entries = entries
        self._server_limits = dict(config.server_rate_limits)
        self._jwt = _JwtVerifier(config.jwt, clock=clock) if config.jwt is not None else None

    @property
    def enabled(self) -> bool:
        """True once any credential is configured: from then on every call needs one."""
        return bool(self._entries) or self._jwt is not None

    async def prepare(self, authorization: str | None) -> None:
        """Fetch what checking this header will need (JWKS keys). Never raises: failures are the check's."""
        if self._jwt is None or not self._jwt.remote:
            return
        token = _bearer(authorization, strict=False)
        if token is not None and _JWT_SHAPE.match(token) and self._key_for(token) is None:
            await self._jwt.prepare(token)

    def authenticate(self, authorization: str | None, headers: Mapping[str, str] | None = None) -> Principal | None:
        """The caller for this Authorization header; None when no credential was sent. With the request's
        `headers`, a key that trusts a front end to name its users (`forwarded_user`) is that user.

        Raises Unauthorized for a malformed header or an unknown or invalid credential (and
        ServerUnavailable when the identity provider's keys could not be fetched). JWKS keys come from
        the cache only: `await prepare(authorization)` first.
        """
        token = _bearer(authorization, strict=True)
        if token is None:
            return None
        found = self._key_for(token)
        if found is not None:
            forwarding = self._forwarding.get(found.name) if headers is not None else None
            return found if forwarding is None or headers is None else forwarding.user(found, headers)
        if self._jwt is not None and _JWT_SHAPE.match(token):
            return self._jwt.verify(token)
        raise Unauthorized("invalid credential")

    def require(self, authorization: str | None, headers: Mapping[str, str] | None = None) -> Principal:
        """The caller, who must have sent a valid credential if any is configured."""
        principal = self.authenticate(authorization, headers)
        if principal is not None:
            return principal
        if self.enabled:
            raise Unauthorized("missing credential: send 'Authorization: Bearer <key>'")
        return ANONYMOUS

    async def require_async(self, authorization: str | None, headers: Mapping[str, str] | None = None) -> Principal:
        await self.prepare(authorization)
        return self.require(authorization, headers)

    def limits_for(self, principal: Principal, server: str) -> list[Limit]:
        """The rate-limit buckets a call by `principal` to `server` takes a token from."""
        limits = []
        if principal.rate_limit is not None:
            limits.append(Limit((principal.kind, principal.name), principal.rate_limit,
                                f"credential '{principal.name}'"))
        elif principal.kind == "jwt" and self._jwt is not None and self._jwt.rate_limit is not None:
            limits.append(Limit(("jwt", principal.name), self._jwt.rate_limit, f"token subject '{principal.name}'"))
        if server in self._server_limits:
            limits.append(Limit(("server", server), self._server_limits[server], f"server '{server}'"))
        return limits

    def _key_for(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(digest, presented) and found is None:
                found = principal
        return found


USER_JWT_HEADER = "x-openwebui-user-jwt"  # Open WebUI with FORWARD_USER_INFO_HEADER_JWT_SECRET set
USER_HEADERS = ("x-openwebui-user-email", "x-openwebui-user-id")  # ENABLE_FORWARD_USER_INFO_HEADERS, plain
USER_JWT_ISSUER = "open-webui"


class _Forwarding:
    """One key's trust in the users its front end names: the user a request is for, as a Principal."""

    def __init__(self, config: ForwardedUser, users: Mapping[str, UserConfig]) -> None:
        self._headers = config.headers
        self._users = users
        self._secret: OctKey | None = None
        if config.jwt_secret is not None:
            from joserfc import errors as jose_errors
            from joserfc.jwk import OctKey

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                self._secret = OctKey.import_key(config.jwt_secret)

    def user(self, key: Principal, headers: Mapping[str, str]) -> Principal:
        """The user the request names (the key itself when it names none). A user token that does not
        verify is a 401: a front end that sends one means the call to be that user's."""
        name: str | None = None
        vouchers: tuple[tuple[str, str], ...] = ()
        token = headers.get(USER_JWT_HEADER) if self._secret is not None else None
        if token is not None:
            name, vouchers = self._verified(token), ((USER_JWT_HEADER, token),)
        elif self._headers:
            name = next((headers[h] for h in USER_HEADERS if headers.get(h)), None)
            vouchers = tuple((h, headers[h]) for h in USER_HEADERS if headers.get(h))
        if name is None:
            return key
        return user_principal(key, name, self._users.get(name), vouchers)

    def _verified(self, token: str) -> str:
        from joserfc import errors as jose_errors
        from joserfc import jwt

        assert self._secret is not None
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid forwarded user token (X-OpenWebUI-User-Jwt): too long")
        registry = jwt.JWTClaimsRegistry(now=None, leeway=CLOCK_SKEW, exp={"essential": True},
                                         iss={"essential": True, "value": USER_JWT_ISSUER})
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"]).claims
            registry.validate(claims)
        except jose_errors.ExpiredTokenError:
            raise Unauthorized("invalid forwarded user token (X-OpenWebUI-User-Jwt): expired") from None
        except (jose_errors.MissingClaimError, jose_errors.InvalidClaimError) as exc:
            raise Unauthorized(f"invalid forwarded user token (X-OpenWebUI-User-Jwt): claim '{exc.claim}' "
                               f"missing or wrong (iss must be '{USER_JWT_ISSUER}', exp is required)") from None
        except (jose_errors.JoseError, ValueError, TypeError):
            raise Unauthorized("invalid forwarded user token (X-OpenWebUI-User-Jwt): it does not verify with "
                               "the key's forwarded_user.jwt_secret") from None
        name = next((claims[c] for c in ("email", "sub") if isinstance(claims.get(c), str) and claims[c]), None)
        if name is None:
            raise Unauthorized("invalid forwarded user token (X-OpenWebUI-User-Jwt): it names no user (email, sub)")
        return str(name)


def user_principal(key: Principal, name: str, user: UserConfig | None,
                   vouchers: tuple[tuple[str, str], ...] = ()) -> Principal:
    """User `name` acting through `key`: the scopes of both (the narrower wins), the user's rate limit if
    it has one (else the key's, in a bucket of the user's own). `user`: its auth.users entry, if listed."""
    servers, tools = key.servers, key.tools
    if user is not None:
        servers = _narrower(servers, frozenset(user.servers))
        if user.tools is not None:
            tools = frozenset(user.tools) if tools is None else tools & frozenset(user.tools)
    rate_limit = user.rate_limit if user is not None and user.rate_limit is not None else key.rate_limit
    return Principal(name=_printable(name)[:MAX_NAME_CHARS], servers=servers, tools=tools, kind="user",
                     rate_limit=rate_limit, vouchers=vouchers)


def _narrower(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """The servers both allow (`*`: all)."""
    return b if "*" in a else a if "*" in b else a & b


class _JwtVerifier:
    def __init__(self, config: JwtConfig, *, clock: Callable[[], float]) -> None:
        self.algorithms = list(config.accepted_algorithms)
        self.rate_limit = config.rate_limit
        self._config = config
        self._scopes = [(_scope_pattern(k), frozenset(v)) for k, v in config.scopes.items()]
        self._secret: OctKey | None = None
        self.remote = config.jwks_url is not None
        if config.secret is not None:
            from joserfc import errors as jose_errors
            from joserfc.jwk import OctKey

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                self._secret = OctKey.import_key(config.secret)
            if len(config.secret.encode("utf-8")) < 32:
                logger.warning("auth.jwt.secret is shorter than 32 bytes: a short HMAC secret can be guessed "
                               "offline from one token; use a long random one (openssl rand -hex 32)")
        self._jwks = _KeySetCache(config.jwks_url, clock=clock) if config.jwks_url is not None else None

    async def prepare(self, token: str) -> None:
        assert self._jwks is not None
        try:
            header = _header(token)
        except Unauthorized:
            return
        kid = header.get("kid")
        await self._jwks.ensure(kid if isinstance(kid, str) else None)

    def verify(self, token: str) -> Principal:
        from joserfc import errors as jose_errors
        from joserfc import jwt

        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid token: too long")
        header = _header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized(f"invalid token: its algorithm is not accepted (auth.jwt.algorithms: "
                               f"{', '.join(self.algorithms)})")
        key = self._secret if self._secret is not None else self._public_key(header)
        try:
            claims = jwt.decode(token, key, algorithms=self.algorithms).claims
            self._registry().validate(claims)
        except jose_errors.ExpiredTokenError:
            raise Unauthorized("invalid token: expired") from None
        except jose_errors.MissingClaimError as exc:
            raise Unauthorized(f"invalid token: missing claim {exc.claim}") from None
        except jose_errors.InvalidClaimError as exc:
            raise Unauthorized(_claim_message(exc.claim)) from None
        except jose_errors.BadSignatureError:
            raise Unauthorized("invalid token: the signature does not verify") from None
        except (jose_errors.JoseError, ValueError, TypeError):
            raise Unauthorized("invalid token: cannot be decoded or verified") from None
        return self._principal(claims)

    def _registry(self) -> jwt.JWTClaimsRegistry:
        from joserfc import jwt

        options: dict[str, jwt.ClaimsOption] = {"exp": {"essential": self._config.require_exp}}
        if self._config.issuer is not None:
            options["iss"] = {"essential": True, "value": self._config.issuer}
        if self._config.audience is not None:
            options["aud"] = {"essential": True, "value": self._config.audience}
        return jwt.JWTClaimsRegistry(now=None, leeway=CLOCK_SKEW, **options)

    def _public_key(self, header: Mapping[str, object]) -> Key:
        assert self._jwks is not None
        kid = header.get("kid")
        key = self._jwks.get(kid if isinstance(kid, str) else None, str(header.get("alg")))
        if key is None:
            if not self._jwks.loaded:
                raise ServerUnavailable("cannot check the token: the signing keys of auth.jwt.jwks_url could not "
                                        "be fetched (see the hub's log)", retry_after=int(JWKS_COOLDOWN))
            raise Unauthorized("invalid token: signed with a key the identity provider does not publish")
        return key

    def _principal(self, claims: Mapping[str, object]) -> Principal:
        name = next((claims[c] for c in ("sub", "email", "id") if isinstance(claims.get(c), str | int)), None)
        if name is None or str(name) == "":
            raise Unauthorized("invalid token: it names no subject (sub, email or id)")
        servers: frozenset[str] = _ALL
        if self._scopes:
            servers = frozenset().union(*(targets for match, targets in self._scopes if match(claims)))
        own = _names(claims.get("mcphub_servers"))
        if own is not None and "*" not in own:
            servers = own if "*" in servers else servers & own
        return Principal(name=_printable(str(name)), servers=servers, tools=_names(claims.get("mcphub_tools")),
                         kind="jwt", rate_limit=self.rate_limit)


class _KeySetCache:
    """The public keys of one JWKS URL: fetched lazily, refreshed on an unknown kid or with age, bounded."""

    def __init__(self, url: str, *, clock: Callable[[], float]) -> None:
        self.url = url
        self.clock = clock
        self._keys: list[Key] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = anyio.Lock()

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    def get(self, kid: str | None, alg: str) -> Key | None:
        wanted = _key_type(alg)
        fitting = [k for k in self._keys if wanted is not None and isinstance(k, wanted)
                   and k.get("alg") in (None, alg) and k.get("use") in (None, "sig")]
        if kid is not None:
            return next((k for k in fitting if k.kid == kid), None)
        return fitting[0] if len(fitting) == 1 else None  # no kid: only an unambiguous key will do

    async def ensure(self, kid: str | None) -> None:
        if self._fresh() and (kid is None or any(k.kid == kid for k in self._keys)):
            return
        async with self._lock:  # one fetch at a time; the others then find its keys
            if self._fresh() and (kid is None or any(k.kid == kid for k in self._keys)):
                return
            now = self.clock()
            if self._attempted_at is not None and now - self._attempted_at < JWKS_COOLDOWN:
                return
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except Exception as exc:  # every failure is the same to a caller: keys unavailable
                expected = isinstance(exc, httpx2.HTTPError | ValueError | OSError)  # else a bug: its traceback
                logger.warning("cannot fetch JWKS from %s: %s%s", _safe_url(self.url), type(exc).__name__,
                               f" ({exc})" if isinstance(exc, ValueError) else "", exc_info=None if expected else exc)
                return
            self._keys = keys
            self._fetched_at = now
            logger.info("JWKS from %s: %d keys (%s)", _safe_url(self.url), len(keys),
                        ", ".join(str(k.kid) for k in keys))

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self.clock() - self._fetched_at < JWKS_MAX_AGE

    async def _fetch(self) -> list[Key]:
        from joserfc import errors as jose_errors
        from joserfc.jwk import KeySet, import_key

        async with httpx2.AsyncClient(timeout=JWKS_TIMEOUT, follow_redirects=False) as client:
            async with client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                data = await read_bounded(response, JWKS_MAX_BYTES)
                if data is None:
                    raise ValueError(f"response over {JWKS_MAX_BYTES} bytes")
        document = json.loads(data)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK set (no 'keys' list)")
        keys: list[Key] = []
        for entry in document["keys"][:JWKS_MAX_KEYS]:
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # never an 'oct' key from the network: that would be a shared secret anyone can read
            public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", jose_errors.SecurityWarning)
                    keys.append(import_key(public))
            except (jose_errors.JoseError, ValueError, TypeError):
                logger.warning("JWKS from %s: skipping a key that cannot be imported (kid %r)",
                               _safe_url(self.url), str(entry.get("kid"))[:64])
        KeySet(keys)  # validates the set as a whole
        return keys


def _bearer(authorization: str | None, *, strict: bool) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        if strict:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return None
    return token


def _header(token: str) -> Mapping[str, object]:
    from joserfc import errors as jose_errors
    from joserfc import jws

    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (jose_errors.JoseError, ValueError, TypeError, UnicodeError):
        raise Unauthorized("invalid token: not a well-formed JWT") from None
    if not isinstance(header, dict):
        raise Unauthorized("invalid token: not a well-formed JWT")
    return header


def _claim_message(claim: str) -> str:
    return {
        "nbf": "invalid token: not valid yet (nbf)",
        "iat": "invalid token: issued in the future (iat)",
        "iss": "invalid token: wrong issuer (see auth.jwt.issuer)",
        "aud": "invalid token: wrong audience (see auth.jwt.audience)",
        "exp": "invalid token: bad expiry (exp)",
    }.get(claim, "invalid token: a claim has an invalid value")


def _scope_pattern(entry: str) -> Callable[[Mapping[str, object]], bool]:
    """`claim=value`: the claim equals value or (a list, or for scope/scp a space-separated string) holds
    it. A bare `value`: the `scope` or `scp` claim holds it."""
    claim, sep, value = entry.partition("=")
    claims = (claim,) if sep else ("scope", "scp")
    value = value if sep else entry

    def match(token_claims: Mapping[str, object]) -> bool:
        for name in claims:
            held = token_claims.get(name)
            if isinstance(held, str) and name in ("scope", "scp"):
                held = held.split()
            if isinstance(held, list):
                if value in (str(v) for v in held):
                    return True
            elif held is not None and not isinstance(held, dict):
                text = str(held).lower() if isinstance(held, bool) else str(held)
                if text == value:
                    return True
        return False

    return match


def _names(value: object) -> frozenset[str] | None:
    """A restricting claim as names; None when absent. A malformed one allows nothing rather than all."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


def _printable(name: str) -> str:
    return _UNPRINTABLE.sub("?", name)[:MAX_NAME_CHARS]


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _digest_bytes(digest: str) -> bytes:
    return bytes.fromhex(digest.removeprefix("sha256:"))
