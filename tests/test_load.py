"""Load through the hub: thousands of concurrent calls, each answered with its own result.

Real processes, on purpose, for one replica: the stdio child and uvicorn on 127.0.0.1, because a lost
or mixed-up answer under load could come from the wire (the HTTP protocol, stdio framing and coalesced
writes), which in-process runs do not cross. Two replicas run in-process (tests/hub.py): what they add
is the hub spreading calls over replicas, and in-process the same calls take half the time here.
"""

from __future__ import annotations

import re
import uuid

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.hub import running_hub, sample_server

pytestmark = pytest.mark.anyio

CALLS = 2000
CONCURRENCY = 100
LOAD_TIMEOUT = 50.0  # seconds for all calls: ~5 s here; the bound only stops a hang


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(part in match.group(1).split(",") for part in wanted.split(",")):
            return float(match.group(2))
    return 0.0


@pytest.mark.parametrize(("replicas", "in_process"), [(1, False), (2, True)], ids=["1-real", "2-in-process"])
async def test_every_concurrent_call_gets_its_own_answer_and_none_is_lost(replicas: int, in_process: bool):
    run = uuid.uuid4().hex
    config = {"servers": {"sample": sample_server(replicas=replicas)}}
    async with running_hub(config, in_process=in_process) as hub:
        expected: dict[int, object] = {}
        answers: dict[int, httpx2.Response] = {}
        limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with hub.new_client(limits=limits, timeout=30) as client:
            requests = iter(range(CALLS))

            async def worker() -> None:
                for i in requests:  # one shared iterator: every index is sent exactly once
                    if i % 2:
                        text = f"{run}-{i}-{'é' * (i % 7)}"
                        expected[i] = {"result": text}  # a str return is structured as {"result": ...}
                        answers[i] = await client.post("/sample/echo", json={"text": text})
                    else:
                        a, b = i * 7919, -i
                        expected[i] = {"total": a + b, "operands": [a, b]}
                        answers[i] = await client.post("/sample/add", json={"a": a, "b": b})

            with anyio.fail_after(LOAD_TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for _ in range(CONCURRENCY):
                        tg.start_soon(worker)
            metrics = (await client.get("/metrics")).text

        assert sorted(answers) == list(range(CALLS))  # zero lost
        failed = {i: (r.status_code, r.text) for i, r in answers.items() if r.status_code != 200}
        assert failed == {}
        mixed = {i: r.json() for i, r in answers.items() if r.json() != expected[i]}
        assert mixed == {}  # zero mixed up
        # the hub counted exactly these calls, all successful
        counted = sum(
            _metric(metrics, "mcphub_tool_calls_total", server="sample", tool=t, status="200") for t in ("echo", "add")
        )
        assert counted == CALLS
        if replicas == 2:  # both processes took a share of the load
            pids = {(await hub.client.post("/sample/pid", json={})).json()["result"] for _ in range(8)}
            assert len(pids) == 2


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_concurrent_call_over_the_mcp_face_gets_its_own_answer(mode: str):
    """The same load through `/sample/mcp` with the SDK's client (2026: a POST per call; 2025: one
    session carrying every call): a real stdio child and uvicorn, so both wires are crossed."""
    run = uuid.uuid4().hex
    config = {"servers": {"sample": sample_server()}}
    async with running_hub(config, in_process=False) as hub:
        expected: dict[int, object] = {}
        answers: dict[int, object] = {}
        limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx2.AsyncClient(limits=limits, timeout=30) as http:
            async with Client(streamable_http_client(f"{hub.url}/sample/mcp", http_client=http), mode=mode) as mcp:
                requests = iter(range(CALLS))

                async def worker() -> None:
                    for i in requests:
                        if i % 2:
                            text = f"{run}-{i}-{'é' * (i % 7)}"
                            expected[i] = {"result": text}
                            result = await mcp.session.call_tool("echo", {"text": text})
                        else:
                            a, b = i * 7919, -i
                            expected[i] = {"total": a + b, "operands": [a, b]}
                            result = await mcp.session.call_tool("add", {"a": a, "b": b})
                        answers[i] = None if result.is_error else result.structured_content

                with anyio.fail_after(LOAD_TIMEOUT * 2):
                    async with anyio.create_task_group() as tg:
                        for _ in range(CONCURRENCY):
                            tg.start_soon(worker)
        metrics = (await hub.client.get("/metrics")).text

    assert sorted(answers) == list(range(CALLS))  # zero lost
    wrong = {i: answers[i] for i in answers if answers[i] != expected[i]}
    assert wrong == {}  # zero failed or mixed up
    counted = sum(_metric(metrics, "mcphub_tool_calls_total", server="sample", tool=t, status="200", face="mcp")
                  for t in ("echo", "add"))
    assert counted == CALLS
