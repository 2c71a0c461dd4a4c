"""Supervision through the hub: crashes, failed starts, timeouts, hang-ups, replicas, logs. The sample
server runs in-process (its `crash` ends its connection the way a dying process does) and the app is
called through ASGI (tests/hub.py `running_hub`).

Real processes, on purpose: `test_server_killed_mid_call_answers_503_then_is_restarted` and
`test_idle_server_that_dies_is_noticed_and_restarted` (SIGKILL to a stdio child, then a restart),
`test_a_childs_stderr_is_logged_tagged_with_its_server` (the stderr pipe) and
`test_a_child_gets_its_proxy_and_its_env_but_not_the_hubs_secrets` (a process environment).
`test_client_hanging_up_cancels_the_mcp_call` needs uvicorn on a socket (ASGI delivers no hang-up).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.hub import assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

FAST_RESTART = {"initial_delay": 0.2, "max_delay": 1.0}


async def _wait_ready(hub, name: str, *, timeout: float = 20) -> dict:
    """Poll /readyz until `name` is ready (an external state: polling is the only way to see it)."""
    with anyio.fail_after(timeout):
        while True:
            body = (await hub.client.get("/readyz")).json()
            if body["servers"][name]["state"] == "ready":
                return body["servers"][name]
            await anyio.sleep(0.05)


async def _pid(hub, name: str = "sample") -> int:
    response = await hub.client.post(f"/{name}/pid", json={})
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def _wait_for_file(path: Path, *, timeout: float = 10) -> None:
    """A marker file another process drops (nothing announces it): look for it, bounded."""
    with anyio.fail_after(timeout):
        while not path.exists():
            await anyio.sleep(0.02)


async def test_server_killed_mid_call_answers_503_then_is_restarted(tmp_path: Path):
    config = {"servers": {"sample": sample_server(restart=FAST_RESTART, env={"SAMPLE_MARKERS": str(tmp_path)})}}
    async with running_hub(config, in_process=False) as hub:
        old = await _pid(hub)
        outcome: dict[str, httpx2.Response] = {}

        async def slow_call() -> None:
            outcome["r"] = await hub.client.post("/sample/sleep", json={"seconds": 30, "tag": "killed"})

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await _wait_for_file(tmp_path / "started-killed")  # the call reached the server
                os.kill(old, signal.SIGKILL)
        error = assert_error(outcome["r"], 503, "server_unavailable")
        assert int(outcome["r"].headers["Retry-After"]) >= 1
        assert error["server"] == "sample"
        state = await _wait_ready(hub, "sample")
        assert state["restarts"] >= 1
        new = await _pid(hub)
        assert new != old


async def test_crash_inside_a_tool_is_503_and_the_server_comes_back():
    async with running_hub({"servers": {"sample": sample_server(restart=FAST_RESTART)}}) as hub:
        assert_error(await hub.client.post("/sample/crash", json={}), 503, "server_unavailable")
        await _wait_ready(hub, "sample")
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 1})).json()["total"] == 2


async def test_idle_server_that_dies_is_noticed_and_restarted():
    async with running_hub({"servers": {"sample": sample_server(restart=FAST_RESTART)}}, in_process=False) as hub:
        old = await _pid(hub)
        os.kill(old, signal.SIGKILL)
        with anyio.fail_after(20):
            while hub.supervisor.servers["sample"].restarts == 0:
                await anyio.sleep(0.05)
        await _wait_ready(hub, "sample")
        assert await _pid(hub) != old


async def test_a_server_that_fails_to_start_does_not_stop_the_others():
    config = {"servers": {
        "good": sample_server(),
        "bad": sample_server(env={"SAMPLE_START": "fail"}, restart=FAST_RESTART),
    }}
    async with running_hub(config) as hub:
        ready = await hub.client.get("/readyz")
        assert ready.status_code == 503
        bad = ready.json()["servers"]["bad"]
        assert bad["state"] in ("failed", "restarting", "starting")
        assert "stderr in the hub's log" in (bad["last_error"] or "")  # the child's own words stay in the log
        assert "refusing to start" not in (bad["last_error"] or "")
        assert ready.json()["servers"]["good"]["state"] == "ready"
        assert (await hub.client.post("/good/add", json={"a": 1, "b": 2})).status_code == 200
        response = await hub.client.post("/bad/add", json={"a": 1, "b": 2})
        error = assert_error(response, 503, "server_unavailable")
        assert "stderr in the hub's log" in error["message"] and "refusing to start" not in error["message"]
        assert "Retry-After" in response.headers
        # it keeps being retried with backoff
        with anyio.fail_after(10):
            while hub.supervisor.servers["bad"].restarts < 2:
                await anyio.sleep(0.05)


async def test_optional_server_down_keeps_readyz_green():
    config = {"servers": {"good": sample_server(),
                          "extra": sample_server(env={"SAMPLE_START": "fail"}, required=False)}}
    async with running_hub(config) as hub:
        assert (await hub.client.get("/readyz")).status_code == 200


async def test_missing_command_is_reported_by_name():
    config = {"servers": {"ghost": {"transport": "stdio", "command": "no-such-mcp-server-xyz"}}}
    async with running_hub(config) as hub:
        body = (await hub.client.get("/readyz")).json()
        assert "no-such-mcp-server-xyz" in body["servers"]["ghost"]["last_error"]


async def test_server_that_never_answers_the_handshake_fails_with_a_timeout():
    config = {"servers": {"stuck": sample_server(env={"SAMPLE_START": "hang"}, connect_timeout=0.5,
                                                 restart={"policy": "never"})}}
    async with running_hub(config) as hub:
        body = (await hub.client.get("/readyz")).json()
        assert body["servers"]["stuck"]["state"] == "failed"
        assert "no answer within 0.5s" in body["servers"]["stuck"]["last_error"]


async def test_slow_tool_times_out_with_504_and_the_server_stays_usable():
    config = {"servers": {"sample": sample_server(timeout=30, tool_timeouts={"sleep": 0.5})}}
    async with running_hub(config) as hub:
        with anyio.fail_after(10):
            response = await hub.client.post("/sample/sleep", json={"seconds": 20})
        error = assert_error(response, 504, "timeout")
        assert "0.5s" in error["message"]
        assert (await hub.client.post("/sample/add", json={"a": 2, "b": 2})).json()["total"] == 4


async def test_client_hanging_up_cancels_the_mcp_call(tmp_path: Path):
    config = {"servers": {"sample": sample_server(env={"SAMPLE_MARKERS": str(tmp_path)})}}
    async with running_hub(config, listen=True) as hub:  # a hang-up needs a socket to hang up
        async with hub.new_client(timeout=30) as impatient:
            async def call() -> None:
                await impatient.post("/sample/sleep", json={"seconds": 30, "tag": "hangup"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await _wait_for_file(tmp_path / "started-hangup")
                tg.cancel_scope.cancel()  # the client gives up: its connection closes
        await _wait_for_file(tmp_path / "cancelled-hangup")


async def test_down_server_with_no_restart_answers_503_at_once():
    config = {"servers": {"sample": sample_server(restart={"policy": "never"})}}
    async with running_hub(config) as hub:
        assert_error(await hub.client.post("/sample/crash", json={}), 503, "server_unavailable")
        with anyio.fail_after(2):  # no hanging: the answer is immediate
            response = await hub.client.post("/sample/add", json={"a": 1, "b": 1})
        assert_error(response, 503, "server_unavailable")
        with anyio.fail_after(5):
            while (await hub.client.get("/readyz")).json()["servers"]["sample"]["state"] != "failed":
                await anyio.sleep(0.05)
        assert hub.supervisor.servers["sample"].restarts == 0


async def test_replicas_spread_concurrent_calls_over_several_processes():
    async with running_hub({"servers": {"sample": sample_server(replicas=2)}}) as hub:
        pids: set[int] = set()

        async def one() -> None:
            response = await hub.client.post("/sample/slow_pid", json={"seconds": 0.3})
            assert response.status_code == 200, response.text
            pids.add(response.json()["result"])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(one)
        handle = hub.supervisor.servers["sample"]
        assert len(handle.replicas) == 2 and all(r.state == "ready" for r in handle.replicas)
        assert len(pids) == 2


async def test_replica_crash_leaves_the_other_replica_serving():
    async with running_hub({"servers": {"sample": sample_server(replicas=2, restart=FAST_RESTART)}}) as hub:
        assert_error(await hub.client.post("/sample/crash", json={}), 503, "server_unavailable")
        # the survivor answers straight away
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 2})).status_code == 200


async def test_one_log_line_per_call_without_arguments(caplog):
    caplog.set_level(logging.INFO)
    async with running_hub({"servers": {"sample": sample_server()}}) as hub:
        await hub.client.post("/sample/echo", json={"text": "super-secret-argument"})
    access = [r.getMessage() for r in caplog.records if r.name == "mcphub.access"]
    assert any("sample/echo 200" in line for line in access), access
    assert not any("super-secret-argument" in r.getMessage() for r in caplog.records)


async def test_a_childs_stderr_is_logged_tagged_with_its_server(caplog):
    caplog.set_level(logging.INFO)
    async with running_hub({"servers": {"sample": sample_server()}}, in_process=False) as hub:
        await hub.client.post("/sample/shout", json={"text": "hello from the child"})
        with anyio.fail_after(5):  # another thread reads the child's stderr: look, bounded
            while not any("hello from the child" in r.getMessage() for r in caplog.records):
                await anyio.sleep(0.02)
    tagged = [r.getMessage() for r in caplog.records if r.name == "mcphub.stderr"]
    assert "[sample] hello from the child" in tagged


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_server_announcing_new_tools_gets_them_served(mode: str):
    async with running_hub({"servers": {"sample": sample_server(mode=mode)}}) as hub:
        assert_error(await hub.client.post("/sample/sprout", json={}), 404, "not_found")
        assert (await hub.client.post("/sample/grow", json={"name": "sprout"})).status_code == 200
        with anyio.fail_after(10):
            while (response := await hub.client.post("/sample/sprout", json={})).status_code != 200:
                await anyio.sleep(0.05)
        assert response.json() == {"result": "I am sprout"}
        assert "/sample/sprout" in (await hub.client.get("/openapi.json")).json()["paths"]


async def test_caller_identity_reaches_the_server_only_where_configured():
    key = "identity-test-key-0123456789"
    config = {
        "auth": {"api_keys": [{"name": "alice", "key": key}]},
        "servers": {"told": sample_server(forward_identity="io.mcphub/caller"), "untold": sample_server()},
    }
    auth = {"Authorization": f"Bearer {key}"}
    async with running_hub(config) as hub:
        told = await hub.client.post("/told/meta", json={}, headers=auth)
        assert told.status_code == 200, told.text
        assert told.json() == {"io.mcphub/caller": "key:alice"}
        untold = await hub.client.post("/untold/meta", json={}, headers=auth)
        assert untold.json() == {}
        assert key not in told.text


async def test_a_child_gets_its_proxy_and_its_env_but_not_the_hubs_secrets(monkeypatch):
    monkeypatch.setenv("MCPHUB_API_KEY", "hub-secret-key-0123456789")
    monkeypatch.setenv("SOME_HUB_SECRET", "do-not-leak")
    config = {"servers": {
        "proxied": sample_server(proxy="http://proxy.example:3128", env={"OWN": "mine"}),
        "direct": sample_server(),
    }}
    async with running_hub(config, in_process=False) as hub:
        async def env(server: str, name: str):
            response = await hub.client.post(f"/{server}/getenv", json={"name": name})
            assert response.status_code == 200, response.text
            return response.json()["result"]

        assert await env("proxied", "HTTPS_PROXY") == "http://proxy.example:3128"
        assert await env("proxied", "http_proxy") == "http://proxy.example:3128"
        assert await env("proxied", "OWN") == "mine"
        assert await env("direct", "HTTPS_PROXY") is None
        assert await env("proxied", "MCPHUB_API_KEY") is None
        assert await env("proxied", "SOME_HUB_SECRET") is None
