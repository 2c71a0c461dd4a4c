"""Per-user secrets and per-user processes (issue #16, second part): `${user.NAME}` in a server's env or
headers is the calling user's secret; such a server runs one instance per user (user_servers.py), started
on the user's first call, stopped when idle, at most `max_users` at once; a caller without the secret gets
403 naming it; one user's secret never reaches another user, a log, a spec, an error, /readyz or /metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil  # type: ignore[import-untyped]
import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import OctKey

from mcphub import transports
from mcphub.config import ServerConfig, StdioServer, parse_config
from mcphub.errors import ConfigError, Forbidden
from mcphub.supervisor import ServerHandle, Supervisor
from mcphub.toolserver import State
from mcphub.user_servers import undefined_secrets
from tests.helpers import PYTHON, free_port
from tests.hub import assert_error, config_of, core, make_app, running_hub, running_instances, sample_server
from tests.hub import connect as hub_connect
from tests.hub import mcp_client as hub_mcp_client
from tests.test_cli import mcphub as cli
from tests.test_transports import remote, upstreams  # noqa: F401  (the fixture: a real HTTP MCP server)

pytestmark = pytest.mark.anyio

KEY = "owui-tools-key-0123456789abcdef"
PLAIN = "plain-key-0123456789abcdef0123"
FORWARD_SECRET = "owui-forward-secret-" + "s" * 24
ALICE_TOKEN = "ghp_alice_SECRET_0123456789"
BOB_TOKEN = "ghp_bob_SECRET_9876543210"
CAROL_TOKEN = "ghp_carol_SECRET_5555555555"
PLAIN_HEADERS = {"Authorization": f"Bearer {PLAIN}"}  # a key that names no user
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
        plain = await hub.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=PLAIN_HEADERS)
        assert assert_error(plain, 403, "forbidden")["message"] == (
            "server 'gh' runs with each user's own credentials and needs the secret GITHUB_TOKEN: credential "
            "'plain' is not a forwarded user (call through a front end that names its users, with a key that "
            "has forwarded_user)")
        assert pool_of(hub).running == 0  # nothing was started for them
        other = await hub.client.post("/plainserver/echo", json={"text": "x"}, headers=PLAIN_HEADERS)
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


async def test_tools_are_listed_before_any_user_instance_exists_on_both_faces():
    async with running_hub(config(), listen=True) as hub:
        spec = (await hub.client.get("/gh/openapi.json", headers=as_user("alice@example.com"))).json()
        assert "/getenv" in spec["paths"]
        async with hub_mcp_client(f"{hub.url}/mcp", None, headers=as_user("alice@example.com")) as client:
            assert "gh_getenv" in [t.name for t in (await client.list_tools()).tools]
            assert pool_of(hub).running == 0  # listed by the listing instance, which has no user's secret
            result = await client.call_tool("gh_getenv", {"name": "TOKEN"})
            assert result.structured_content == {"result": ALICE_TOKEN}
        async with hub_mcp_client(f"{hub.url}/mcp", None, headers=as_user("bob@example.com")) as client:
            result = await client.call_tool("gh_getenv", {"name": "TOKEN"})
            assert result.structured_content == {"result": BOB_TOKEN}
        readyz = (await hub.client.get("/readyz")).json()
        assert readyz["servers"]["gh"]["state"] == "ready" and readyz["servers"]["gh"]["user_instances"] == 2
        assert "user_instances" not in readyz["servers"]["plainserver"]


async def test_a_job_runs_on_the_users_own_instance_and_a_refused_one_is_403_not_202():
    async with running_hub(config()) as hub:
        started = await hub.client.post("/gh/getenv", json={"name": "TOKEN"},
                                        headers={**as_user("bob@example.com"), "Prefer": "respond-async"})
        assert started.status_code in (200, 202), started.text
        with anyio.fail_after(WAIT):
            while (job := (await hub.client.get(started.headers["location"], headers=as_user("bob@example.com"))
                           ).json())["status"] == "running":
                await anyio.sleep(0.02)
        assert job["status"] == "succeeded" and job["result"] == {"result": BOB_TOKEN}, job
        refused = await hub.client.post("/gh/getenv", json={"name": "TOKEN"},
                                        headers={**as_user("dave@example.com"), "Prefer": "respond-async"})
        assert "GITHUB_TOKEN" in assert_error(refused, 403, "forbidden")["message"]


# ------------------------------------------------------------------------------------ real processes


async def test_real_processes_one_per_user_each_with_only_its_own_secret_and_idle_ones_exit():
    async with running_hub(config(idle_timeout=1.0), in_process=False) as hub:
        alice_pid = (await hub.client.post("/gh/pid", headers=as_user("alice@example.com"))).json()["result"]
        bob_pid = (await hub.client.post("/gh/pid", headers=as_user("bob@example.com"))).json()["result"]
        assert alice_pid != bob_pid
        environ = {pid: psutil.Process(pid).environ() for pid in (alice_pid, bob_pid)}
        assert environ[alice_pid]["TOKEN"] == ALICE_TOKEN and environ[bob_pid]["TOKEN"] == BOB_TOKEN
        mine = samples()
        tokens = [p.environ().get("TOKEN") for p in mine]
        # three sample processes for gh (listing, alice, bob) and one for plainserver; the listing one has no TOKEN
        assert sorted(t or "" for t in tokens) == sorted(["", "", ALICE_TOKEN, BOB_TOKEN]), tokens
        await until(lambda: gone(alice_pid) and gone(bob_pid))
        assert pool_of(hub).running == 0
        assert len(samples()) == len(mine) - 2  # the listing one still runs


def samples() -> list[psutil.Process]:
    """This test's running sample servers (children of this process)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "tests.mcp_servers.sample" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------------- HTTP servers


async def test_an_http_server_gets_each_users_header_on_their_own_connection(
    upstreams: Any, caplog: pytest.LogCaptureFixture  # noqa: F811
):
    caplog.set_level(logging.DEBUG)
    upstream = upstreams("streamable-http")
    await upstream.start()
    raw = config()
    raw["servers"]["remote"] = remote(upstream, headers={"Authorization": "Bearer ${user.GITHUB_TOKEN}",
                                                         "X-Region": "home"})
    async with running_hub(raw) as hub:
        assert "/whoami" in (await hub.client.get("/remote/openapi.json")).json()["paths"]
        for email, token in (("alice@example.com", ALICE_TOKEN), ("bob@example.com", BOB_TOKEN)):
            response = await hub.client.post("/remote/whoami", json={}, headers=as_user(email))
            assert response.status_code == 200, response.text
            assert response.json() == {"authorization": f"Bearer {token}", "x-region": "home"}
        assert pool_of(hub, "remote").running == 2
        dave = await hub.client.post("/remote/whoami", json={}, headers=as_user("dave@example.com"))
        assert "GITHUB_TOKEN" in assert_error(dave, 403, "forbidden")["message"]
    assert ALICE_TOKEN not in caplog.text and BOB_TOKEN not in caplog.text


class _BearerPerUser(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class _Source:
    """A UserAuthSource, as the OAuth part registers one: alice is connected, nobody else is."""

    def applies_to(self, server: str) -> bool:
        return server == "oauthy"

    def auth_for(self, server: str, user: str) -> httpx2.Auth:
        if user != "alice@example.com":
            raise Forbidden(f"user '{user}' has not connected server '{server}': open /oauth/{server}/connect",
                            server=server)
        return _BearerPerUser("oauth-token-of-alice")


async def test_a_registered_auth_source_makes_an_http_server_per_user_with_each_users_auth(upstreams: Any):  # noqa: F811
    upstream = upstreams("streamable-http")
    await upstream.start()
    raw = config()
    raw["servers"] = {"oauthy": remote(upstream)}
    cfg = config_of(raw)
    async with Supervisor(cfg, connect=transports.connect, user_auth=[_Source()]) as supervisor:
        app = make_app(supervisor, cfg)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://hub") as client:
            handle = supervisor.servers["oauthy"]
            # nothing to list with before a user connects (an OAuth server answers 401): ready, no tools yet
            assert handle.users is not None and handle.tools == {} and handle.state is State.READY
            alice = await client.post("/oauthy/whoami", json={}, headers=as_user("alice@example.com"))
            assert alice.status_code == 200, alice.text
            assert "whoami" in handle.tools  # adopted from alice's instance
            assert alice.json()["authorization"] == "Bearer oauth-token-of-alice"
            bob = await client.post("/oauthy/whoami", json={}, headers=as_user("bob@example.com"))
            assert assert_error(bob, 403, "forbidden")["message"] == (
                "user 'bob@example.com' has not connected server 'oauthy': open /oauth/oauthy/connect")
            plain = await client.post("/oauthy/whoami", json={}, headers=PLAIN_HEADERS)
            assert "is not a forwarded user" in assert_error(plain, 403, "forbidden")["message"]
            assert handle.users.running == 1
            handle.users.forget("alice@example.com")
            assert handle.users.running == 0


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("field,value,hint", [
    ("args", ["-m", "x", "${user.GITHUB_TOKEN}"], "pass it in env:"),
    ("command", "${user.GITHUB_TOKEN}", "pass it in env:"),
    ("cwd", "/tmp/${user.GITHUB_TOKEN}", "use it in the server's env (stdio) or headers"),
])
def test_a_user_secret_outside_env_or_headers_is_a_config_error_saying_where_it_can_go(field, value, hint):
    raw = config()
    raw["servers"]["gh"][field] = value
    with pytest.raises(ConfigError) as caught:
        config_of(raw)
    where = f"servers.gh.{field}" + ("[2]" if field == "args" else "")
    assert str(caught.value).startswith(
        f"test config: {where}: ${{user.…}} (the calling user's secret) cannot be used here, only in the values of "
        "a server's env (stdio) or headers (sse / streamable-http); "), caught.value
    assert hint in str(caught.value)


def test_a_user_secret_in_a_url_or_a_key_or_malformed_is_a_config_error():
    raw = config()
    raw["servers"]["remote"] = {"transport": "sse", "url": "http://h/sse?token=${user.T}"}
    with pytest.raises(ConfigError, match=r"servers\.remote\.url: .*put the secret in a header instead"):
        config_of(raw)
    raw = config()
    raw["auth"]["api_keys"][1]["key"] = "${user.T}"
    with pytest.raises(ConfigError, match=r"auth\.api_keys\[1\]\.key: .*works only in a server's env or headers"):
        config_of(raw)
    raw = config()
    raw["servers"]["gh"]["env"] = {"TOKEN": "${user.GITHUB-TOKEN}"}
    with pytest.raises(ConfigError, match=r"servers\.gh\.env\.TOKEN: malformed user secret placeholder"):
        config_of(raw)


def test_user_secrets_survive_variable_expansion_and_are_hidden_from_repr():
    cfg = parse_config(yaml.safe_dump(config()) + "\n", source="x",
                       environ={})  # no ${VAR} needed for ${user.…}
    assert cfg.servers["gh"].env["TOKEN"] == "${user.GITHUB_TOKEN}"  # type: ignore[union-attr]
    assert ALICE_TOKEN not in repr(cfg.auth.users["alice@example.com"])
    expanded = parse_config("auth: {users: {a: {secrets: {T: '${ALICE}'}}}}", source="x", environ={"ALICE": "v1"})
    assert expanded.auth.users["a"].secrets == {"T": "v1"}


def test_check_warns_about_a_user_secret_no_user_has():
    raw = config()
    raw["servers"]["gh"]["env"]["OTHER"] = "${user.NOBODY_HAS}"
    assert undefined_secrets(config_of(raw), "hub.yaml") == [
        "hub.yaml: servers.gh: ${user.NOBODY_HAS} is a secret no user has (add it as "
        "auth.users.<id>.secrets.NOBODY_HAS); until then every call to 'gh' is refused 403"]


async def test_resources_and_prompts_come_from_the_users_own_instance():
    async with running_hub(config()) as hub:
        listed = await hub.client.get("/gh/resources", headers=as_user("alice@example.com"))
        assert listed.status_code == 200, listed.text
        assert pool_of(hub).running == 1 and set(pool_of(hub)._entries) == {"alice@example.com"}
        refused = await hub.client.get("/gh/resources", headers=as_user("dave@example.com"))
        assert "GITHUB_TOKEN" in assert_error(refused, 403, "forbidden")["message"]


@asynccontextmanager
async def needs_token(name: str, cfg: ServerConfig, **options: Any) -> AsyncIterator[Any]:
    """A server that cannot start without its token (a remote that wants credentials), in-process."""
    if isinstance(cfg, StdioServer) and "TOKEN" not in cfg.env:
        raise ConnectionRefusedError("no token")
    async with hub_connect(name, cfg, **options) as client:
        yield client


async def test_when_the_listing_instance_cannot_start_the_first_users_instance_lists_the_tools():
    cfg = config_of(config(restart={"initial_delay": 30, "max_delay": 30}))
    async with Supervisor(cfg, connect=needs_token) as supervisor:
        listing = supervisor.servers["gh"]
        assert listing.state is State.FAILED and not listing.tools
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=make_app(supervisor, cfg)),
                                      base_url="http://hub") as client:
            alice = await client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user("alice@example.com"))
            assert alice.status_code == 200, alice.text
            assert alice.json() == {"result": ALICE_TOKEN}
            assert "getenv" in listing.tools  # adopted from alice's instance: listed for everyone now
            assert "/gh/getenv" in (await client.get("/openapi.json")).json()["paths"]
            bob = await client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user("bob@example.com"))
            assert bob.json() == {"result": BOB_TOKEN}


async def test_a_reload_that_changes_a_users_secret_restarts_their_instance_with_the_new_one():
    async with running_hub(config()) as hub:
        assert await getenv(hub, "alice@example.com") == ALICE_TOKEN
        first = (await hub.client.post("/gh/pid", headers=as_user("alice@example.com"))).json()["result"]
        changed = config()
        changed["auth"]["users"]["alice@example.com"]["secrets"]["GITHUB_TOKEN"] = "ghp_alice_ROTATED_000"
        core(hub).reconfigure(config_of(changed))
        assert await getenv(hub, "alice@example.com") == "ghp_alice_ROTATED_000"
        assert (await hub.client.post("/gh/pid", headers=as_user("alice@example.com"))).json()["result"] != first
        assert await getenv(hub, "bob@example.com") == BOB_TOKEN
        assert pool_of(hub).running == 2


def test_mcphub_check_starts_the_listing_instance_and_warns_about_a_secret_no_user_has(tmp_path: Path):
    raw = config()
    raw["servers"]["gh"]["env"]["OTHER"] = "${user.NOBODY_HAS}"
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = cli("check", "-c", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "per user (0 running)" in result.stdout, result.stdout
    assert (f"⚠ {path}: servers.gh: ${{user.NOBODY_HAS}} is a secret no user has (add it as "
            "auth.users.<id>.secrets.NOBODY_HAS); until then every call to 'gh' is refused 403") in result.stdout
    assert ALICE_TOKEN not in result.stdout + result.stderr
    bad = tmp_path / "bad.yaml"
    raw["servers"]["gh"]["args"] = [*raw["servers"]["gh"]["args"], "${user.GITHUB_TOKEN}"]
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    refused = cli("check", "-c", str(bad))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"{bad}: servers.gh.args[2]: ${{user.…}} (the calling user's secret) cannot be used here" in refused.stderr


def test_mcphub_call_as_a_user_runs_their_own_instance(tmp_path: Path):
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config()), encoding="utf-8")
    getenv_args = ("call", "gh", "getenv", "--args", '{"name": "TOKEN"}', "-c", str(path))
    as_alice = cli(*getenv_args, "--user", "alice@example.com")
    assert as_alice.returncode == 0, as_alice.stdout + as_alice.stderr
    assert json.loads(as_alice.stdout) == {"result": ALICE_TOKEN}
    as_owner = cli(*getenv_args)
    assert as_owner.returncode == 1 and "needs the secret GITHUB_TOKEN" in as_owner.stdout, as_owner.stdout
    assert "add --user ID (users: alice@example.com, bob@example.com" in as_owner.stderr, as_owner.stderr
    unknown = cli(*getenv_args, "--user", "mallory@example.com")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr, unknown.stderr
    assert (f"--user: {path} has no user 'mallory@example.com' in auth.users (users: alice@example.com, "
            "bob@example.com, carol@example.com, dave@example.com)") in unknown.stderr
    assert ALICE_TOKEN not in as_owner.stdout + as_owner.stderr + unknown.stderr


async def test_stopping_one_users_instance_holds_up_no_other_users_call() -> None:
    # A server slow to exit (it ignores SIGTERM: the hub waits out its grace, then SIGKILLs the group).
    # While the reaper stops alice's idle instance, bob's first call starts his at once.
    raw = config(idle_timeout=0.5)
    raw["servers"]["gh"].update(command="sh", args=["-c", f"trap '' TERM; {PYTHON} -m tests.mcp_servers.sample; "
                                                          "sleep 20"])
    async with running_hub(raw, in_process=False) as hub:
        alice_pid = (await hub.client.post("/gh/pid", json={}, headers=as_user("alice@example.com"))).json()["result"]
        alice_group = psutil.Process(alice_pid).ppid()  # the sh that ignores SIGTERM: SIGKILLed at the end
        pool = pool_of(hub)
        await until(lambda: pool.running == 0)  # the reaper took alice's instance out; it is still stopping
        assert await getenv(hub, "bob@example.com") == BOB_TOKEN
        assert psutil.pid_exists(alice_group) and psutil.Process(alice_group).status() != psutil.STATUS_ZOMBIE, \
            "bob's call waited for alice's instance to stop"


async def test_one_user_named_by_two_instances_with_other_secrets_never_gets_the_others() -> None:
    # Two instances of one hub share server gh, and each names bob@example.com with a secret of its own.
    # While one bob's call runs, the other's is refused (503), never run on that instance; once it is
    # idle, the instance restarts with the other bob's secret.
    def auth(token: str) -> dict[str, Any]:
        return {"api_keys": [{"name": "openwebui", "key": KEY, "forwarded_user": {"jwt_secret": FORWARD_SECRET}}],
                "users": {"bob@example.com": {"secrets": {"GITHUB_TOKEN": token}}}}

    raw = {"servers": {"gh": sample_server(env={"TOKEN": "${user.GITHUB_TOKEN}"})},
           "instances": {"family": {"port": free_port(), "servers": ["gh"], "auth": auth("ghp_FAMILY_bob")},
                         "work": {"port": free_port(), "servers": ["gh"], "auth": auth("ghp_WORK_bob")}}}
    bob = as_user("bob@example.com")
    async with running_instances(raw) as hubs:
        family, work = hubs["family"], hubs["work"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: family.client.post("/gh/sleep", json={"seconds": 60}, headers=bob))
            await until(lambda: pool_of(family).running == 1 and pool_of(family)._entries[
                "bob@example.com"].in_flight == 1)
            refused = await work.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=bob)
            assert "busy with calls made with other secrets" in assert_error(refused, 503, "server_unavailable")[
                "message"]
            assert "ghp_FAMILY_bob" not in refused.text
            tg.cancel_scope.cancel()  # the family call hangs up: its instance is idle once the hub sees it
        with anyio.fail_after(WAIT):
            while pool_of(family)._entries["bob@example.com"].in_flight:
                await anyio.sleep(0.02)
        answered = await work.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=bob)
        assert answered.json() == {"result": "ghp_WORK_bob"}, answered.text


# ------------------------------------------------------------------------------------------ mounted


async def test_a_hub_that_mounts_a_per_user_server_calls_it_as_the_same_user() -> None:
    # Hub b mounts hub a (a sibling sharing its auth: the caller's key goes on), and sends the header that
    # named the user with each call, so hub a runs the call on that user's own instance.
    a_port = free_port()
    a_cfg = {**config(), "hub": {"port": a_port}}
    b_cfg = {"auth": config()["auth"], "hub": {"port": free_port(), "mount": ["a"]},
             "remotes": {"a": {"url": f"http://127.0.0.1:{a_port}"}}}
    async with running_instances(a_cfg) as a_hubs, running_instances(b_cfg) as b_hubs:
        b = b_hubs["hub"]
        with anyio.fail_after(WAIT):
            while (await b.client.get("/readyz")).json()["servers"].get("gh", {}).get("state") != "ready":
                await anyio.sleep(0.05)
        assert "gh" not in b.supervisor.servers  # hub a runs it; b serves it mounted
        for email, token in [("alice@example.com", ALICE_TOKEN), ("bob@example.com", BOB_TOKEN)]:
            response = await b.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=as_user(email))
            assert response.status_code == 200, response.text
            assert response.json() == {"result": token}
        job = await b.client.post("/gh/getenv", json={"name": "TOKEN"},
                                  headers={**as_user("alice@example.com"), "Prefer": "respond-async"})
        assert job.status_code == 202, job.text
        with anyio.fail_after(WAIT):
            while (done := (await b.client.get(job.headers["location"], headers=as_user("alice@example.com")
                                              )).json())["status"] == "running":
                await anyio.sleep(0.05)
        assert done["result"] == {"result": ALICE_TOKEN}, done
        plain = await b.client.post("/gh/getenv", json={"name": "TOKEN"}, headers=PLAIN_HEADERS)
        assert "is not a forwarded user" in assert_error(plain, 403, "forbidden")["message"]
        a = a_hubs["hub"]
        assert sorted(pool_of(a).users()) == ["alice@example.com", "bob@example.com"]
