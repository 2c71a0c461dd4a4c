"""hub.state: several hubs on one real Redis (`redis-server` on a free loopback port) share rate limits;
Redis down at start or lost mid-run is no outage (hub.state_failure), and the hubs recover by themselves."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcphub import shared_jobs
from mcphub import state as state_module
from mcphub.config import load_config, redacted_url
from mcphub.errors import ConfigError
from mcphub.invoker import Invoker
from mcphub.jobs import Job, JobStatus
from mcphub.shared_jobs import RedisJobStore
from mcphub.state import StateStore
from tests.hub import RunningHub, assert_error, config_of, core, running_hub, sample_server
from tests.redis_server import PASSWORD, RedisServer

KEY = "state-key-0a1b2c3d4e5f6a7b"  # 10 calls a minute
FREE_KEY = "state-free-key-9f8e7d6c5b4a"  # no limit: never touches Redis
FREE = {"Authorization": f"Bearer {FREE_KEY}"}
ARGS = {"a": 1, "b": 2}

pytestmark = pytest.mark.anyio


def certificates(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 it signed (openssl, as Debian has it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=mcphub test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san")
    return directory


@pytest.fixture(autouse=True)
def quick_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "PING_INTERVAL", 0.1)  # recovery seen in tenths of seconds, not 5 s


def hub_config(url: str, failure: str = "open") -> dict[str, Any]:
    return {
        "hub": {"state": url, "state_failure": failure},
        "auth": {"api_keys": [{"name": "limited", "key": KEY, "rate_limit": {"requests": 10, "per": 60}},
                              {"name": "free", "key": FREE_KEY}]},
        "servers": {"sample": sample_server()},
    }


@asynccontextmanager
async def two_hubs(url: str, failure: str = "open") -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_hub(hub_config(url, failure)))
        second = await stack.enter_async_context(running_hub(hub_config(url, failure)))
        yield first, second


async def call(hub: RunningHub, key: str = KEY) -> Any:
    return await hub.client.post("/sample/add", json=ARGS, headers={"Authorization": f"Bearer {key}"})


async def alternating(hubs: tuple[RunningHub, RunningHub], count: int) -> list[int]:
    return [(await call(hubs[i % 2])).status_code for i in range(count)]


async def wait_for_state(hub: RunningHub, wanted: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, Any] = (await hub.client.get("/readyz")).json()
            if body["state"]["state"] == wanted:
                return body
            await anyio.sleep(0.05)  # polling the condition: the monitor's next ping


# ---------------------------------------------------------------------------------------- config


def test_state_is_a_redis_url_from_a_variable_and_its_password_is_never_shown():
    config = config_of(f"hub:\n  state: rediss://:{PASSWORD}@cache:6380/2\n")
    assert config.hub.state == f"rediss://:{PASSWORD}@cache:6380/2" and config.hub.state_failure == "open"
    assert PASSWORD not in repr(config)
    with pytest.raises(ConfigError) as caught:
        config_of({"hub": {"state": f"http://:{PASSWORD}@cache:6379/0"}})
    message = str(caught.value)
    assert "hub.state: must be a Redis URL such as 'redis://host:6379/0'" in message
    assert "http://***@cache:6379/0" in message and PASSWORD not in message
    with pytest.raises(ConfigError, match=r"hub.state: the path must be a database number such as /0"):
        config_of({"hub": {"state": "redis://cache:6379/zero"}})
    with pytest.raises(ConfigError, match=r"hub.state_failure: Input should be 'open' or 'closed'"):
        config_of({"hub": {"state": "redis://cache", "state_failure": "maybe"}})
    assert config_of({"hub": {"state": ""}}).hub.state is None  # ${REDIS_URL:-} unset: memory
    assert redacted_url("redis://user:pw@h:1/0") == "redis://***@h:1/0"
    assert redacted_url("redis://h:1/0") == "redis://h:1/0"


def test_a_variable_names_the_url(tmp_path):
    path = tmp_path / "mcphub.yaml"
    path.write_text("hub:\n  state: ${REDIS_URL}\n")
    config = load_config(path, environ={"REDIS_URL": "redis://:secret@db:6379/1"})
    assert config.hub.state == "redis://:secret@db:6379/1"


# ----------------------------------------------------------------------------- shared rate limits


async def test_two_hubs_on_one_redis_share_a_keys_limit_exactly(redis_server, caplog):
    caplog.set_level(logging.INFO)
    await redis_server.start()
    async with two_hubs(redis_server.url) as hubs:
        with anyio.fail_after(20):
            statuses = await alternating(hubs, 20)
        assert statuses == [200] * 10 + [429] * 10  # 10 a minute across both, not 10 each
        refused = await call(hubs[1])
        assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) in range(1, 7)  # one token every 6 s
        assert (await call(hubs[0], FREE_KEY)).status_code == 200  # other keys are not limited
        ready = (await hubs[0].client.get("/readyz")).json()
        assert ready["state"] == {"store": "redis", "url": f"redis://***@127.0.0.1:{redis_server.port}/0",
                                  "state": "up", "failure": "open", "last_error": None}
    assert PASSWORD not in caplog.text


async def test_redis_lost_mid_load_under_open_lets_calls_pass_then_limits_resume(redis_server, caplog):
    caplog.set_level(logging.INFO)
    await redis_server.start()
    async with two_hubs(redis_server.url) as hubs:
        with anyio.fail_after(20):
            assert await alternating(hubs, 4) == [200] * 4
            redis_server.stop()
            statuses = await alternating(hubs, 30)  # 6 tokens were left: 30 would be refused past them
        assert statuses == [200] * 30  # open: no 500, no 429, no hang
        for hub in hubs:
            ready = await hub.client.get("/readyz")
            assert ready.status_code == 200  # a Redis outage is not the hub's: see mcphub/state.py
            assert ready.json()["state"]["state"] == "unreachable"
            assert "mcphub_state_errors_total{operation=" in (await hub.client.get("/metrics")).text
        warnings = [r for r in caplog.records if r.name == "mcphub.state" and "is unreachable" in r.getMessage()]
        assert len(warnings) == 2  # once per hub and outage, not per call
        assert "rate-limited calls pass unlimited" in warnings[0].getMessage()
        await redis_server.start()  # an empty Redis: the buckets start full
        for hub in hubs:
            await wait_for_state(hub, "up")
        with anyio.fail_after(20):
            assert await alternating(hubs, 12) == [200] * 10 + [429] * 2  # shared again, no restart
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


async def test_concurrent_calls_across_a_redis_kill_get_200_or_429_never_500_or_a_hang(redis_server, caplog):
    await redis_server.start()
    config = hub_config(redis_server.url)
    config["auth"]["api_keys"][0]["rate_limit"] = {"requests": 100, "per": 60}
    statuses: list[int] = []

    async def one(hub: RunningHub) -> None:
        statuses.append((await call(hub)).status_code)

    async with AsyncExitStack() as stack:
        hubs = [await stack.enter_async_context(running_hub(config)) for _ in range(2)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as load:
                for i in range(300):  # more at once than the pool's MAX_CONNECTIONS: they wait for one
                    load.start_soon(one, hubs[i % 2])
                    if i == 150:
                        redis_server.stop()
                    if i % 10 == 0:
                        await anyio.sleep(0)  # let some run before the next are started
    assert set(statuses) <= {200, 429} and len(statuses) == 300, sorted(set(statuses))
    assert statuses.count(200) >= 100  # the shared tokens, then (open) whatever came after the kill
    assert "Too many connections" not in caplog.text


async def test_redis_lost_under_closed_refuses_limited_calls_503_and_recovers(redis_server):
    await redis_server.start()
    async with two_hubs(redis_server.url, "closed") as hubs:
        assert await alternating(hubs, 2) == [200, 200]
        redis_server.stop()
        with anyio.fail_after(10):
            for hub in hubs:
                refused = await call(hub)
                error = assert_error(refused, 503, "server_unavailable")
                assert refused.headers["retry-after"] == str(state_module.CLOSED_RETRY_AFTER)
                assert error["message"] == (
                    f"the hub's shared state (Redis at redis://***@127.0.0.1:{redis_server.port}/0) is unreachable "
                    "and hub.state_failure is 'closed', so rate-limited calls are refused until it is back; "
                    f"retry in {state_module.CLOSED_RETRY_AFTER}s")
                assert (await call(hub, FREE_KEY)).status_code == 200  # a call without a limit never needs Redis
                assert (await hub.client.get("/readyz")).status_code == 200
        await redis_server.start()
        await wait_for_state(hubs[1], "up")
        await wait_for_state(hubs[0], "up")
        with anyio.fail_after(20):
            assert await alternating(hubs, 11) == [200] * 10 + [429]


async def test_redis_down_at_start_the_hub_says_so_and_serves(redis_server, caplog):
    caplog.set_level(logging.INFO)  # redis_server is never started: nothing listens on its port
    async with running_hub(hub_config(redis_server.url)) as hub:
        body = (await hub.client.get("/readyz")).json()
        assert body["status"] == "ready" and body["state"]["state"] == "unreachable"
        assert "Error" in body["state"]["last_error"] and PASSWORD not in str(body)
        with anyio.fail_after(10):
            assert [(await call(hub)).status_code for _ in range(12)] == [200] * 12
        await redis_server.start()
        await wait_for_state(hub, "up")
        with anyio.fail_after(10):
            assert [(await call(hub)).status_code for _ in range(11)] == [200] * 10 + [429]
    assert "is unreachable" in caplog.text and PASSWORD not in caplog.text


# ------------------------------------------------------------------------------------------- jobs


def jobs_config(url: str, markers: Path) -> dict[str, Any]:
    config = hub_config(url)
    config["servers"] = {"sample": sample_server(env={"SAMPLE_MARKERS": str(markers)})}
    return config


async def until_job(hub: RunningHub, location: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            response = await hub.client.get(location, headers=FREE)
            assert response.status_code == 200, response.text
            if done(response.json()):
                return dict(response.json())
            await anyio.sleep(0.02)  # polling the condition: a job has no event to wait on from outside


async def test_a_job_started_on_one_hub_is_read_and_cancelled_through_the_other(redis_server, tmp_path):
    await redis_server.start()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_hub(jobs_config(redis_server.url, tmp_path)))
        second = await stack.enter_async_context(running_hub(jobs_config(redis_server.url, tmp_path)))
        quick = await first.client.post("/sample/add", json=ARGS, headers={**FREE, "Prefer": "respond-async"})
        assert quick.status_code == 202, quick.text
        done = await until_job(second, quick.headers["location"], lambda job: job["status"] != "running")
        assert done["status"] == "succeeded" and done["result"]["total"] == 3
        listed = (await second.client.get("/jobs", headers=FREE)).json()
        assert [job["id"] for job in listed["jobs"]] == [done["id"]]

        started = await first.client.post("/sample/sleep", json={"seconds": 30, "tag": "far"},
                                          headers={**FREE, "Prefer": "respond-async"})
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        with anyio.fail_after(10):
            while not (tmp_path / "started-far").exists():
                await anyio.sleep(0.02)  # polling the condition: the server has the call
        assert (await second.client.get(location, headers=FREE)).json()["status"] == "running"
        with anyio.fail_after(5):  # the running hub hears it at its next renewal (jobs.KEEP_ALIVE)
            deleted = await second.client.delete(location, headers=FREE)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "cancelled"
        assert (await first.client.get(location, headers=FREE)).json()["status"] == "cancelled"
        with anyio.fail_after(5):
            while not (tmp_path / "cancelled-far").exists():
                await anyio.sleep(0.02)  # polling the condition: the server saw the cancellation
        assert_error(await second.client.delete(location, headers=FREE), 409, "conflict")


async def test_a_job_whose_replica_died_ends_failed_not_running(redis_server, monkeypatch):
    await redis_server.start()
    monkeypatch.setattr(shared_jobs, "LEASE_TTL", 0.3)  # the replica below never renews its lease
    dead = StateStore(redis_server.url, "open")
    try:  # what a replica that died mid-job leaves: a running job, its lease lapsing
        now = time.time()
        job = Job("0" * 32, "key:free", "sample", "sleep", JobStatus.RUNNING, now, now)
        assert await RedisJobStore(dead, lambda: 60).create(job, 10)
    finally:
        await dead.client.aclose()
    config = {**hub_config(redis_server.url), "jobs": {"max_running_per_key": 1}}
    async with running_hub(config) as hub:
        with anyio.fail_after(10):
            while await core(hub).state.client.exists(f"{shared_jobs.PREFIX}lease:{job.id}"):
                await anyio.sleep(0.02)  # polling the condition: the lease lapsed
        # a job whose replica died holds none of its owner's jobs.max_running_per_key
        started = await hub.client.post("/sample/add", json=ARGS, headers={**FREE, "Prefer": "respond-async"})
        assert started.status_code == 202, started.text
        ended = await until_job(hub, f"/jobs/{job.id}", lambda each: each["status"] != "running")
        assert ended["status"] == "failed" and ended["status_code"] == 503
        assert ended["error"]["message"] == shared_jobs.LOST
        assert (await hub.client.get("/jobs", headers=FREE)).json()["jobs"][0]["status"] == "failed"


def test_a_reload_keeps_the_state_store_and_says_so(caplog):
    invoker = Invoker(config_of(hub_config("redis://127.0.0.1:1/0")), lambda: {})
    invoker.reconfigure(config_of(hub_config("redis://127.0.0.1:2/0", "closed")))
    assert "hub.state and hub.state_failure take effect at the next start, not on reload" in caplog.text
    assert invoker.state is not None and invoker.state.shown_url == "redis://127.0.0.1:1/0"
    assert invoker.state.failure == "open"


async def test_jobs_are_503_while_redis_is_down_and_a_job_ending_then_harms_nothing(redis_server, caplog):
    await redis_server.start()
    async with running_hub(hub_config(redis_server.url)) as hub:
        running = await hub.client.post("/sample/sleep", json={"seconds": 0.5},
                                        headers={**FREE, "Prefer": "respond-async"})
        assert running.status_code == 202, running.text
        redis_server.stop()
        with anyio.fail_after(10):
            while "its end could not be recorded" not in caplog.text:
                await anyio.sleep(0.02)  # polling the condition: the job ended with Redis gone
        with anyio.fail_after(10):
            refused = await hub.client.post("/sample/add", json=ARGS, headers={**FREE, "Prefer": "respond-async"})
            listed = await hub.client.get("/jobs", headers=FREE)
        error = assert_error(refused, 503, "server_unavailable")
        assert error["message"] == (f"jobs are kept in the hub's shared state (Redis at redis://***@127.0.0.1:"
                                    f"{redis_server.port}/0), which is unreachable; retry in 5s")
        assert refused.headers["retry-after"] == "5"
        assert_error(listed, 503, "server_unavailable")
        assert (await call(hub, FREE_KEY)).status_code == 200  # synchronous calls go on
        await redis_server.start()
        await wait_for_state(hub, "up")
        again = await hub.client.post("/sample/add", json=ARGS, headers={**FREE, "Prefer": "respond-async"})
        assert again.status_code == 202, again.text  # the job runner lived through it
        done = await until_job(hub, again.headers["location"], lambda job: job["status"] != "running")
        assert done["status"] == "succeeded"


async def test_rediss_with_a_password_and_a_private_ca_shares_limits_over_tls(tmp_path):
    server = RedisServer(tls=certificates(tmp_path))
    try:
        await server.start()
        async with two_hubs(server.url) as hubs:
            with anyio.fail_after(20):
                assert await alternating(hubs, 11) == [200] * 10 + [429]
            shown = (await hubs[0].client.get("/readyz")).json()["state"]
            assert shown["state"] == "up" and shown["url"].startswith(f"rediss://***@127.0.0.1:{server.port}/0?")
    finally:
        server.stop()
