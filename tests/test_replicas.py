"""Replicas: two hubs on one real Redis (`redis-server` on a free loopback port), with deploy/nginx.conf in
a real nginx in front for the load runs. A load with unique arguments loses and mixes nothing and reaches
both replicas; one `mcphub serve` killed mid-load costs a bounded number of calls (nginx fails over) and its
jobs end `failed`; a job's event stream is followed from a replica other than the one running it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml

from mcphub import shared_jobs
from tests.helpers import free_port, mcphub_process, stop_process
from tests.hub import assert_error, running_hub, sample_server
from tests.test_deploy import DEPLOY, nginx
from tests.test_state import RedisServer

pytestmark = pytest.mark.anyio

KEY = "replicas-key-5e6f7a8b9c0d1e2f"
AUTH = {"Authorization": f"Bearer {KEY}"}
ASYNC = {**AUTH, "Prefer": "respond-async"}
FOLLOW = {**AUTH, "Accept": "text/event-stream"}
CALLS = 2_000  # the load run through nginx
CONCURRENCY = 50
LOAD_TIMEOUT = 180.0  # seconds for the load run (2 cores shared with other work; ~30 s measured)
READY_TIMEOUT = 30.0  # seconds for a hub process (one stdio server) or nginx to answer
KILL_CALLS = 600  # the load run during which one hub is killed
KILL_AT = 200  # the call index at which it is killed
KILL_CONCURRENCY = 20
DOOMED_JOBS = 3  # jobs running on the killed hub

# A stdio MCP server whose one tool reports progress i of `steps`, then waits for the file go-<i> in
# `gates` before going on: the test decides when each step happens, so a follower must see every one.
STEPPER = '''
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("stepper")


@mcp.tool(description="Report progress i of steps, then wait for the file go-<i> in gates; then answer.")
async def steps(steps: int, gates: str, ctx: Context) -> str:
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
        with anyio.fail_after(60):
            while not Path(gates, f"go-{i}").exists():
                await anyio.sleep(0.02)
    return f"stepped {steps}"


mcp.run()
'''


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def events_of(text: str) -> list[tuple[str, Any]]:
    """The server-sent events in `text` (comment lines skipped), as (name, data)."""
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            name = next(line[7:] for line in lines if line.startswith("event: "))
            found.append((name, json.loads(next(line[6:] for line in lines if line.startswith("data: ")))))
    return found


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1).split(",") for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


# ------------------------------------------------------------------------- following a job's events


def stepper_config(url: str | None, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "stepper.py"
    script.write_text(STEPPER, encoding="utf-8")
    config: dict[str, Any] = {
        "auth": {"api_keys": [{"name": "follower", "key": KEY}]},
        "servers": {"stepper": {"transport": "stdio", "command": sys.executable, "args": [str(script)]},
                    "sample": sample_server(env={"SAMPLE_MARKERS": str(tmp_path)})},
    }
    if url is not None:
        config["hub"] = {"state": url}
    return config


async def follow_stepping(client: httpx2.AsyncClient, location: str, gates: Path, steps: int) -> list[tuple[str, Any]]:
    """Follow the stepper job at `location`, opening each gate once its progress event has come."""
    text = ""
    async with client.stream("GET", location, headers=FOLLOW) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            text += chunk
            for name, data in events_of(text):
                if name == "progress":  # the step is seen: let the server take the next one
                    (gates / f"go-{int(data['progress'])}").touch()
    events = events_of(text)
    assert len(events) == steps + 1, text
    return events


async def test_a_job_started_on_one_replica_is_followed_as_events_from_the_other(redis_server, tmp_path):
    await redis_server.start()
    config = stepper_config(redis_server.url, tmp_path)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_hub(config))
        second = await stack.enter_async_context(running_hub(config, listen=True))  # a socket: events as they come
        started = await first.client.post("/stepper/steps", json={"steps": 3, "gates": str(tmp_path)}, headers=ASYNC)
        assert started.status_code == 202, started.text
        with anyio.fail_after(30):
            events = await follow_stepping(second.client, started.headers["location"], tmp_path, 3)
        assert events == [("progress", {"progress": i, "total": 3, "message": f"step {i}"}) for i in (1, 2, 3)] + [
            ("result", {"result": "stepped 3"})]

        # a job that has ended: its last progress and its end, at once, from either replica
        for hub in (first, second):
            again = await hub.client.get(started.headers["location"], headers=FOLLOW)
            assert events_of(again.text) == events[2:]

        # cancelled on the replica running it while followed from the other: the stream says so and ends
        sleeping = await first.client.post("/sample/sleep", json={"seconds": 30, "tag": "followed"}, headers=ASYNC)
        location = sleeping.headers["location"]
        with anyio.fail_after(10):
            while not (tmp_path / "started-followed").exists():
                await anyio.sleep(0.02)  # polling the condition: the server has the call
        text = ""
        with anyio.fail_after(15):
            async with second.client.stream("GET", location, headers=FOLLOW) as stream:
                assert stream.status_code == 200
                async def cancel() -> None:
                    assert (await first.client.delete(location, headers=AUTH)).status_code == 200

                async with anyio.create_task_group() as group:
                    group.start_soon(cancel)
                    async for chunk in stream.aiter_text():
                        text += chunk
        ((name, data),) = events_of(text)
        assert name == "cancelled" and data["status"] == "cancelled" and data["id"] == sleeping.json()["id"]

        # what cannot be followed is answered as GET answers it, as JSON
        assert_error(await second.client.get(f"/jobs/{'f' * 32}", headers=FOLLOW), 404, "not_found")
        assert_error(await second.client.get("/jobs/nope", headers=FOLLOW), 400, "bad_request")


async def test_a_job_is_followed_on_one_hub_without_shared_state(tmp_path):
    async with running_hub(stepper_config(None, tmp_path), listen=True) as hub:
        started = await hub.client.post("/stepper/steps", json={"steps": 2, "gates": str(tmp_path)}, headers=ASYNC)
        assert started.status_code == 202, started.text
        with anyio.fail_after(30):
            events = await follow_stepping(hub.client, started.headers["location"], tmp_path, 2)
        assert [name for name, _ in events] == ["progress", "progress", "result"]
        assert events[-1][1] == {"result": "stepped 2"}
