"""Region instances and federation: hubs mounting each other over HTTP.

In-process (tests/hub.py `running_instances`): what `mcphub serve [--instance NAME]` runs, each listener
on uvicorn at its own 127.0.0.1 port (a mounted hub is reached over HTTP), the sample servers in-process;
an instance that must stop while another goes on runs in a task of its own.

Real processes, on purpose: `test_a_mounted_region_serves_its_tools_through_the_other_hub` (two
`mcphub serve --instance` processes, end to end).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from anyio.abc import TaskGroup, TaskStatus
from openapi_spec_validator import validate

from mcphub import federation
from mcphub.config import load_config
from tests.helpers import REPO, free_port, mcphub_process, wait_until
from tests.hub import RunningHub, running_instances, sample_server
from tests.test_jobs import events_of

pytestmark = pytest.mark.anyio

STARTUP = 30.0
WAIT = 15.0  # seconds for a hub to notice another one come or go (a retry is at most federation.RETRY_MAX away)
CN_KEY = "cn-only-key-0123456789"
GLOBAL_KEY = "global-only-key-0123456789"
AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}


@contextmanager
def hub(config_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    with mcphub_process("serve", "-c", str(config_path), *args) as proc:
        yield proc


def regions(*, cn_auth: bool = False) -> dict[str, Any]:
    cn_port, global_port = free_port(), free_port()
    cn: dict[str, Any] = {"port": cn_port, "servers": ["clock"], "url": f"http://127.0.0.1:{cn_port}"}
    if cn_auth:
        cn["auth"] = {"api_keys": [{"name": "cn", "key": CN_KEY}]}
        cn["api_key"] = CN_KEY
    return {
        "auth": {"api_keys": [{"name": "owui", "key": GLOBAL_KEY}]},
        "servers": {"clock": sample_server(restart={"initial_delay": 0.2}), "local": sample_server()},
        "instances": {"global": {"port": global_port, "servers": ["local"], "mount": ["cn"]}, "cn": cn},
    }


def two_regions(tmp_path: Path) -> tuple[Path, int, int]:
    config = regions()
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, config["instances"]["cn"]["port"], config["instances"]["global"]["port"]


def ready(url: str, key: str | None = None) -> dict:
    return httpx2.get(f"{url}/readyz", timeout=5).json()


def mounted(url: str, server: str) -> bool:
    return ready(url)["servers"].get(server, {}).get("state") == "ready"


async def _readyz(hub: RunningHub) -> dict[str, Any]:
    body: dict[str, Any] = (await hub.client.get("/readyz")).json()
    return body


async def _until(check: Callable[[], Awaitable[Any]], *, timeout: float = WAIT) -> Any:
    """Another hub's view of this one changes on its own polling schedule: look again, bounded."""
    with anyio.fail_after(timeout):
        while not (value := await check()):
            await anyio.sleep(0.05)
    return value


async def _serves(hub: RunningHub, server: str) -> bool:
    return bool((await _readyz(hub))["servers"].get(server, {}).get("state") == "ready")


class Instance:
    """One instance of a config, run by a task of its own so that it can stop while others go on."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        self.config = config
        self.name = name
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def start(self, tg: TaskGroup) -> RunningHub:
        hubs: dict[str, RunningHub] = await tg.start(self._run)
        return hubs[self.name]

    async def _run(self, *, task_status: TaskStatus[dict[str, RunningHub]]) -> None:
        async with running_instances(self.config, instance=self.name) as hubs:
            task_status.started(hubs)
            await self._stop.wait()
        self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()


def test_a_mounted_region_serves_its_tools_through_the_other_hub(tmp_path: Path):
    path, cn_port, global_port = two_regions(tmp_path)
    g = f"http://127.0.0.1:{global_port}"
    auth = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    c = f"http://127.0.0.1:{cn_port}"
    with hub(path, "--instance", "cn"):
        wait_until(lambda: mounted(c, "clock"), timeout=STARTUP, what="cn ready")  # then global finds it at once
        with hub(path, "--instance", "global"):
            wait_until(lambda: mounted(g, "clock") and mounted(g, "local"), timeout=STARTUP, what="clock mounted")
            with httpx2.Client(base_url=g, headers=auth, timeout=30) as client:
                assert client.post("/clock/add", json={"a": 20, "b": 22}).json()["total"] == 42
                assert client.post("/local/add", json={"a": 1, "b": 1}).json()["total"] == 2
                spec = client.get("/openapi.json").json()
                validate(spec)
                assert spec["paths"]["/clock/add"]["post"]["operationId"] == "clock_add"
                one = client.get("/clock/openapi.json").json()
                validate(one)
                assert one["servers"] == [{"url": "/clock"}]
                body = ready(g)
                assert body["hubs"]["cn"]["state"] == "ready" and body["hubs"]["cn"]["servers"] == ["clock"]
                assert body["servers"]["clock"]["hub"] == "cn"
                # the remote's errors keep their status and shape
                failed = client.post("/clock/fail", json={"message": "from the NAS"})
                assert failed.status_code == 400
                assert failed.json()["error"]["type"] == "tool_error"
                assert "from the NAS" in failed.json()["error"]["message"]
                invalid = client.post("/clock/add", json={"a": "x"})
                assert invalid.status_code == 422
                assert {tuple(e["loc"]) for e in invalid.json()["error"]["errors"]} == {("body", "a"), ("body", "b")}
                # the caller's credential is checked here first
                assert client.post("/clock/add", json={"a": 1, "b": 2}, headers={"Authorization": "Bearer x"}
                                   ).status_code == 401


async def test_a_region_that_goes_down_only_takes_its_own_tools_and_comes_back():
    config = regions()
    async with anyio.create_task_group() as tg:
        cn = Instance(config, "cn")
        await cn.start(tg)
        glob = Instance(config, "global")
        g = await glob.start(tg)  # cn is up: its first listing mounts clock
        assert await _serves(g, "clock")
        await cn.stop()  # its listener closes: global's next request to it is refused
        started = time.monotonic()
        down = await g.client.post("/clock/add", json={"a": 1, "b": 2}, headers=AUTH)
        assert time.monotonic() - started < 5
        assert down.status_code == 503, down.text
        assert down.json()["error"]["type"] == "server_unavailable" and "Retry-After" in down.headers
        assert "cn" in down.json()["error"]["message"]
        assert (await g.client.post("/local/add", json={"a": 1, "b": 2}, headers=AUTH)).status_code == 200

        async def cn_state(state: str) -> bool:
            return bool((await _readyz(g))["hubs"]["cn"]["state"] == state)

        await _until(lambda: cn_state("failed"))
        cn = Instance(config, "cn")
        await cn.start(tg)

        async def clock_answers() -> bool:
            return (await g.client.post("/clock/add", json={"a": 2, "b": 3}, headers=AUTH)).status_code == 200

        await _until(clock_answers)
        await _until(lambda: cn_state("ready"))
        await cn.stop()
        await glob.stop()


async def test_keys_of_one_instance_do_not_open_another():
    config = regions(cn_auth=True)
    async with anyio.create_task_group() as tg:
        cn, glob = Instance(config, "cn"), Instance(config, "global")
        c = await cn.start(tg)
        g = await glob.start(tg)
        assert await _serves(g, "clock")
        # each hub accepts only its own key
        assert (await c.client.post("/clock/add", json={"a": 1, "b": 2}, headers=AUTH)).status_code == 401
        assert (await g.client.post("/local/add", json={"a": 1, "b": 2},
                                    headers={"Authorization": f"Bearer {CN_KEY}"})).status_code == 401
        assert (await c.client.post("/clock/add", json={"a": 1, "b": 2},
                                    headers={"Authorization": f"Bearer {CN_KEY}"})).status_code == 200
        # global reaches cn with instances.cn.api_key, never with the caller's key
        through = await g.client.post("/clock/add", json={"a": 1, "b": 2}, headers=AUTH)
        assert through.status_code == 200, through.text
        await glob.stop()
        await cn.stop()


async def test_every_instance_runs_in_one_process_without_instance():
    async with running_instances(regions()) as hubs:
        g, c = hubs["global"], hubs["cn"]
        assert await _serves(g, "clock") and await _serves(c, "clock")
        assert (await g.client.post("/clock/add", json={"a": 1, "b": 2}, headers=AUTH)).json()["total"] == 3
        assert (await c.client.post("/clock/add", json={"a": 1, "b": 2}, headers=AUTH)).json()["total"] == 3
        # cn does not serve global's local server
        assert (await c.client.post("/local/add", json={"a": 1, "b": 2}, headers=AUTH)).status_code == 404
        assert "hubs" not in await _readyz(g)  # siblings are served in-process, not over HTTP


async def test_remote_hubs_that_mount_each_other_detect_the_loop(monkeypatch: pytest.MonkeyPatch):
    # The loop shows in the second listing each way, after POLL_INTERVAL (10 s): list twice a second here.
    monkeypatch.setattr(federation, "POLL_INTERVAL", 0.5)
    a_port, b_port = free_port(), free_port()
    a_cfg = {"hub": {"port": a_port, "mount": ["b"]}, "servers": {"alpha": sample_server()},
             "remotes": {"b": {"url": f"http://127.0.0.1:{b_port}"}}}
    b_cfg = {"hub": {"port": b_port, "mount": ["a"]}, "servers": {"beta": sample_server()},
             "remotes": {"a": {"url": f"http://127.0.0.1:{a_port}"}}}
    async with running_instances(a_cfg) as a_hubs, running_instances(b_cfg) as b_hubs:
        a, b = a_hubs["hub"], b_hubs["hub"]

        async def each_mounts_the_other() -> bool:
            return await _serves(a, "beta") and await _serves(b, "alpha")

        await _until(each_mounts_the_other)

        async def loop_reported() -> str | None:
            error: str | None = (await _readyz(a))["hubs"]["b"]["last_error"]
            return error

        error = await _until(loop_reported)
        assert "mount loop" in error and "alpha" in error
        # each serves its own server and the other's, and nothing twice
        assert set((await _readyz(a))["servers"]) == {"alpha", "beta"}
        assert (await a.client.post("/beta/add", json={"a": 1, "b": 2})).json()["total"] == 3


def test_the_region_example_config_loads():
    config = load_config(REPO / "config" / "regions.yaml")
    assert config.instances["global"].mount == ["cn"]
    assert set(config.instances["cn"].servers) == {"time", "weather"}


async def test_a_job_on_a_mounted_server_runs_under_the_other_hubs_job_timeout_with_its_progress(tmp_path: Path):
    # The mounting hub forwards a job's call as an event stream: the hub that runs the server bounds it
    # by its job_timeout (not its 1 s timeout, nor the mount's 1 s read timeout), and progress comes
    # through as it happens. A deleted job hangs up, which cancels the call there.
    a_port, b_port = free_port(), free_port()
    a_cfg = {"hub": {"port": a_port},
             "servers": {"alpha": sample_server(timeout=1, env={"SAMPLE_MARKERS": str(tmp_path)})}}
    b_cfg = {"hub": {"port": b_port, "mount": ["a"]}, "remotes": {"a": {"url": f"http://127.0.0.1:{a_port}",
                                                                        "timeout": 1}}}
    job = {"Prefer": "respond-async"}
    async with running_instances(a_cfg), running_instances(b_cfg) as b_hubs:
        b = b_hubs["hub"]
        await _until(lambda: _serves(b, "alpha"))

        async def finished(location: str) -> dict[str, Any]:
            async def done() -> dict[str, Any] | None:
                body: dict[str, Any] = (await b.client.get(location)).json()
                return body if body["status"] != "running" else None
            return dict(await _until(done))

        sync = await b.client.post("/alpha/sleep", json={"seconds": 2})
        assert sync.status_code == 504, sync.text  # a synchronous call keeps the timeouts

        slow = await b.client.post("/alpha/sleep", json={"seconds": 2}, headers=job)
        assert slow.status_code == 202, slow.text
        done = await finished(slow.headers["location"])
        assert done["status"] == "succeeded" and done["result"] == {"result": "slept 2.0"}, done

        counted = await b.client.post("/alpha/count", json={"steps": 4}, headers=job)
        done = await finished(counted.headers["location"])
        assert done["status"] == "succeeded" and done["result"] == {"result": "counted 4"}, done
        assert done["progress"] == {"progress": 4, "total": 4, "message": "step 4"}, done

        failed = await b.client.post("/alpha/fail", json={"message": "from a"}, headers=job)
        done = await finished(failed.headers["location"])
        assert done["status"] == "failed" and done["status_code"] == 400, done
        assert done["error"]["type"] == "tool_error" and "from a" in done["error"]["message"], done

        long = await b.client.post("/alpha/sleep", json={"seconds": 30, "tag": "fed"}, headers=job)
        await _until(lambda: _exists(tmp_path / "started-fed"))
        deleted = await b.client.delete(long.headers["location"])
        assert deleted.json()["status"] == "cancelled", deleted.text
        await _until(lambda: _exists(tmp_path / "cancelled-fed"))

        # the server dies under a streamed call: its 503 comes through with when to try again
        async with b.client.stream("POST", "/alpha/crash", json={},
                                   headers={"Accept": "text/event-stream"}) as stream:
            text = "".join([chunk async for chunk in stream.aiter_text()])
        ((name, data),) = [(n, d) for n, d in events_of(text)]
        assert name == "error" and data["status_code"] == 503, text
        assert data["error"]["type"] == "server_unavailable" and data["retry_after"] >= 1, text


async def _exists(path: Path) -> bool:
    return path.exists()
