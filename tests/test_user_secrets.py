"""Per-user secrets and per-user processes (issue #16, second part): `${user.NAME}` in a server's env or
headers is the calling user's secret; such a server runs one instance per user (user_servers.py), started
on the user's first call, stopped when idle, at most `max_users` at once; a caller without the secret gets
403 naming it; one user's secret never reaches another user, a log, a spec, an error, /readyz or /metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from mcphub.config import StdioServer
from mcphub.supervisor import ServerHandle
from tests.hub import assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

KEY = "owui-tools-key-0123456789abcdef"
PLAIN = "plain-key-0123456789abcdef0123"
FORWARD_SECRET = "owui-forward-secret-" + "s" * 24
ALICE_TOKEN = "ghp_alice_SECRET_0123456789"
BOB_TOKEN = "ghp_bob_SECRET_9876543210"
CAROL_TOKEN = "ghp_carol_SECRET_5555555555"
WAIT = 10.0  # seconds any condition below may take


def config(*, idle_timeout: float = 600, max_users: int = 16, **server: Any) -> dict[str, Any]:
    return {
        "auth": {
            "api_keys": [{"name": "openwebui", "key": KEY, "forwarded_user": {"jwt_secret": FORWARD_SECRET}},
                         {"name": "plain", "key": PLAIN}],
            "users": {
                "alice@example.com": {"secrets": {"GITHUB_TOKEN": ALICE_TOKEN}},
                "bob@example.com": {"secrets": {"GITHUB_TOKEN": BOB_TOKEN}},
                "carol@example.com": {"secrets": {"GITHUB_TOKEN": CAROL_TOKEN}},
                "dave@example.com": {"servers": ["*"]},
            },
        },
        "servers": {
            "gh": sample_server(env={"TOKEN": "${user.GITHUB_TOKEN}", "PLAIN": "shared"},
                                idle_timeout=idle_timeout, max_users=max_users, **server),
            "plainserver": sample_server(),
        },
    }


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def as_user(email: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "open-webui", "sub": f"id-{email}", "email": email, "iat": now, "exp": now + 300}
    token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(FORWARD_SECRET), algorithms=["HS256"])
    return {"Authorization": f"Bearer {KEY}", "X-OpenWebUI-User-Jwt": token}


def pool_of(hub: Any, name: str = "gh") -> Any:
    handle: ServerHandle = hub.supervisor.servers[name]
    assert handle.users is not None
    return handle.users


async def until(condition: Any) -> None:
    with anyio.fail_after(WAIT):
        while not condition():
            await anyio.sleep(0.02)


async def getenv(hub: Any, email: str, name: str = "TOKEN") -> Any:
    response = await hub.client.post("/gh/getenv", json={"name": name}, headers=as_user(email))
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def test_each_user_calls_their_own_instance_with_their_own_secret():
    async with running_hub(config()) as hub:
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN
        assert await getenv(hub, "bob@example.com") == BOB_TOKEN
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN
        assert await getenv(hub, "bob@example.com", "PLAIN") == "shared"
        assert pool_of(hub).running == 2
        listing = hub.supervisor.servers["gh"]
        assert isinstance(listing.config, StdioServer)
        # the listing instance runs without the variable (never with an empty one) and never takes a call
        pids = {(await hub.client.post("/gh/pid", headers=as_user(u))).json()["result"]
                for u in ("alice@example.com", "bob@example.com")}
        assert len(pids) == 2


async def test_a_caller_without_the_secret_is_refused_naming_it():
    async with running_hub(config()) as hub:
        dave = await hub.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user("dave@example.com"))
        assert assert_error(dave, 403, "forbidden")["message"] == (
            "server 'gh' needs the user's own secret GITHUB_TOKEN, and user 'dave@example.com' is listed without "
            "it (set auth.users.<user>.secrets.GITHUB_TOKEN in the hub's config)")
        erin = await hub.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user("erin@example.com"))
        assert assert_error(erin, 403, "forbidden")["message"] == (
            "server 'gh' needs the user's own secret GITHUB_TOKEN, and user 'erin@example.com' is not listed "
            "under auth.users (set auth.users.<user>.secrets.GITHUB_TOKEN in the hub's config)")
        plain = await hub.client.post("/gh/getenv", json={"name": "TOKEN"}, headers={"Authorization": f"Bearer {PLAIN}"})
        assert assert_error(plain, 403, "forbidden")["message"] == (
            "server 'gh' runs with each user's own credentials and needs the secret GITHUB_TOKEN: credential "
            "'plain' is not a forwarded user (call through a front end that names its users, with a key that "
            "has forwarded_user)")
        assert pool_of(hub).running == 0  # nothing was started for them
        other = await hub.client.post("/plainserver/echo", json={"text": "x"}, headers={"Authorization": f"Bearer {PLAIN}"})
        assert other.status_code == 200, other.text


async def test_an_idle_instance_is_stopped_after_idle_timeout():
    async with running_hub(config(idle_timeout=0.3)) as hub:
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN
        pool = pool_of(hub)
        assert pool.running == 1
        await until(lambda: pool.running == 0)
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN  # started again on the next call
        assert pool.running == 1


async def test_max_users_stops_the_least_recently_used_idle_instance():
    async with running_hub(config(max_users=2)) as hub:
        pool = pool_of(hub)
        await getenv(hub, "alice@example.com")
        await getenv(hub, "bob@example.com")
        await getenv(hub, "alice@example.com")  # bob is now the least recently used
        await getenv(hub, "carol@example.com")
        assert pool.running == 2
        assert set(pool._entries) == {"alice@example.com", "carol@example.com"}


async def test_max_users_all_busy_is_503_with_retry_after():
    async with running_hub(config(max_users=1)) as hub, anyio.create_task_group() as tg:
        started = anyio.Event()

        async def slow() -> None:
            started.set()
            response = await hub.client.post("/gh/sleep", json={"seconds": 1.0}, headers=as_user("alice@example.com"))
            assert response.status_code == 200, response.text

        tg.start_soon(slow)
        await started.wait()
        await until(lambda: any(e.in_flight for e in pool_of(hub)._entries.values()))
        bob = await hub.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user("bob@example.com"))
        error = assert_error(bob, 503, "server_unavailable")
        assert error["message"] == ("server 'gh' runs one instance per user and all 1 (its max_users) are busy "
                                    "with calls; retry shortly")
        assert bob.headers["retry-after"] == "5"


async def test_no_secret_reaches_logs_specs_errors_readyz_or_metrics(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with running_hub(config()) as hub:
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN
        missing = await hub.client.post("/gh/nope", json={}, headers=as_user("alice@example.com"))
        bad = await hub.client.post("/gh/getenv", json={"name": 3}, headers=as_user("alice@example.com"))
        failed = await hub.client.post("/gh/fail", json={"message": "x"}, headers=as_user("alice@example.com"))
        shown = [missing.text, bad.text, failed.text]
        for path in ("/openapi.json", "/gh/openapi.json", "/readyz", "/metrics", "/healthz", "/"):
            response = await hub.client.get(path, headers=as_user("alice@example.com"))
            shown.append(response.text)
        metrics = (await hub.client.get("/metrics")).text
        shown.append(repr(hub.supervisor.servers["gh"]))
    for text in [*shown, caplog.text]:
        for secret in (ALICE_TOKEN, BOB_TOKEN):
            assert secret not in text
    assert 'mcphub_server_user_instances{server="gh"} 1.0' in metrics
    assert "alice" not in metrics
