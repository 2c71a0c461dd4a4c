"""OAuth 2.1 to remote MCP servers, per user (issue #16, third part): a real authorization server
(authlib's server side) protecting a real remote MCP server (tests/oauth_as.py), both on 127.0.0.1;
the hub discovers them, each user connects their own account in a browser (driven here by httpx2
following redirects), calls go out with that user's token, refreshed before it expires, forgotten and
revoked on DELETE. Tokens are stored encrypted and appear in no log, error, spec or /readyz."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import redis.asyncio as redis
from mcp import MCPError, UrlElicitationRequiredError
from mcp.types import URL_ELICITATION_REQUIRED
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mcphub import cli_users, oauth_discovery, pages
from mcphub.config import HttpServer, parse_config
from mcphub.errors import BadUpstreamResponse, ConfigError, OAuthRequired, ServerUnavailable
from mcphub.oauth import OAuth, oauth_for
from mcphub.oauth_discovery import discover
from mcphub.oauth_store import MemoryStore, RedisStore, Sealer
from tests.helpers import PYTHON, REPO, free_port, serve_in_thread
from tests.hub import IN_PROCESS_BASE_URL, RunningHub, assert_error, mcp_client, running_hub
from tests.oauth_as import Client as AsClient
from tests.oauth_as import Upstream, login_url, upstream
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

KEY = "owui-tools-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef0123"
SECRET_KEY = "hub-secret-key-" + "k" * 32
WAIT = 10.0  # seconds any condition below may take
ALICE = {"X-OpenWebUI-User-Email": "alice@example.com"}
BOB = {"X-OpenWebUI-User-Email": "bob@example.com"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPHUB_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the authorization server on plain http://127.0.0.1


@pytest.fixture
def remote(secret_key: None) -> Iterator[Upstream]:
    with upstream() as found:
        yield found


def config(up: Upstream | str, **oauth: Any) -> dict[str, Any]:
    """Open WebUI's key naming its users, an admin key, and the remote MCP server with `oauth:`."""
    url = up if isinstance(up, str) else up.mcp_url
    return {
        "hub": {"public_url": IN_PROCESS_BASE_URL},
        "auth": {"api_keys": [{"name": "openwebui", "key": KEY, "forwarded_user": {"headers": True}},
                              {"name": "admin", "key": ADMIN}]},
        "servers": {"files": {"transport": "streamable-http", "url": url, "connect_timeout": 5,
                              "oauth": {"scopes": ["files:read"], **oauth}}},
    }


def headers(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **user}


@asynccontextmanager
async def browser(hub: RunningHub, up: Upstream, user: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A browser signed in at the authorization server as `user`: it reaches the hub in-process and the
    authorization server over the network, following redirects."""
    transport = httpx2.ASGITransport(app=hub.app)  # (also when the hub listens: its public_url is this one)
    async with httpx2.AsyncClient(mounts={IN_PROCESS_BASE_URL: transport}, follow_redirects=True,
                                  timeout=WAIT) as client:
        assert (await client.get(login_url(up.issuer, user))).status_code == 200
        yield client


async def call(hub: RunningHub, user: dict[str, str]) -> httpx2.Response:
    return await hub.client.post("/files/whoami", json={}, headers=headers(user))


async def connect(hub: RunningHub, up: Upstream, user: dict[str, str], name: str) -> None:
    """The user's call is refused with a connect link; their browser follows it to "Connected"."""
    error = assert_error(await call(hub, user), 403, "oauth_required")
    async with browser(hub, up, name) as client:
        page = await client.get(await onward(client, error["connect_url"], "files", user["X-OpenWebUI-User-Email"]))
    assert page.status_code == 200, page.text
    assert "Connected" in page.text


async def onward(client: httpx2.AsyncClient, link: str, server: str = "files", user: str | None = None) -> str:
    """The page a connect link opens asks "Connect <server> for <user>?"; its one link goes on."""
    page = await client.get(link)
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == pages.SECURITY_HEADERS["Content-Security-Policy"]
    assert f"Connect {server} for {user or ''}" in page.text and "<script" not in page.text
    (found,) = re.findall(r'<a href="([^"]+)">Continue', page.text)
    return html.unescape(found)


async def test_a_user_connects_and_calls_with_their_own_token(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        refused = await call(hub, ALICE)
        error = assert_error(refused, 403, "oauth_required")
        link = error["connect_url"]
        assert link.startswith(f"{IN_PROCESS_BASE_URL}/oauth/files/connect?link=")
        assert link in error["message"] and "server 'files'" in error["message"]
        async with browser(hub, remote, "alice") as client:
            page = await client.get(await onward(client, link, "files", "alice@example.com"))
        assert page.status_code == 200 and "Connected" in page.text, page.text
        # discovered: the hub registered itself (RFC 7591) and sent the resource (RFC 8707) with PKCE
        assert len(remote.store.clients) == 1
        assert remote.store.resources == [remote.mcp_url]
        assert remote.store.grants == [("authorization_code", "alice")]
        answer = await call(hub, ALICE)
        assert answer.status_code == 200, answer.text
        assert answer.json()["subject"] == "alice"


async def test_two_users_each_call_with_their_own_token(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert_error(await call(hub, BOB), 403, "oauth_required")  # alice's connection is not bob's
        await connect(hub, remote, BOB, "bob")
        for _ in range(2):
            alice, bob = await call(hub, ALICE), await call(hub, BOB)
            assert alice.json()["subject"] == "alice", alice.text
            assert bob.json()["subject"] == "bob", bob.text
        serials = {t.user.name: t.serial for t in remote.store.tokens.values()}
        assert alice.json()["serial"] == serials["alice"] and bob.json()["serial"] == serials["bob"]


async def test_a_token_about_to_expire_is_refreshed(secret_key: None) -> None:
    with upstream(expires_in=2) as remote:  # refreshed at a tenth of its lifetime before it expires
        async with running_hub(config(remote)) as hub:
            await connect(hub, remote, ALICE, "alice")
            first = (await call(hub, ALICE)).json()
            with anyio.fail_after(WAIT):
                while ("refresh_token", "alice") not in remote.store.grants:
                    answer = await call(hub, ALICE)
                    assert answer.status_code == 200, answer.text
                    await anyio.sleep(0.2)
            after = (await call(hub, ALICE)).json()
            assert after["subject"] == "alice" and after["serial"] > first["serial"]
            assert remote.store.rejected == 0  # refreshed before it expired, not after a 401


async def test_a_token_the_server_rejects_is_refreshed_once(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        for token in remote.store.tokens.values():  # the server stops accepting it before it expires
            token.expires_at = 0
        answer = await call(hub, ALICE)
        assert answer.status_code == 200, answer.text
        assert remote.store.grants == [("authorization_code", "alice"), ("refresh_token", "alice")]


async def test_a_refused_refresh_asks_the_user_to_connect_again(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        for token in remote.store.tokens.values():  # revoked at the authorization server: no refresh
            token.revoked = True
        with anyio.fail_after(WAIT):
            while True:  # the call that finds out may fail on the way; the next one asks to connect
                answer = await call(hub, ALICE)
                if answer.status_code == 403:
                    break
        assert_error(answer, 403, "oauth_required")
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).json()["subject"] == "alice"


async def test_delete_forgets_and_revokes_then_the_user_reconnects(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        await connect(hub, remote, BOB, "bob")
        assert (await call(hub, ALICE)).status_code == 200
        gone = await hub.client.delete("/oauth/files/connection", headers=headers(ALICE))
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"server": "files", "connected": False, "forgotten": True}
        assert set(remote.store.revocations) == {"alice"}  # revoked at the authorization server
        assert_error(await call(hub, ALICE), 403, "oauth_required")
        assert (await call(hub, BOB)).json()["subject"] == "bob"  # bob keeps his
        again = await hub.client.delete("/oauth/files/connection", headers=headers(ALICE))
        assert again.json()["forgotten"] is False
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).json()["subject"] == "alice"


async def test_disconnecting_needs_a_user(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        plain = await hub.client.delete("/oauth/files/connection", headers={"Authorization": f"Bearer {ADMIN}"})
        assert "not a user" in assert_error(plain, 403, "forbidden")["message"]
        nobody = await hub.client.delete("/oauth/files/connection")
        assert_error(nobody, 401, "unauthorized")
        unknown = await hub.client.delete("/oauth/nope/connection", headers=headers(ALICE))
        assert "no OAuth server named 'nope'" in assert_error(unknown, 404, "not_found")["message"]


async def test_a_connect_link_works_once_and_only_unaltered(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "alice") as client:
            assert (await client.get(await onward(client, link))).status_code == 200
            replayed = await client.get(link)
            assert replayed.status_code == 400 and "already used" in replayed.text
            altered = await client.get(link[:-6] + "AAAAAA")
            assert altered.status_code == 400 and "not valid" in altered.text
            other = await client.get(link.replace("/oauth/files/", "/oauth/nope/"))
            assert other.status_code == 404 and "no OAuth server named" in other.text
            bare = await client.get(f"{IN_PROCESS_BASE_URL}/oauth/files/connect")
            assert bare.status_code == 401


async def test_a_bad_or_replayed_callback_is_an_error_page(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "alice") as client:
            client.follow_redirects = False
            to_as = await client.get(await onward(client, link))
            assert to_as.status_code == 302
            back = await client.get(to_as.headers["location"])
            assert back.status_code == 302
            callback = back.headers["location"]
            assert (await client.get(callback)).status_code == 200
            replayed = await client.get(callback)
            assert replayed.status_code == 400 and "already completed" in replayed.text
            forged = await client.get(f"{IN_PROCESS_BASE_URL}/oauth/files/callback?code=x&state=forged")
            assert forged.status_code == 400 and "sign-in state is not valid" in forged.text
            # a fresh sign-in whose code was already used (the state is new, the code is not)
            second = assert_error(await call(hub, BOB), 403, "oauth_required")["connect_url"]
            state = httpx2.URL((await client.get(await onward(client, second))).headers["location"]).params["state"]
            code = httpx2.URL(callback).params["code"]
            stale = await client.get(f"{IN_PROCESS_BASE_URL}/oauth/files/callback",
                                     params={"code": code, "state": state})
            assert stale.status_code == 400 and "refused the code" in stale.text and "invalid_grant" in stale.text


async def test_a_sign_in_completes_only_in_the_browser_that_began_it(remote: Upstream) -> None:
    """Alice opens her connect link without following it and passes the authorization server's URL to Bob:
    Bob's approval must not tie his account to Alice (her calls would run as Bob)."""
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "alice") as attacker:
            attacker.follow_redirects = False
            started = await attacker.get(await onward(attacker, link, "files", "alice@example.com"))
        assert started.status_code == 302
        cookie = started.headers["set-cookie"].lower()
        assert cookie.startswith("mcphub_oauth_state=") and "httponly" in cookie and "samesite=lax" in cookie
        assert "path=/oauth/files/callback" in cookie and "max-age=600" in cookie and "secure" not in cookie
        async with browser(hub, remote, "bob") as victim:  # signed in at the authorization server as bob
            page = await victim.get(started.headers["location"])
        assert page.status_code == 400, page.text
        assert "this sign-in was started in another browser: open your connect link again" in page.text
        assert remote.store.grants == []  # the code was never exchanged
        assert_error(await call(hub, ALICE), 403, "oauth_required")


async def test_a_connect_link_names_the_user_and_server_before_anything_happens(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "bob") as client:  # alice's link, opened by bob
            client.follow_redirects = False
            page = await client.get(link)
            assert "Connect files for alice@example.com?" in page.text
            assert "If you are not alice@example.com" in page.text
            assert page.headers["cache-control"] == "no-store" and "set-cookie" not in page.headers
            assert remote.store.clients == {}  # nothing happened yet: not even a registration
            again = await onward(client, link, "files", "alice@example.com")  # the page did not use the link up
            assert again == link + "&confirm=1"
            assert (await client.get(again)).status_code == 302
            used = await client.get(link)
            assert used.status_code == 400 and "already used" in used.text


async def test_the_state_cookie_is_secure_behind_https(remote: Upstream) -> None:
    raw = config(remote)
    raw["hub"]["public_url"] = "https://tools.example.com/hub"
    async with running_hub(raw) as hub:
        started = await hub.client.get("/oauth/files/connect", headers=headers(ALICE))
        assert started.status_code == 302, started.text
        cookie = started.headers["set-cookie"].lower()
        assert "; secure" in cookie and "path=/hub/oauth/files/callback" in cookie


async def test_access_denied_at_the_authorization_server_is_a_403_page(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "alice") as client:
            await client.get(login_url(remote.issuer, "alice", deny=True))
            page = await client.get(await onward(client, link))
        assert page.status_code == 403 and "did not grant access" in page.text and "access_denied" in page.text
        assert_error(await call(hub, ALICE), 403, "oauth_required")


async def test_configured_client_and_endpoints_skip_discovery(remote: Upstream) -> None:
    callback = f"{IN_PROCESS_BASE_URL}/oauth/files/callback"
    remote.store.clients["mcphub"] = AsClient("mcphub", "s3cret-client", [callback], "client_secret_basic")
    explicit = {"client_id": "mcphub", "client_secret": "s3cret-client",
                "authorization_endpoint": f"{remote.issuer}/authorize", "token_endpoint": f"{remote.issuer}/token"}
    async with running_hub(config(remote, **explicit)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).json()["subject"] == "alice"
        assert list(remote.store.clients) == ["mcphub"]  # no registration


async def test_without_registration_or_client_id_the_connect_page_says_what_to_configure(secret_key: None) -> None:
    with upstream(registration=False) as remote:
        async with running_hub(config(remote)) as hub:
            link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
            async with browser(hub, remote, "alice") as client:
                page = await client.get(await onward(client, link))
            assert page.status_code == 502
            assert "no dynamic client registration" in page.text and "oauth.client_id" in page.text


async def test_an_oauth_server_is_ready_before_anyone_connects_and_lists_tools_after(
        remote: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_hub(config(remote)) as hub:
        ready = await hub.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["servers"]["files"]["state"] == "ready"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text  # no 401 restarts
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        spec = (await hub.client.get("/files/openapi.json")).json()
        assert "/whoami" in spec["paths"]


async def test_the_mcp_face_asks_a_client_that_can_to_open_the_connect_link(remote: Upstream) -> None:
    async def never(context: Any, params: Any) -> Any:
        raise AssertionError("the hub sends no elicitation/create for this: it answers -32042")

    async with running_hub(config(remote), listen=True) as hub:
        url = f"{hub.url}/files/mcp"
        async with mcp_client(url, KEY, "legacy", headers=ALICE, elicitation_callback=never) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("whoami", {})
        assert raised.value.code == URL_ELICITATION_REQUIRED  # the 2025-11-25 URLElicitationRequiredError
        (elicitation,) = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
        assert elicitation.mode == "url" and "/oauth/files/connect?link=" in elicitation.url
        assert elicitation.url in elicitation.message and elicitation.elicitation_id
        for mode in ("legacy", "auto"):  # no URL elicitation declared (or a 2026 client): the tool error's text
            async with mcp_client(url, KEY, mode, headers=ALICE) as client:
                result = await client.call_tool("whoami", {})
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "needs you to connect your own account" in text and "/oauth/files/connect?link=" in text
        async with browser(hub, remote, "alice") as client:
            assert "Connected" in (await client.get(await onward(client, elicitation.url))).text
        async with mcp_client(url, KEY, "legacy", headers=ALICE, elicitation_callback=never) as client:
            result = await client.call_tool("whoami", {})
        assert result.structured_content == {"subject": "alice", "serial": 1}


async def test_a_key_that_names_no_user_cannot_use_an_oauth_server(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        refused = await hub.client.post("/files/whoami", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert "not a forwarded user" in assert_error(refused, 403, "forbidden")["message"]


async def test_users_are_listed_for_an_admin_key_only(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        listed = await hub.client.get("/oauth/connections", headers={"Authorization": f"Bearer {ADMIN}"})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert [(c["server"], c["user"], c["refreshable"]) for c in body["connections"]] == \
            [("files", "alice@example.com", True)]
        assert body["instances"] == {"files": ["alice@example.com"]}
        for token in remote.store.tokens.values():
            assert token.access_token not in listed.text and str(token.refresh_token) not in listed.text
        user = await hub.client.get("/oauth/connections", headers=headers(ALICE))
        assert "may not list connections" in assert_error(user, 403, "forbidden")["message"]
        assert_error(await hub.client.get("/oauth/connections"), 401, "unauthorized")


async def test_the_users_command_prints_who_is_connected(remote: Upstream) -> None:
    async with running_hub(config(remote), listen=True) as hub:
        await connect(hub, remote, ALICE, "alice")
        lines: list[str] = []
        assert await anyio.to_thread.run_sync(cli_users.run, hub.url, ADMIN, lines.append) == 0
        assert lines[0].split() == ["SERVER", "USER", "CONNECTED", "EXPIRES", "(UTC)", "INSTANCE"]
        assert lines[1].split()[:3] == ["files", "alice@example.com", "yes"], lines
        refused: list[str] = []
        assert await anyio.to_thread.run_sync(cli_users.run, hub.url, None, refused.append) == 1
        assert "answered 401" in refused[0] and "MCPHUB_API_KEY" in refused[0]


def test_the_users_command_says_when_the_hub_is_not_running() -> None:
    lines: list[str] = []
    url = f"http://127.0.0.1:{free_port()}"
    assert cli_users.run(url, ADMIN, lines.append) == 1
    assert "cannot reach the hub at" in lines[0] and url in lines[0]


def test_without_mcphub_secret_key_an_oauth_server_is_a_config_error(tmp_path: Path) -> None:
    hub_config = parse_config(json.dumps(config("http://127.0.0.1:9/mcp")))
    with pytest.raises(ConfigError) as raised:
        oauth_for(hub_config, {})
    assert "servers.files.oauth: environment variable MCPHUB_SECRET_KEY is not set" in str(raised.value)
    with pytest.raises(ConfigError, match="MCPHUB_SECRET_KEY is shorter than 16 bytes"):
        oauth_for(hub_config, {"MCPHUB_SECRET_KEY": "short"})
    assert oauth_for(parse_config("servers: {}"), {}) is None  # no oauth: server, no key needed
    path = tmp_path / "mcphub.yaml"
    path.write_text(json.dumps(config("http://127.0.0.1:9/mcp")), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("MCPHUB_SECRET_KEY", "MCPHUB_API_KEY")}
    result = subprocess.run([PYTHON, "-m", "mcphub", "serve", "-c", str(path), "--port", str(free_port())],
                            cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "MCPHUB_SECRET_KEY is not set" in result.stderr and "Traceback" not in result.stderr


async def test_tokens_are_encrypted_at_rest_and_no_secret_is_logged_or_shown(
        remote: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_hub(config(remote)) as hub:
        link = assert_error(await call(hub, ALICE), 403, "oauth_required")["connect_url"]
        async with browser(hub, remote, "alice") as client:
            client.follow_redirects = False
            to_as = await client.get(await onward(client, link))
            back = await client.get(to_as.headers["location"])
            callback = httpx2.URL(back.headers["location"])
            assert (await client.get(callback)).status_code == 200
        assert (await call(hub, ALICE)).status_code == 200
        oauth = hub.app.state.invoker.oauth
        stored = oauth._store.raw()
        shown = "".join([(await hub.client.get(p, headers={"Authorization": f"Bearer {ADMIN}"})).text
                         for p in ("/readyz", "/metrics", "/openapi.json", "/files/openapi.json", "/")])
        await hub.client.delete("/oauth/files/connection", headers=headers(ALICE))
        shown += (await call(hub, ALICE)).text
    (client_record,) = remote.store.clients.values()
    (token,) = [t for t in remote.store.tokens.values() if t.user.name == "alice"]
    secrets = [token.access_token, str(token.refresh_token), callback.params["code"], callback.params["state"],
               httpx2.URL(link).params["link"], SECRET_KEY]
    assert client_record.client_secret is None  # registered as a public client (PKCE): no secret to keep
    assert any(k.startswith("token/files/") for k in stored)
    for value in stored.values():
        assert all(s.encode() not in value for s in secrets)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("mcphub", "uvicorn")))
    assert "alice@example.com connected" in logged  # (the hub's own lines were captured)
    for secret in secrets:
        assert secret not in logged and secret not in shown


async def test_connections_live_in_redis_with_hub_state(remote: Upstream, redis_server: RedisServer) -> None:
    await redis_server.start()
    raw = config(remote)
    raw["hub"]["state"] = redis_server.url
    async with running_hub(raw) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).json()["subject"] == "alice"
        client = redis.Redis.from_url(redis_server.url)
        try:
            names = sorted(k.decode() for k in await client.keys("mcphub:oauth:token/*"))
            assert names == ["mcphub:oauth:token/files/alice@example.com"]
            value = await client.get(names[0])
        finally:
            await client.aclose()
        (token,) = remote.store.tokens.values()
        assert token.access_token.encode() not in value and str(token.refresh_token).encode() not in value
        listed = await hub.client.get("/oauth/connections", headers={"Authorization": f"Bearer {ADMIN}"})
        assert [c["user"] for c in listed.json()["connections"]] == ["alice@example.com"]


async def test_a_user_with_the_hub_credential_is_sent_to_the_sign_in_with_pkce(remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        to_as = await hub.client.get("/oauth/files/connect", headers=headers(ALICE))
        assert to_as.status_code == 302, to_as.text
        target = httpx2.URL(to_as.headers["location"])
        assert str(target).startswith(f"{remote.issuer}/authorize?")
        params = target.params
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert params["resource"] == remote.mcp_url and params["scope"] == "files:read"
        assert params["redirect_uri"] == f"{IN_PROCESS_BASE_URL}/oauth/files/callback"
        assert to_as.headers["cache-control"] == "no-store"


async def test_the_users_command_makes_a_connect_link_for_the_first_user(remote: Upstream, tmp_path: Path) -> None:
    path = tmp_path / "mcphub.yaml"
    path.write_text(json.dumps(config(remote)), encoding="utf-8")
    command = [PYTHON, "-m", "mcphub", "users", "-c", str(path), "--connect", "files", "--user", "alice@example.com"]
    env = {**os.environ, "MCPHUB_SECRET_KEY": SECRET_KEY}
    made = await anyio.to_thread.run_sync(lambda: subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=60))
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{IN_PROCESS_BASE_URL}/oauth/files/connect?link=")
    async with running_hub(config(remote)) as hub:
        assert "/whoami" not in (await hub.client.get("/files/openapi.json")).json()["paths"]  # nobody connected
        async with browser(hub, remote, "alice") as client:
            assert "Connected" in (await client.get(await onward(client, link))).text
        assert (await call(hub, ALICE)).json()["subject"] == "alice"
        assert "/whoami" in (await hub.client.get("/files/openapi.json")).json()["paths"]
    wrong = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [*command[:-4], "--connect", "nope", "--user", "x"], cwd=REPO, env=env, capture_output=True, text=True,
        encoding="utf-8", timeout=60))
    assert wrong.returncode == 2 and "'nope': not a server with oauth: (OAuth servers: files)" in wrong.stderr


def test_tools_and_check_show_an_oauth_server_ready_without_any_user(tmp_path: Path) -> None:
    path = tmp_path / "mcphub.yaml"
    path.write_text(json.dumps(config("http://127.0.0.1:9/mcp")), encoding="utf-8")  # (nothing listens there)
    env = {k: v for k, v in os.environ.items() if k != "MCPHUB_SECRET_KEY"}
    result = subprocess.run([PYTHON, "-m", "mcphub", "tools", "-c", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "files" in result.stdout and "ready" in result.stdout


async def test_a_refresh_lost_to_another_replica_keeps_the_user_connected(remote: Upstream) -> None:
    """Two replicas over one store (Redis in production) refresh the same token at once: the authorization
    server rotates the refresh token, so the second refresh is refused; that replica takes the first's."""
    hub_config = parse_config(json.dumps(config(remote)))
    store, sealer = MemoryStore(), Sealer(SECRET_KEY)
    first, second = OAuth(hub_config, sealer, store), OAuth(hub_config, sealer, store)
    sign_in = await first.begin("files", httpx2.URL(first.connect_link("files", "alice")).params["link"])
    async with httpx2.AsyncClient(timeout=WAIT) as client:
        await client.get(login_url(remote.issuer, "alice"))
        back = await client.get(sign_in.url)
    await first.finish("files", dict(httpx2.URL(back.headers["location"]).params), sign_in.nonce)
    old = await first._tokens("files", "alice")
    assert old is not None
    renewed = await first.access_token("files", "alice", rejected=str(old["access_token"]))
    taken = await second._refresh("files", "alice", old)  # it read the tokens before the first refreshed
    assert taken["access_token"] == renewed
    assert await second._tokens("files", "alice") is not None  # still connected
    assert remote.store.grants == [("authorization_code", "alice"), ("refresh_token", "alice")]


@asynccontextmanager
async def token_endpoint(answer: Response) -> AsyncIterator[OAuth]:
    """An `OAuth` for a server whose configured token endpoint always gives `answer`, with alice's tokens
    stored and already expired (the next `access_token` refreshes)."""
    async def token(request: Request) -> Response:
        return answer

    port = free_port()
    with serve_in_thread(Starlette(routes=[Route("/token", token, methods=["POST"])]), port=port) as base:
        hub_config = parse_config(json.dumps({"servers": {"files": {
            "transport": "streamable-http", "url": base + "/mcp",
            "oauth": {"client_id": "c", "authorization_endpoint": base + "/authorize",
                      "token_endpoint": base + "/token"}}}}))
        oauth = OAuth(hub_config, Sealer(SECRET_KEY), MemoryStore())
        await oauth._save("files", "alice", {"access_token": "a", "refresh_token": "r", "expires_at": 0,
                                             "lifetime": 3600})
        yield oauth


@pytest.mark.parametrize(("answer", "why"), [
    (PlainTextResponse("upstream connect error", status_code=503), "HTTP 503"),
    (JSONResponse({"error": "temporarily_unavailable"}, status_code=400), "HTTP 400, temporarily_unavailable"),
    (JSONResponse({"error": "invalid_grant"}, status_code=500), "HTTP 500, invalid_grant"),
    (JSONResponse({"token_type": "Bearer"}), "HTTP 200"),
])
async def test_a_failed_refresh_keeps_the_tokens_and_answers_503(answer: Response, why: str) -> None:
    async with token_endpoint(answer) as oauth:
        with pytest.raises(ServerUnavailable) as raised:
            await oauth.access_token("files", "alice")
        assert raised.value.status_code == 503 and raised.value.headers() == {"Retry-After": "5"}
        assert str(raised.value) == (f"server 'files': its authorization server did not renew your token "
                                     f"({why}); retry shortly")
        assert await oauth._tokens("files", "alice") is not None  # still connected: the next call tries again


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "unauthorized_client"])
async def test_a_refresh_the_authorization_server_refuses_forgets_the_tokens(error: str) -> None:
    async with token_endpoint(JSONResponse({"error": error}, status_code=400)) as oauth:
        with pytest.raises(OAuthRequired):
            await oauth.access_token("files", "alice")
        assert await oauth._tokens("files", "alice") is None


async def test_a_call_while_the_authorization_server_is_down_is_a_503_and_the_user_stays_connected(
        remote: Upstream) -> None:
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        remote.store.unavailable = True
        for token in remote.store.tokens.values():  # the server rejects it: the hub must refresh
            token.expires_at = 0
        answer = await call(hub, ALICE)
        assert assert_error(answer, 503, "server_unavailable") and "retry-after" in answer.headers
        assert await hub.app.state.invoker.oauth._tokens("files", "alice@example.com") is not None
        remote.store.unavailable = False
        with anyio.fail_after(WAIT):  # (its connection is made again first)
            while (answer := await call(hub, ALICE)).status_code != 200:
                assert_error(answer, 503, "server_unavailable")
                await anyio.sleep(0.1)
        assert answer.json()["subject"] == "alice"
        assert remote.store.grants == [("authorization_code", "alice"), ("refresh_token", "alice")]


async def test_an_expired_token_is_renewed_before_the_call_and_a_failed_renewal_says_so(remote: Upstream) -> None:
    # The hub knows its token has expired: it renews it before the call goes to the user's connection, so an
    # authorization server that is down is this call's 503 in its own words, and the connection lives on.
    async with running_hub(config(remote)) as hub:
        await connect(hub, remote, ALICE, "alice")
        assert (await call(hub, ALICE)).status_code == 200
        oauth = hub.app.state.invoker.oauth
        tokens = await oauth._tokens("files", "alice@example.com")
        await oauth._save("files", "alice@example.com", {**tokens, "expires_at": time.time() - 1})
        remote.store.unavailable = True
        answer = await call(hub, ALICE)
        error = assert_error(answer, 503, "server_unavailable")
        assert "its authorization server did not renew your token" in error["message"], error
        remote.store.unavailable = False
        answer = await call(hub, ALICE)  # at once: no connection to make again
        assert answer.status_code == 200 and answer.json()["subject"] == "alice", answer.text
        assert remote.store.grants == [("authorization_code", "alice"), ("refresh_token", "alice")]


async def test_a_token_not_yet_expired_is_used_while_its_refresh_fails() -> None:
    async with token_endpoint(PlainTextResponse("down", status_code=503)) as oauth:
        await oauth._save("files", "alice", {"access_token": "a", "refresh_token": "r",
                                             "expires_at": time.time() + 30, "lifetime": 3600})
        assert await oauth.access_token("files", "alice") == "a"  # refreshed early (60 s margin): still good
        with pytest.raises(ServerUnavailable):
            await oauth.access_token("files", "alice", rejected="a")  # the server refused it: no fallback


async def endless(request: Request) -> Response:
    """A server that answers GET with an event stream that never ends (as an MCP server's GET may)."""
    async def pings() -> AsyncIterator[bytes]:
        while True:
            yield b": ping " + b"x" * 65536 + b"\n\n"
            await anyio.sleep(0.05)
    return StreamingResponse(pings(), media_type="text/event-stream")


def dribbling() -> Response:
    """An answer that keeps coming, a byte at a time, each well within a read timeout."""
    async def bytes_() -> AsyncIterator[bytes]:
        yield b'{"access_token": "'
        while True:
            await anyio.sleep(0.1)
            yield b"x"
    return StreamingResponse(bytes_(), media_type="application/json")


async def dribble(request: Request) -> Response:
    return dribbling()


async def test_discovery_reads_only_the_headers_of_the_servers_own_answer() -> None:
    port = free_port()
    with serve_in_thread(Starlette(routes=[Route("/mcp", endless)]), port=port) as base:
        cfg = parse_config(json.dumps({"servers": {"files": {"transport": "streamable-http", "url": base + "/mcp",
                                                             "oauth": {}}}})).servers["files"]
        assert isinstance(cfg, HttpServer)
        with anyio.fail_after(WAIT), pytest.raises(BadUpstreamResponse) as raised:
            await discover("files", cfg)
    assert "server 'files': OAuth discovery failed: it publishes no protected-resource metadata" in str(raised.value)


async def test_discovery_and_token_requests_end_within_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oauth_discovery, "DISCOVERY_TIMEOUT", 1.0)
    monkeypatch.setattr(oauth_discovery, "REQUEST_TIMEOUT", 1.0)
    port = free_port()
    routes = [Route("/.well-known/oauth-protected-resource/mcp", dribble), Route("/token", dribble, methods=["POST"])]
    with serve_in_thread(Starlette(routes=routes), port=port) as base:
        cfg = parse_config(json.dumps({"servers": {"files": {"transport": "streamable-http", "url": base + "/mcp",
                                                             "oauth": {}}}})).servers["files"]
        assert isinstance(cfg, HttpServer)
        with anyio.fail_after(WAIT), pytest.raises(BadUpstreamResponse) as raised:
            await discover("files", cfg)
        assert str(raised.value) == "server 'files': OAuth discovery failed: it took longer than 1 s"
    async with token_endpoint(dribbling()) as oauth:
        with anyio.fail_after(WAIT), pytest.raises(ServerUnavailable) as unavailable:
            await oauth.access_token("files", "alice")
        assert str(unavailable.value) == ("server 'files': its authorization server cannot be reached "
                                          "(no answer within 1 s); retry shortly")
        assert await oauth._tokens("files", "alice") is not None


async def test_a_401_naming_metadata_on_another_site_is_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    fetched: list[str] = []
    server_port, other_port = free_port(), free_port()
    site, other = f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{other_port}"

    async def elsewhere(request: Request) -> Response:
        fetched.append(str(request.url))
        return JSONResponse({"resource": site + "/mcp", "authorization_servers": [site]})

    async def mcp(request: Request) -> Response:
        return JSONResponse({}, status_code=401, headers={
            "WWW-Authenticate": f'Bearer resource_metadata="{other}/internal/metadata"'})

    async def resource(request: Request) -> Response:
        return JSONResponse({"resource": site + "/mcp", "authorization_servers": [site]})

    async def authorization(request: Request) -> Response:
        return JSONResponse({"issuer": site, "authorization_endpoint": site + "/authorize",
                             "token_endpoint": site + "/token"})

    served = Starlette(routes=[Route("/mcp", mcp), Route("/.well-known/oauth-protected-resource/mcp", resource),
                               Route("/.well-known/oauth-authorization-server", authorization)])
    with serve_in_thread(served, port=server_port), \
            serve_in_thread(Starlette(routes=[Route("/internal/metadata", elsewhere)]), port=other_port):
        cfg = parse_config(json.dumps({"servers": {"files": {"transport": "streamable-http", "url": site + "/mcp",
                                                             "oauth": {}}}})).servers["files"]
        assert isinstance(cfg, HttpServer)
        with anyio.fail_after(WAIT):
            endpoints = await discover("files", cfg)
    assert fetched == []  # only the server's own site was asked
    assert endpoints.authorization == site + "/authorize" and endpoints.resource == site + "/mcp"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (f"'files': its 401 names protected-resource metadata on another site ({other}): ignored, "
                       "looking at its own /.well-known/oauth-protected-resource")


async def signed_in(oauth: OAuth, remote: Upstream, user: str) -> dict[str, object]:
    """`user` connected through `oauth` (its sign-in driven directly); their stored tokens."""
    sign_in = await oauth.begin("files", httpx2.URL(oauth.connect_link("files", user)).params["link"])
    async with httpx2.AsyncClient(timeout=WAIT) as client:
        await client.get(login_url(remote.issuer, user))
        back = await client.get(sign_in.url)
    await oauth.finish("files", dict(httpx2.URL(back.headers["location"]).params), sign_in.nonce)
    tokens = await oauth._tokens("files", user)
    assert tokens is not None
    return tokens


async def test_two_replicas_on_redis_refresh_a_token_once(remote: Upstream, redis_server: RedisServer) -> None:
    """Both replicas find the token rejected at once: one refreshes, the other waits for it and takes the new
    token (a refresh token sent twice may make the authorization server revoke the whole grant)."""
    await redis_server.start()
    hub_config = parse_config(json.dumps(config(remote)))
    clients = [redis.Redis.from_url(redis_server.url, decode_responses=True) for _ in range(2)]
    try:
        first, second = (OAuth(hub_config, Sealer(SECRET_KEY), RedisStore(c)) for c in clients)
        old = await signed_in(first, remote, "alice")
        got: list[str] = []

        async def renew(oauth: OAuth) -> None:
            got.append(await oauth.access_token("files", "alice", rejected=str(old["access_token"])))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                group.start_soon(renew, first)
                group.start_soon(renew, second)
        assert remote.store.refreshes == [old["refresh_token"]]  # sent once
        assert got[0] == got[1] != old["access_token"]
        assert await clients[0].keys("mcphub:oauth:lock/*") == []  # released
    finally:
        for client in clients:
            await client.aclose()


async def test_a_lock_left_by_a_replica_that_died_delays_the_refresh_only_until_it_expires(
        remote: Upstream, redis_server: RedisServer) -> None:
    await redis_server.start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        oauth = OAuth(parse_config(json.dumps(config(remote))), Sealer(SECRET_KEY), RedisStore(client))
        old = await signed_in(oauth, remote, "alice")
        await client.set("mcphub:oauth:lock/token/files/alice", "gone", px=500)  # its holder never releases it
        with anyio.fail_after(WAIT):
            renewed = await oauth.access_token("files", "alice", rejected=str(old["access_token"]))
        assert renewed != old["access_token"] and remote.store.refreshes == [old["refresh_token"]]
    finally:
        await client.aclose()


async def test_forgetting_while_the_authorization_server_is_down_still_forgets(
        remote: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_port()}/revoke"  # (nothing listens there)
    async with running_hub(config(remote, revocation_endpoint=closed)) as hub:
        await connect(hub, remote, ALICE, "alice")
        gone = await hub.client.delete("/oauth/files/connection", headers=headers(ALICE))
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"server": "files", "connected": False, "forgotten": True}
        assert_error(await call(hub, ALICE), 403, "oauth_required")
    assert ("'files': revoking a token of alice@example.com failed (HTTP 503: server 'files': its authorization "
            "server cannot be reached (ConnectError); retry shortly)") in caplog.text
