"""Fault injection through a real hub: a server killed mid-load, a server that hangs, a server that
writes garbage, and a hub stopped while calls are in flight. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
import yaml

from tests.helpers import alive, free_port, mcphub_process
from tests.hub import assert_error, module_server, running_hub, sample_server

pytestmark = pytest.mark.anyio

FAST_RESTART = {"initial_delay": 0.2, "max_delay": 1.0}
DOCUMENTED = {400, 401, 403, 404, 422, 502, 503, 504}
PROMPT = 10.0  # seconds: "promptly" for calls cut off by a kill (they would otherwise run for 60 s)
BACK = 15.0  # seconds for a killed server to be back and serving
STARTUP = 30.0  # seconds for a hub subprocess to be ready
EXIT = 20.0  # seconds for a hub subprocess to stop after SIGTERM


def garbage_server(**overrides: Any) -> dict[str, Any]:
    """Config of `tests/mcp_servers/garbage.py`, the hand-written misbehaving stdio server."""
    return module_server("garbage", **overrides)


async def _poll(predicate: Any, *, timeout: float, interval: float = 0.02) -> None:
    """Wait for state no event announces (another process, the hub's books), bounded."""
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(interval)


def _in_flight(hub: Any, server: str) -> int:
    return sum(replica.in_flight for replica in hub.supervisor.servers[server].replicas)


# ----------------------------------------------------------------------------------------- SIGKILL


async def test_server_killed_mid_load_answers_503_promptly_and_serves_again_within_seconds():
    config = {"servers": {"sample": sample_server(restart=FAST_RESTART, timeout=60)}}
    async with running_hub(config, in_process=False) as hub:  # kills real processes, calls hub.url
        old_pid = (await hub.client.post("/sample/pid", json={})).json()["result"]
        slow: dict[int, tuple[httpx2.Response, float]] = {}
        fast: list[tuple[int, httpx2.Response, float]] = []
        warmed = anyio.Event()
        stop = anyio.Event()
        limits = httpx2.Limits(max_connections=60)

        async with httpx2.AsyncClient(base_url=hub.url, limits=limits, timeout=90) as client:

            async def sleeper(i: int) -> None:
                response = await client.post("/sample/sleep", json={"seconds": 60, "tag": f"s{i}"})
                slow[i] = (response, time.monotonic())

            async def loader(worker: int) -> None:
                n = 0
                while not stop.is_set() and n < 10_000:
                    n += 1
                    a = worker * 100_000 + n
                    sent_at = time.monotonic()
                    response = await client.post("/sample/add", json={"a": a, "b": 1})
                    fast.append((a, response, sent_at))
                    if len(fast) >= 100:
                        warmed.set()

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(sleeper, i)
                for worker in range(20):
                    tg.start_soon(loader, worker)
                with anyio.fail_after(20):
                    await warmed.wait()

                async def sleepers_at_server() -> bool:
                    return _in_flight(hub, "sample") >= 20

                await _poll(sleepers_at_server, timeout=10)
                killed_at = time.monotonic()
                os.kill(old_pid, signal.SIGKILL)

                async def all_sleepers_answered() -> bool:
                    return len(slow) == 20

                await _poll(all_sleepers_answered, timeout=PROMPT)

                async def serving_again() -> bool:  # a call sent after the kill answered by the new process
                    return any(r.status_code == 200 and sent_at > killed_at for _, r, sent_at in fast)

                await _poll(serving_again, timeout=BACK)
                stop.set()

        for response, _ in slow.values():  # every call cut off by the kill: 503, the one error shape
            error = assert_error(response, 503, "server_unavailable")
            assert error["server"] == "sample" and error["tool"] == "sleep"
            assert int(response.headers["Retry-After"]) >= 1
        statuses = {r.status_code for _, r, _ in fast}
        assert statuses <= {200, 503}, statuses
        for a, response, _ in fast:
            if response.status_code == 200:
                assert response.json() == {"total": a + 1, "operands": [a, 1]}
            else:
                assert_error(response, 503, "server_unavailable")
        response = await hub.client.post("/sample/pid", json={})
        assert response.status_code == 200, response.text
        assert response.json()["result"] != old_pid
        assert (await hub.client.get("/readyz")).json()["servers"]["sample"]["restarts"] >= 1


# -------------------------------------------------------------------------------------------- hang


async def test_server_that_never_answers_times_out_with_504_while_the_hub_stays_responsive():
    config = {"servers": {"stuck": garbage_server(timeout=4), "sample": sample_server()}}
    async with running_hub(config, in_process=False) as hub:  # kills real processes, calls hub.url
        hung: list[httpx2.Response] = []
        meanwhile: dict[str, httpx2.Response] = {}
        hung_when_others_done: list[int] = []

        async def hang(i: int) -> None:
            hung.append(await hub.client.post("/stuck/hang", json={"text": f"h{i}"}))

        async def others() -> None:
            async def pending() -> bool:
                return _in_flight(hub, "stuck") == 10

            await _poll(pending, timeout=3)
            for path in ("/healthz", "/readyz", "/openapi.json", "/stuck/openapi.json", "/metrics"):
                meanwhile[path] = await hub.client.get(path)
            for i in range(10):
                meanwhile[f"/sample/add {i}"] = await hub.client.post("/sample/add", json={"a": i, "b": i})
            meanwhile["/stuck/ok"] = await hub.client.post("/stuck/ok", json={"text": "same session"})
            hung_when_others_done.append(len(hung))

        with anyio.fail_after(4 + 10):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(hang, i)
                tg.start_soon(others)

        assert hung_when_others_done == [0]  # everything else answered while the hung calls waited
        for what, response in meanwhile.items():
            assert response.status_code == 200, (what, response.text)
        assert meanwhile["/sample/add 3"].json()["total"] == 6
        assert meanwhile["/stuck/ok"].json() == "same session"
        assert len(hung) == 10
        for response in hung:
            error = assert_error(response, 504, "timeout")
            assert error["server"] == "stuck" and error["tool"] == "hang"
        # the timed-out calls left the session usable and the server up
        assert (await hub.client.post("/stuck/ok", json={"text": "after"})).json() == "after"
        assert (await hub.client.get("/readyz")).json()["servers"]["stuck"]["state"] == "ready"


# ----------------------------------------------------------------------------------------- garbage


async def test_server_writing_garbage_fails_its_calls_cleanly_and_the_others_go_on():
    config = {"servers": {"junk": garbage_server(timeout=3), "sample": sample_server()}}
    async with running_hub(config, in_process=False) as hub:  # kills real processes, calls hub.url
        outcome: dict[str, httpx2.Response] = {}

        async def call(key: str, path: str, body: dict[str, Any]) -> None:
            outcome[key] = await hub.client.post(path, json=body)

        with anyio.fail_after(3 + 10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "garbage", "/junk/garbage", {"text": "x"})
                tg.start_soon(call, "malformed", "/junk/malformed", {"text": "x"})
                tg.start_soon(call, "noise_then_ok", "/junk/noise_then_ok", {"text": "through the noise"})
                for i in range(20):
                    tg.start_soon(call, f"add {i}", "/sample/add", {"a": i, "b": 1})

        for key, response in outcome.items():
            assert response.status_code in DOCUMENTED | {200}, (key, response.text)
        # non-JSON lines never answer the call: it runs into the server's timeout
        error = assert_error(outcome["garbage"], 504, "timeout")
        assert error["server"] == "junk" and error["tool"] == "garbage"
        # an answer that is JSON-RPC but not a CallToolResult: the server answered garbage
        error = assert_error(outcome["malformed"], 502, "bad_gateway")
        assert error["server"] == "junk" and error["tool"] == "malformed"
        # noise before a proper answer does not lose the answer
        assert outcome["noise_then_ok"].status_code == 200, outcome["noise_then_ok"].text
        assert outcome["noise_then_ok"].json() == "through the noise"
        for i in range(20):
            assert outcome[f"add {i}"].json()["total"] == i + 1
        # the garbage did not cost the session: same process, still serving
        assert (await hub.client.post("/junk/ok", json={"text": "still here"})).json() == "still here"
        state = (await hub.client.get("/readyz")).json()["servers"]["junk"]
        assert state["state"] == "ready" and state["restarts"] == 0


async def test_an_answer_the_sdk_cannot_read_fails_that_call_at_once_not_at_its_timeout():
    # A lone surrogate escape is valid JSON but not Unicode text, and bytes that are not UTF-8 are not
    # JSON: the SDK's parser refuses both lines. Such a line still names the call it answers, so the
    # call fails with 502 when it arrives instead of waiting out the server's timeout.
    config = {"servers": {"junk": garbage_server(timeout=60)}}
    async with running_hub(config) as hub:
        with anyio.fail_after(10):  # far below the timeout: an answer lost would wait 60 s
            for tool, why in [("surrogate", "lone surrogate"), ("bad_utf8", "not UTF-8")]:
                response = await hub.client.post(f"/junk/{tool}", json={"text": "x"})
                error = assert_error(response, 502, "bad_gateway")
                assert error["server"] == "junk" and error["tool"] == tool, error
                assert "could not be read" in error["message"] and why in error["message"], error
            # the session goes on
            assert (await hub.client.post("/junk/ok", json={"text": "still here"})).json() == "still here"
        state = (await hub.client.get("/readyz")).json()["servers"]["junk"]
        assert state["state"] == "ready" and state["restarts"] == 0


# ---------------------------------------------------------------------------------------- shutdown


@contextmanager
def hub_process(config: dict[str, Any], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    with open(tmp_path / "hub.log", "w", encoding="utf-8") as log, \
            mcphub_process("serve", "-c", str(path), "--port", str(port), stdout=log) as proc:
        yield proc, f"http://127.0.0.1:{port}"


@dataclass
class Shutdown:
    children: list[int]  # the hub's descendants before the signal
    exit_code: int
    outcomes: list[httpx2.Response | httpx2.TransportError]  # one per call in flight


async def _sigterm_under_load(tmp_path: Path) -> Shutdown:
    """A `mcphub serve` process with 50 calls in flight (each confirmed at its server), then SIGTERM."""
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {
        "hub": {"reload": False},
        "servers": {
            "stuck": garbage_server(timeout=60, env={"GARBAGE_MARKERS": str(markers)}),
            "sample": sample_server(replicas=2, timeout=60, env={"SAMPLE_MARKERS": str(markers)}),
        },
    }
    outcomes: list[httpx2.Response | httpx2.TransportError] = []
    with hub_process(config, tmp_path) as (proc, url):
        async with httpx2.AsyncClient(base_url=url, timeout=60, limits=httpx2.Limits(max_connections=60)) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx2.TransportError:
                    return False

            await _poll(ready, timeout=STARTUP, interval=0.1)
            children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            assert len(children) >= 3, children

            async def call(path: str, body: dict[str, Any]) -> None:
                try:
                    outcomes.append(await client.post(path, json=body))
                except httpx2.TransportError as exc:
                    outcomes.append(exc)

            async def all_at_their_servers() -> bool:  # 40 garbage markers, 10 `started-<tag>` of sample's sleep
                return len([m for m in markers.iterdir() if not m.name.startswith("pid-")]) == 50

            with anyio.fail_after(EXIT):  # every call in flight ends long before its own 60 s
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(call, "/stuck/hang", {"text": str(i)})
                    for i in range(10):
                        tg.start_soon(call, "/sample/sleep", {"seconds": 60, "tag": str(i)})
                    await _poll(all_at_their_servers, timeout=10)
                    proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=EXIT)
    return Shutdown(children, exit_code, outcomes)


async def test_sigterm_with_50_calls_in_flight_ends_every_call_and_leaves_no_child_process(tmp_path: Path):
    shutdown = await _sigterm_under_load(tmp_path)
    assert shutdown.exit_code == 0
    assert len(shutdown.outcomes) == 50
    assert alive(shutdown.children) == [], f"children left behind: {alive(shutdown.children)}"


async def test_calls_in_flight_at_shutdown_answer_503_in_the_one_error_shape(tmp_path: Path):
    shutdown = await _sigterm_under_load(tmp_path)
    for outcome in shutdown.outcomes:
        assert isinstance(outcome, httpx2.Response), outcome
        assert_error(outcome, 503, "server_unavailable")
        assert int(outcome.headers["Retry-After"]) >= 1
