"""The runner's tools (runner/tools.py `HubTools`) against a hub's servers: a slow tool is waited for under
the server's `job_timeout` (a chat is not cut off at its `timeout`), and progress reaches the chat in
order, before the tool's outcome."""

from __future__ import annotations

import pytest

from mcphub.auth import ANONYMOUS
from mcphub.runner.tools import HubTools
from tests.hub import core, running_hub, sample_server

pytestmark = pytest.mark.anyio


async def test_a_tool_slower_than_the_servers_timeout_answers_under_its_job_timeout():
    raw = {"servers": {"sample": sample_server(timeout=0.2, job_timeout=30)}}
    async with running_hub(raw) as hub:
        tools = HubTools(core(hub), ANONYMOUS, ["*"])
        slow = await tools.call("sample_sleep", {"seconds": 0.5})
        assert slow.ok and slow.value == {"result": "slept 0.5"}, slow
        direct = await hub.client.post("/sample/sleep", json={"seconds": 0.5})  # the HTTP face keeps `timeout`
        assert direct.status_code == 504, direct.text


async def test_progress_reaches_the_chat_in_order_before_the_outcome():
    seen: list[tuple[str, float, float | None, str | None]] = []

    async def on_progress(name: str, progress: float, total: float | None, message: str | None) -> None:
        seen.append((name, progress, total, message))

    async with running_hub({"servers": {"sample": sample_server()}}) as hub:
        tools = HubTools(core(hub), ANONYMOUS, ["*"], on_progress=on_progress)
        outcome = await tools.call("sample_count", {"steps": 3})
        assert seen == [("sample_count", n, 3, f"step {n}") for n in (1, 2, 3)]  # all of them, already
        assert outcome.ok and outcome.value == {"result": "counted 3"}, outcome
