"""A front end that holds a key names the user it calls for (issue #16, first part): Open WebUI's forwarded
user info, as an HS256 JWT in `X-OpenWebUI-User-Jwt` (FORWARD_USER_INFO_HEADER_JWT_SECRET) or, where the key
says `headers: true`, plain `X-OpenWebUI-User-*` headers. The user's scopes narrow the key's, rate limits
and the audit line are per user, a bad user token is 401; both faces."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from tests.hub import assert_error, core, running_hub, sample_server
from tests.hub import mcp_client as hub_mcp_client

pytestmark = pytest.mark.anyio

KEY = "owui-tools-key-0123456789abcdef"
PLAIN_KEY = "plain-headers-key-0123456789abc"
SECRET = "owui-forward-secret-" + "s" * 24
CONFIG = {
    "auth": {
        "api_keys": [
            {"name": "openwebui", "key": KEY, "forwarded_user": {"jwt_secret": SECRET},
             "rate_limit": {"requests": 2, "per": 3600}},
            {"name": "lan", "key": PLAIN_KEY, "forwarded_user": {"headers": True}},
        ],
        "users": {
            "alice@example.com": {"servers": ["*"]},
            "bob@example.com": {"servers": ["other"], "tools": ["echo"]},
        },
    },
    "servers": {"sample": sample_server(), "other": sample_server()},
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def user_token(email: str, *, secret: str = SECRET, issuer: str = "open-webui", expires_in: int = 300,
               **extra: Any) -> str:
    """What Open WebUI sends with FORWARD_USER_INFO_HEADER_JWT_SECRET set (its claims, HS256)."""
    now = int(time.time())
    claims = {"iss": issuer, "sub": f"id-of-{email}", "email": email, "name": email.split("@")[0],
              "role": "user", "iat": now, "exp": now + expires_in, **extra}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret), algorithms=["HS256"])


def as_user(email: str, **options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", "X-OpenWebUI-User-Jwt": user_token(email, **options)}


async def test_a_forwarded_user_acts_within_the_key_and_their_own_scopes():
    async with running_hub(CONFIG) as hub:
        alice = await hub.client.post("/sample/echo", json={"text": "hi"}, headers=as_user("alice@example.com"))
        assert alice.status_code == 200, alice.text
        bob = await hub.client.post("/sample/echo", json={"text": "hi"}, headers=as_user("bob@example.com"))
        assert assert_error(bob, 403, "forbidden")["message"] == (
            "credential 'bob@example.com' may not use server 'sample'")
        bob_other = await hub.client.post("/other/echo", json={"text": "hi"}, headers=as_user("bob@example.com"))
        assert bob_other.status_code == 200, bob_other.text
        bob_add = await hub.client.post("/other/add", json={"a": 1, "b": 2}, headers=as_user("bob@example.com"))
        assert_error(bob_add, 403, "forbidden")
        spec = (await hub.client.get("/openapi.json", headers=as_user("bob@example.com"))).json()
        assert list(spec["paths"]) == ["/other/echo"]  # the per-user view of the specs
        carol = await hub.client.post("/sample/add", json={"a": 1, "b": 2}, headers=as_user("carol@example.com"))
        assert carol.status_code == 200, carol.text  # not listed: the key's rights


async def test_rate_limits_and_audit_lines_are_per_user(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="mcphub.access")
    async with running_hub(CONFIG) as hub:
        for _ in range(2):
            assert (await hub.client.post("/sample/pid", headers=as_user("alice@example.com"))).status_code == 200
        limited = await hub.client.post("/sample/pid", headers=as_user("alice@example.com"))
        assert_error(limited, 429, "rate_limited")
        other_user = await hub.client.post("/sample/pid", headers=as_user("carol@example.com"))
        assert other_user.status_code == 200, other_user.text  # a bucket of her own
    lines = [r.getMessage() for r in caplog.records if r.name == "mcphub.access"]
    assert any(m.startswith("user:alice@example.com sample/pid 200") for m in lines), lines
    assert any(m.startswith("user:alice@example.com sample/pid 429") for m in lines), lines
    assert any(m.startswith("user:carol@example.com sample/pid 200") for m in lines), lines


@pytest.mark.parametrize("token,message", [
    (lambda: user_token("alice@example.com", secret="not-the-secret-" + "x" * 24),
     "it does not verify with the key's forwarded_user.jwt_secret"),
    (lambda: user_token("alice@example.com", expires_in=-120), "expired"),
    (lambda: user_token("alice@example.com", issuer="someone-else"), "claim 'iss' missing or wrong"),
    (lambda: "not.a.jwt", "it does not verify"),
])
async def test_a_forged_expired_or_foreign_user_token_is_401(token: Any, message: str):
    async with running_hub(CONFIG) as hub:
        response = await hub.client.post("/sample/echo", json={"text": "hi"},
                                         headers={"Authorization": f"Bearer {KEY}", "X-OpenWebUI-User-Jwt": token()})
        error = assert_error(response, 401, "unauthorized")
        assert error["message"].startswith("invalid forwarded user token (X-OpenWebUI-User-Jwt)"), error
        assert message in error["message"], error


async def test_plain_user_headers_count_only_where_the_key_says_so():
    async with running_hub(CONFIG) as hub:
        ignored = await hub.client.post("/sample/echo", json={"text": "hi"}, headers={
            "Authorization": f"Bearer {KEY}", "X-OpenWebUI-User-Email": "bob@example.com"})
        assert ignored.status_code == 200, ignored.text  # the key itself: bob's narrower scope not applied
        trusted = await hub.client.post("/sample/echo", json={"text": "hi"}, headers={
            "Authorization": f"Bearer {PLAIN_KEY}", "X-OpenWebUI-User-Email": "bob@example.com"})
        assert_error(trusted, 403, "forbidden")


async def test_the_mcp_face_lists_only_what_the_forwarded_user_may_call():
    async with running_hub(CONFIG, listen=True) as hub:
        async with hub_mcp_client(f"{hub.url}/mcp", None, headers=as_user("bob@example.com")) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["other_echo"]
    assert core(hub).auth.enabled
