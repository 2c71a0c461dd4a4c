"""A front end that holds a key names the user it calls for (issue #16, first part): Open WebUI's forwarded
user info, as an HS256 JWT in `X-OpenWebUI-User-Jwt` (FORWARD_USER_INFO_HEADER_JWT_SECRET) or, where the key
says `headers: true`, plain `X-OpenWebUI-User-*` headers. The user's scopes narrow the key's, rate limits
and the audit line are per user, a bad user token is 401; both faces."""

from __future__ import annotations

import ast
import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional
from urllib.parse import quote

import jwt as pyjwt
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from tests.hub import assert_error, core, running_hub, sample_server
from tests.hub import mcp_client as hub_mcp_client
from tests.test_owui_converter import release_wheel  # noqa: F401  (the fixture: open-webui's wheel)

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


# ------------------------------------------------------------------- Open WebUI's own header code

OWUI_HEADERS_SOURCE = "open_webui/utils/headers.py"
OWUI_DEFINITIONS = {"_mint_forward_user_jwt", "include_user_info_headers"}


def owui_user_headers(wheel_path: Path, *, jwt_secret: str | None) -> Callable[[Any], dict[str, str]]:
    """`include_user_info_headers` from the open-webui release's own source (the wheel .ci/install-thirdparty
    downloads; nothing of it is in this repository), with its env settings as Open WebUI reads them."""
    with zipfile.ZipFile(wheel_path) as wheel:
        tree = ast.parse(wheel.read(OWUI_HEADERS_SOURCE).decode())
    picked = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in OWUI_DEFINITIONS]
    assert len(picked) == len(OWUI_DEFINITIONS), [n.name for n in picked]
    namespace: dict[str, Any] = {
        "time": time, "quote": quote, "Any": Any, "Optional": Optional, "log": logging.getLogger("owui"),
        "jwt": pyjwt,  # PyJWT, as Open WebUI imports it
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": jwt_secret,
        "FORWARD_USER_INFO_HEADER_JWT": "X-OpenWebUI-User-Jwt",
        "FORWARD_USER_INFO_HEADER_JWT_EXPIRES_SECONDS": 300,
        "FORWARD_USER_INFO_HEADER_AUTH_TYPE": "X-OpenWebUI-Auth-Type",
        "FORWARD_USER_INFO_HEADER_USER_NAME": "X-OpenWebUI-User-Name",
        "FORWARD_USER_INFO_HEADER_USER_ID": "X-OpenWebUI-User-Id",
        "FORWARD_USER_INFO_HEADER_USER_EMAIL": "X-OpenWebUI-User-Email",
        "FORWARD_USER_INFO_HEADER_USER_ROLE": "X-OpenWebUI-User-Role",
    }
    exec(compile(ast.Module(body=picked, type_ignores=[]), OWUI_HEADERS_SOURCE, "exec"), namespace)
    include: Callable[..., dict[str, str]] = namespace["include_user_info_headers"]
    return lambda user: include({}, user)


@pytest.mark.parametrize("mode", ["jwt", "plain"])
async def test_open_webuis_own_header_code_names_the_user_the_hub_acts_as(release_wheel: Path,  # noqa: F811
                                                                          mode: str):
    bob = SimpleNamespace(id="u-bob", email="bob@example.com", name="Bob", role="user")
    headers = owui_user_headers(release_wheel, jwt_secret=SECRET if mode == "jwt" else None)(bob)
    assert ("X-OpenWebUI-User-Jwt" in headers) == (mode == "jwt"), headers
    key = KEY if mode == "jwt" else PLAIN_KEY
    async with running_hub(CONFIG) as hub:
        refused = await hub.client.post("/sample/echo", json={"text": "hi"},
                                        headers={**headers, "Authorization": f"Bearer {key}"})
        allowed = await hub.client.post("/other/echo", json={"text": "hi"},
                                        headers={**headers, "Authorization": f"Bearer {key}"})
    assert assert_error(refused, 403, "forbidden")["message"] == (
        "credential 'bob@example.com' may not use server 'sample'")  # bob's own scope, so: acted as bob
    assert allowed.status_code == 200, allowed.text
