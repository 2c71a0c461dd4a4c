"""Access control through the hub: API keys and their scopes, JWTs (Open WebUI's HS256 session tokens and
a JWKS identity provider on 127.0.0.1), rate limits, CORS preflights, the audit line, and no secret in
any log line, error body, /readyz or /metrics.

In-process throughout (the app through ASGI, the sample server in-process: tests/hub.py); the fake
identity provider is a real HTTP server in a thread, since the hub fetches its keys over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcphub import auth as auth_module
from mcphub.auth import ANONYMOUS, Authenticator
from mcphub.config import AuthConfig, RateLimit
from mcphub.errors import ConfigError, RateLimited, ServerUnavailable, Unauthorized
from mcphub.invoker import Call
from mcphub.logs import LineFormatter
from mcphub.ratelimit import Limit, RateLimiter
from tests.helpers import free_port, serve_in_thread
from tests.hub import assert_error, config_of, core, running_hub, sample_server

pytestmark = pytest.mark.anyio

FULL_KEY = "full-key-5b0f0e3c9d6a4f1e8c2b7a1d"
NARROW_KEY = "narrow-key-71c4d2a9e8f04b3c"
LIMITED_KEY = "limited-key-0d9e8f7a6b5c4d3e"
JWT_SHAPED_KEY = "aGVsbG8.d29ybGQ.a2V5LWxvb2tzLWxpa2UtYS1qd3Q"  # an API key that looks like a JWT
SECRET = "webui-secret-key-3f1e5c7a9b2d4f6e8a0c1e3f5a7b9d1c"
ISSUER = "https://idp.example"
AUDIENCE = "mcphub"
ORIGIN = "https://chat.example"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def hs_token(claims: dict[str, Any], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(secret), algorithms=[alg])


def owui_claims(**extra: Any) -> dict[str, Any]:
    """What Open WebUI puts in its session token (utils/auth.py create_token): the user id, exp, a jti."""
    return {"id": str(uuid.uuid4()), "exp": int(time.time()) + 3600, "jti": str(uuid.uuid4()), **extra}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# ------------------------------------------------------------------------------------------ hubs


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


MAIN_CONFIG = {
    "hub": {"cors_origins": [ORIGIN]},
    "auth": {
        "api_keys": [
            {"name": "full", "key": FULL_KEY},
            {"name": "narrow", "key": NARROW_KEY, "servers": ["sample"], "tools": ["add"]},
            {"name": "limited", "key": LIMITED_KEY, "rate_limit": {"requests": 2, "per": 60}},
            {"name": "shaped", "key": JWT_SHAPED_KEY},
        ],
        "jwt": {"secret": SECRET},
    },
    "servers": {"sample": sample_server(), "other": sample_server()},
}


@pytest.fixture(scope="module")
async def hub():
    async with running_hub(MAIN_CONFIG) as running:
        yield running


class FakeIdp:
    """A JWKS endpoint on 127.0.0.1 whose key set a test can rotate; counts fetches."""

    def __init__(self) -> None:
        self.rsa = {kid: RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})
                    for kid in ("k1", "k2")}
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "e1"})
        self.published = ["k1", "e1"]
        self.fetches = 0

    def document(self) -> dict[str, Any]:
        keys = {**self.rsa, "e1": self.ec}
        return {"keys": [keys[kid].as_dict(private=False) for kid in self.published]}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "alice@example", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, **claims}
        if kid == "e1":
            return jwt.encode({"alg": "ES256", "kid": kid}, body, self.ec, algorithms=["ES256"])
        return jwt.encode({"alg": "RS256", "kid": kid}, body, self.rsa[kid], algorithms=["RS256"])

    def app(self) -> Starlette:
        async def jwks(request: Request) -> JSONResponse:
            self.fetches += 1
            return JSONResponse(self.document())

        return Starlette(routes=[Route("/jwks", jwks)])


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[FakeIdp, str]]:
    fake = FakeIdp()
    with serve_in_thread(fake.app()) as url:
        yield fake, f"{url}/jwks"


@pytest.fixture(scope="module")
async def jwks_hub(idp):
    _, url = idp
    config = {
        "auth": {"jwt": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE,
                         "scopes": {"tools:sample": ["sample"], "role=admin": ["*"]}}},
        "servers": {"sample": sample_server(), "other": sample_server()},
    }
    async with running_hub(config) as running:
        yield running


def jwks_cache(hub) -> Any:
    return core(hub).auth._jwt._jwks


# ------------------------------------------------------------------------------------ API keys


async def test_scoped_key_is_403_on_calls_outside_its_scope_on_both_route_kinds(hub):
    ok = await hub.client.post("/sample/add", json={"a": 1, "b": 2}, headers=bearer(NARROW_KEY))
    assert ok.status_code == 200, ok.text
    error = assert_error(await hub.client.post("/sample/echo", json={"text": "x"}, headers=bearer(NARROW_KEY)),
                         403, "forbidden")
    assert error["tool"] == "echo" and "narrow" in error["message"]
    assert_error(await hub.client.post("/other/add", json={"a": 1, "b": 2}, headers=bearer(NARROW_KEY)),
                 403, "forbidden")
    assert_error(await hub.client.get("/other/openapi.json", headers=bearer(NARROW_KEY)), 403, "forbidden")


async def test_missing_or_unknown_credential_is_401_even_where_the_scope_would_say_403(hub):
    for path in ("/sample/add", "/other/echo", "/nope/add"):
        assert_error(await hub.client.post(path, json={}), 401, "unauthorized")
        assert_error(await hub.client.post(path, json={}, headers=bearer("wrong-key")), 401, "unauthorized")
    response = await hub.client.post("/sample/add", json={}, headers={"Authorization": f"Basic {FULL_KEY}"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_specs_fetched_with_a_scoped_key_list_only_what_it_may_call(hub):
    combined = (await hub.client.get("/openapi.json", headers=bearer(NARROW_KEY))).json()
    assert list(combined["paths"]) == ["/sample/add"]
    one = (await hub.client.get("/sample/openapi.json", headers=bearer(NARROW_KEY))).json()
    assert list(one["paths"]) == ["/add"]
    everything = (await hub.client.get("/openapi.json", headers=bearer(FULL_KEY))).json()
    assert {"/sample/echo", "/other/add"} <= set(everything["paths"])
    public = (await hub.client.get("/openapi.json")).json()  # public_docs: anonymous sees all, calls nothing
    assert "/other/echo" in public["paths"]


async def test_an_api_key_that_looks_like_a_jwt_is_still_a_key(hub):
    response = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(JWT_SHAPED_KEY))
    assert response.status_code == 200, response.text


def test_a_jwt_shaped_value_is_only_a_key_when_no_jwt_is_configured():
    authenticator = Authenticator(AuthConfig(api_keys=[{"name": "k", "key": FULL_KEY}]))
    token = hs_token(owui_claims())
    with pytest.raises(Unauthorized, match="^invalid credential$"):
        authenticator.authenticate(f"Bearer {token}")  # would verify as a JWT, but no jwt: is configured


# ----------------------------------------------------------------------------- JWT (shared secret)


async def test_open_webui_session_token_signed_with_the_shared_secret_is_accepted(hub, caplog):
    caplog.set_level(logging.INFO, logger="mcphub.access")
    claims = owui_claims()
    response = await hub.client.post("/sample/add", json={"a": 2, "b": 3}, headers=bearer(hs_token(claims)))
    assert response.status_code == 200, response.text
    assert f"jwt:{claims['id']} sample/add 200" in caplog.text


def _tampered() -> str:
    header, _, signature = hs_token(owui_claims()).split(".")
    return f"{header}.{b64({'id': 'admin', 'exp': int(time.time()) + 3600})}.{signature}"


BAD_TOKENS = {
    "expired": (lambda: hs_token(owui_claims(exp=int(time.time()) - 3600)), "expired"),
    "not yet valid": (lambda: hs_token(owui_claims(nbf=int(time.time()) + 3600)), "not valid yet"),
    "issued in the future": (lambda: hs_token(owui_claims(iat=int(time.time()) + 3600)), "issued in the future"),
    "alg none": (lambda: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(owui_claims())}.", "algorithm is not accepted"),
    "alg outside algorithms": (lambda: hs_token(owui_claims(), alg="HS512"), "algorithm is not accepted"),
    "tampered payload": (_tampered, "signature does not verify"),
    "signed with another secret": (lambda: hs_token(owui_claims(), secret="another-secret-" + "x" * 32),
                                   "signature does not verify"),
    "no exp": (lambda: hs_token({"id": "u1"}), "missing claim exp"),
    "no subject": (lambda: hs_token({"exp": int(time.time()) + 60}), "names no subject"),
    "garbage segments": (lambda: "bm90.anNvbg.c2ln", "not a well-formed JWT"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_tokens_are_401_with_a_clear_message_that_never_echoes_the_token(hub, kind):
    make, fragment = BAD_TOKENS[kind]
    token = make()
    response = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(token))
    error = assert_error(response, 401, "unauthorized")
    assert fragment in error["message"], error
    for part in token.split("."):
        if len(part) > 8:
            assert part not in response.text


async def test_token_claims_narrow_the_servers_and_tools_it_may_call(hub):
    token = hs_token(owui_claims(mcphub_servers=["sample"], mcphub_tools="add echo"))
    assert (await hub.client.post("/sample/echo", json={"text": "x"}, headers=bearer(token))).status_code == 200
    assert_error(await hub.client.post("/sample/order", json={"color": "red"}, headers=bearer(token)), 403, "forbidden")
    assert_error(await hub.client.post("/other/add", json={"a": 1, "b": 1}, headers=bearer(token)), 403, "forbidden")
    spec = (await hub.client.get("/openapi.json", headers=bearer(token))).json()
    assert set(spec["paths"]) == {"/sample/add", "/sample/echo"}


def test_a_malformed_restricting_claim_allows_nothing():
    authenticator = Authenticator(AuthConfig(jwt={"secret": SECRET}))
    principal = authenticator.require(f"Bearer {hs_token(owui_claims(mcphub_servers={'all': True}))}")
    assert not principal.may_use_server("sample")


def test_jwt_config_refuses_none_and_algorithm_confusion():
    with pytest.raises(ConfigError, match="algorithm 'none' cannot be used with 'secret'"):
        config_of({"auth": {"jwt": {"secret": SECRET, "algorithms": ["none"]}}})
    with pytest.raises(ConfigError, match="algorithm 'HS256' cannot be used with 'jwks_url'"):
        config_of({"auth": {"jwt": {"jwks_url": "https://idp/jwks", "algorithms": ["HS256"]}}})
    assert config_of({"auth": {"jwt": {"jwks_url": "https://idp/jwks"}}}).auth.jwt.accepted_algorithms == [
        "RS256", "ES256"]


# --------------------------------------------------------------------------------------- JWKS


async def test_jwks_tokens_with_issuer_and_audience_are_accepted_rs256_and_es256(jwks_hub, idp):
    fake, _ = idp
    for kid in ("k1", "e1"):
        token = fake.token(kid, scope="tools:sample")
        response = await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(token))
        assert response.status_code == 200, (kid, response.text)


@pytest.mark.parametrize(("claims", "fragment"), [
    ({"iss": "https://evil.example"}, "wrong issuer"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"exp": int(time.time()) - 600}, "expired"),
])
async def test_jwks_tokens_with_wrong_issuer_audience_or_expiry_are_401(jwks_hub, idp, claims, fragment):
    fake, _ = idp
    token = fake.token("k1", scope="tools:sample", **claims)
    error = assert_error(await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(token)),
                         401, "unauthorized")
    assert fragment in error["message"]


async def test_an_hs256_token_keyed_with_the_public_key_is_refused(jwks_hub, idp):
    fake, _ = idp
    public_pem = fake.rsa["k1"].as_pem(private=False)
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{b64(claims)}"  # by hand: joserfc refuses to
    mac = hmac.new(public_pem.encode() if isinstance(public_pem, str) else public_pem,  # key HMAC with a PEM
                   signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    error = assert_error(await jwks_hub.client.post("/sample/add", json={}, headers=bearer(token)), 401, "unauthorized")
    assert "algorithm is not accepted" in error["message"]


async def test_jwt_scopes_map_claims_to_servers(jwks_hub, idp):
    fake, _ = idp
    sample_only = bearer(fake.token("k1", scope="openid tools:sample"))
    assert (await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=sample_only)).status_code == 200
    assert_error(await jwks_hub.client.post("/other/add", json={"a": 1, "b": 1}, headers=sample_only), 403, "forbidden")
    admin = bearer(fake.token("k1", role="admin"))
    assert (await jwks_hub.client.post("/other/add", json={"a": 1, "b": 1}, headers=admin)).status_code == 200
    nothing = bearer(fake.token("k1", scope="openid"))
    assert_error(await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=nothing), 403, "forbidden")
    assert (await jwks_hub.client.get("/openapi.json", headers=nothing)).json()["paths"] == {}


async def test_a_rotated_key_is_fetched_on_its_unknown_kid_and_refetches_are_bounded(jwks_hub, idp):
    fake, _ = idp
    cache = jwks_cache(jwks_hub)
    clock = Clock()
    clock.now = cache.clock() + 10 * auth_module.JWKS_COOLDOWN
    cache.clock = clock
    admin = bearer(fake.token("k1", role="admin"))
    warm = await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=admin)
    assert warm.status_code == 200, warm.text

    fake.published = ["k2", "e1"]  # the provider rotates: k1 retired, k2 new
    before = fake.fetches
    clock.now += auth_module.JWKS_COOLDOWN + 1
    rotated = bearer(fake.token("k2", role="admin"))
    assert (await jwks_hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=rotated)).status_code == 200
    assert fake.fetches == before + 1

    # random kids within the cooldown: refused without asking the provider again
    for i in range(5):
        forged = bearer(fake.token("k1", role="admin").replace(fake.token("k1").split(".")[0],
                                                                b64({"alg": "RS256", "kid": f"r{i}"})))
        assert_error(await jwks_hub.client.post("/sample/add", json={}, headers=forged), 401, "unauthorized")
    assert fake.fetches == before + 1
    fake.published = ["k1", "e1"]


async def test_an_unreachable_jwks_url_is_503_with_retry_after_not_401():
    authenticator = Authenticator(AuthConfig(jwt={"jwks_url": f"http://127.0.0.1:{free_port()}/jwks"}))
    token = FakeIdp().token("k1")
    with anyio.fail_after(10), pytest.raises(ServerUnavailable) as caught:
        await authenticator.require_async(f"Bearer {token}")
    assert caught.value.headers()["Retry-After"] == str(int(auth_module.JWKS_COOLDOWN))
    assert token not in caught.value.message


async def test_a_jwks_answer_over_its_size_bound_is_503_and_read_no_further(caplog: pytest.LogCaptureFixture):
    fake = FakeIdp()
    huge = fake.document()
    huge["padding"] = "x" * (auth_module.JWKS_MAX_BYTES + 1)
    app = Starlette(routes=[Route("/jwks", lambda request: JSONResponse(huge))])
    with serve_in_thread(app) as url:
        authenticator = Authenticator(AuthConfig(jwt={"jwks_url": f"{url}/jwks"}))
        with anyio.fail_after(10), pytest.raises(ServerUnavailable) as caught:
            await authenticator.require_async(f"Bearer {fake.token('k1')}")
    assert "signing keys of auth.jwt.jwks_url could not be fetched" in caught.value.message, caught.value.message
    assert f"(response over {auth_module.JWKS_MAX_BYTES} bytes)" in caplog.text  # the reason: the hub's log


# -------------------------------------------------------------------------------- rate limits


async def test_a_keys_rate_limit_is_429_with_retry_after_and_recovers(hub):
    clock = Clock()
    core(hub).limiter = RateLimiter(clock=clock)
    for _ in range(2):
        response = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(LIMITED_KEY))
        assert response.status_code == 200, response.text
    refused = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(LIMITED_KEY))
    error = assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "30"  # 2 per 60 s: one token every 30 s
    assert "limited" in error["message"] and error["server"] == "sample"
    # other keys have buckets of their own
    assert (await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(FULL_KEY))).status_code == 200
    clock.now += 29
    assert_error(await hub.client.post("/sample/add", json={}, headers=bearer(LIMITED_KEY)), 429, "rate_limited")
    clock.now += 1
    recovered = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(LIMITED_KEY))
    assert recovered.status_code == 200, recovered.text


async def test_server_and_token_subject_limits_apply_across_callers():
    config = {
        "auth": {"api_keys": [{"name": "a", "key": FULL_KEY}, {"name": "b", "key": NARROW_KEY}],
                 "jwt": {"secret": SECRET, "rate_limit": {"requests": 1, "per": 10}},
                 "server_rate_limits": {"other": {"requests": 1, "per": 10}}},
        "servers": {"sample": sample_server(), "other": sample_server()},
    }
    async with running_hub(config) as hub:
        core(hub).limiter = RateLimiter(clock=Clock())
        assert (await hub.client.post("/other/add", json={"a": 1, "b": 1}, headers=bearer(FULL_KEY))).status_code == 200
        error = assert_error(await hub.client.post("/other/add", json={}, headers=bearer(NARROW_KEY)),
                             429, "rate_limited")
        assert "server 'other'" in error["message"]
        alice, bob = hs_token(owui_claims(id="alice")), hs_token(owui_claims(id="bob"))
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(alice))).status_code == 200
        assert_error(await hub.client.post("/sample/add", json={}, headers=bearer(alice)), 429, "rate_limited")
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=bearer(bob))).status_code == 200


def test_a_call_refused_by_one_bucket_spends_no_token_from_the_others():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    key = Limit("key", RateLimit(requests=2, per=10), "credential 'k'")
    server = Limit("server", RateLimit(requests=1, per=10), "server 's'")
    limiter.acquire([key, server])
    with pytest.raises(RateLimited, match="server 's'"):
        limiter.acquire([key, server])
    limiter.acquire([key])  # the refused call left the key's second token in place
    with pytest.raises(RateLimited):
        limiter.acquire([key])


def test_the_number_of_buckets_is_bounded():
    limiter = RateLimiter(clock=Clock(), max_buckets=3)
    for i in range(10):
        limiter.acquire([Limit(("jwt", str(i)), RateLimit(requests=1, per=60), "x")])
    assert len(limiter._buckets) == 3


# ---------------------------------------------------------------------------------------- CORS


PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


async def test_cors_preflight_from_a_listed_origin_is_allowed_without_credentials(hub):
    response = await hub.client.options("/sample/add", headers={"Origin": ORIGIN, **PREFLIGHT})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers
    call = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers={"Origin": ORIGIN, **bearer(FULL_KEY)})
    assert call.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in call.headers["access-control-expose-headers"].lower()


async def test_cors_preflight_from_another_origin_is_denied(hub):
    response = await hub.client.options("/sample/add", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    call = await hub.client.post("/sample/add", json={}, headers={"Origin": "https://evil.example", **bearer(FULL_KEY)})
    assert "access-control-allow-origin" not in call.headers


async def test_cors_is_off_by_default_and_a_wildcard_never_comes_with_credentials():
    async with running_hub({"auth": {"api_keys": [{"name": "k", "key": FULL_KEY}]}}) as hub:
        response = await hub.client.options("/openapi.json", headers={"Origin": ORIGIN, **PREFLIGHT})
        assert "access-control-allow-origin" not in response.headers
    wildcard = {"hub": {"cors_origins": ["*"]}, "auth": {"api_keys": [{"name": "k", "key": FULL_KEY}]}}
    async with running_hub(wildcard) as hub:
        response = await hub.client.options("/openapi.json", headers={"Origin": ORIGIN, **PREFLIGHT})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


# ------------------------------------------------------------------------------ private docs


async def test_private_docs_hide_specs_and_swagger_ui_from_anonymous_callers():
    config = {"hub": {"public_docs": False},
              "auth": {"api_keys": [{"name": "n", "key": NARROW_KEY, "servers": ["sample"]}],
                       "jwt": {"secret": SECRET}},
              "servers": {"sample": sample_server(), "other": sample_server()}}
    async with running_hub(config) as hub:
        for path in ("/openapi.json", "/docs", "/sample/openapi.json", "/sample/docs"):
            assert_error(await hub.client.get(path), 401, "unauthorized")
        assert (await hub.client.get("/sample/docs", headers=bearer(NARROW_KEY))).status_code == 200
        spec = (await hub.client.get("/openapi.json", headers=bearer(hs_token(owui_claims(mcphub_servers="other")))))
        assert spec.status_code == 200 and all(p.startswith("/other/") for p in spec.json()["paths"])
        assert_error(await hub.client.get("/other/openapi.json", headers=bearer(NARROW_KEY)), 403, "forbidden")


# ---------------------------------------------------------------------------- audit and secrets


async def test_audit_line_names_caller_server_tool_status_and_duration_but_not_the_arguments(hub, caplog):
    caplog.set_level(logging.INFO, logger="mcphub.access")
    await hub.client.post("/sample/echo", json={"text": "private words"}, headers=bearer(FULL_KEY))
    await hub.client.post("/sample/echo", json={"text": "x"}, headers=bearer(NARROW_KEY))
    await hub.client.post("/sample/echo", json={"text": "x"})
    lines = [r for r in caplog.records if r.name == "mcphub.access"]
    messages = [r.getMessage() for r in lines]
    assert any(m.startswith("key:full sample/echo 200 ") and m.endswith("ms") for m in messages), messages
    assert any(m.startswith("key:narrow sample/echo 403 ") for m in messages), messages
    assert "- sample/echo 401" in messages
    expected = {"principal": "key:full", "server": "sample", "tool": "echo", "status": 200}
    assert expected.items() <= lines[0].audit.items()
    assert "private words" not in caplog.text


async def test_log_arguments_adds_the_arguments_to_the_audit_line(caplog):
    caplog.set_level(logging.INFO, logger="mcphub.access")
    async with running_hub({"hub": {"log_arguments": True}, "servers": {"sample": sample_server()}}) as hub:
        await hub.client.post("/sample/echo", json={"text": "asked for"})
    assert any(r.getMessage().endswith('{"text": "asked for"}') for r in caplog.records if r.name == "mcphub.access")


async def test_an_argument_no_encoding_can_write_is_escaped_in_the_audit_line():
    """A face that hands the invoker parsed arguments (MCP, runner, CLI) may pass a lone surrogate: the
    audit line escapes it instead of being lost as a "Logging error" when the handler encodes it."""
    written = io.BytesIO()
    handler = logging.StreamHandler(io.TextIOWrapper(written, encoding="utf-8", write_through=True))
    handler.setFormatter(LineFormatter("%(message)s"))
    access = logging.getLogger("mcphub.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        async with running_hub({"hub": {"log_arguments": True}, "servers": {"sample": sample_server()}}) as hub:
            outcome = await core(hub).invoke(Call(ANONYMOUS, "sample", "echo", arguments={"text": "a\ud800b"}))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert outcome.status == 422  # refused before sending (validation.sendable)
    assert 'anonymous:anonymous sample/echo 422' in written.getvalue().decode()
    assert '{"text": "a\\ud800b"}' in written.getvalue().decode()


async def test_no_key_secret_or_token_appears_in_logs_error_bodies_readyz_or_metrics(caplog):
    caplog.set_level(logging.DEBUG)
    secrets = [FULL_KEY, NARROW_KEY, SECRET]
    good, expired = hs_token(owui_claims(id="u-1")), hs_token(owui_claims(exp=int(time.time()) - 60))
    forged = hs_token(owui_claims(), secret="not-the-secret-" + "y" * 32)
    bodies = []
    async with running_hub(MAIN_CONFIG) as hub:
        for credential in (FULL_KEY, NARROW_KEY, good, expired, forged, FULL_KEY + "x", LIMITED_KEY):
            for path, body in (("/sample/add", {"a": 1, "b": 2}), ("/other/echo", {"text": 1}), ("/nope/x", {})):
                bodies.append((await hub.client.post(path, json=body, headers=bearer(credential))).text)
            bodies.append((await hub.client.get("/openapi.json", headers=bearer(credential))).text[:2000])
        bodies.append((await hub.client.get("/readyz")).text)
        bodies.append((await hub.client.get("/metrics")).text)
        bodies.append((await hub.client.get("/")).text)
    assert any("unauthorized" in b for b in bodies) and any("forbidden" in b for b in bodies)
    everything = caplog.text + "\n".join(bodies) + "\n".join(repr(r.__dict__) for r in caplog.records)
    for secret in [*secrets, LIMITED_KEY]:
        assert secret not in everything
    for token in (good, expired, forged):
        assert token.split(".")[2] not in everything  # the signature: no token, whole or in part
