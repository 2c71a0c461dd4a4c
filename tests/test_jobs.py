"""Calls that outlast a timeout: jobs (`Prefer: respond-async`, /jobs), progress as server-sent events,
cancellation, ownership, expiry, a server dying under a job, and bad input. Every wait is bounded."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from openapi_spec_validator import validate
from rich.console import Console

from mcphub import jobs_http
from mcphub.cli_progress import progress_shown
from mcphub.jobs import Job, JobStatus, MemoryJobStore, Progress
from tests.hub import assert_error, core, running_hub, sample_server
from tests.test_cli import mcphub
from tests.test_schema import in_document
from tests.test_thirdparty import everything_server

pytestmark = pytest.mark.anyio

KEY = "key-of-alice-0123456789"
OTHER_KEY = "key-of-bob-0123456789"
ALICE = {"Authorization": f"Bearer {KEY}"}
BOB = {"Authorization": f"Bearer {OTHER_KEY}"}
ASYNC = {**ALICE, "Prefer": "respond-async"}
STREAM = {**ALICE, "Accept": "text/event-stream"}
LONG = "trigger-long-running-operation"
LONG_ARGS = {"duration": 3, "steps": 3}
LONG_TEXT = "Long running operation completed. Duration: 3 seconds, Steps: 3."


def config(servers: dict[str, Any], **jobs: Any) -> dict[str, Any]:
    return {"auth": {"api_keys": [{"name": "alice", "key": KEY}, {"name": "bob", "key": OTHER_KEY}]},
            "servers": servers, "jobs": jobs}


async def wait_for(hub: Any, location: str, done: Callable[[dict[str, Any]], bool], *, within: float = 10,
                   headers: dict[str, str] = ALICE) -> dict[str, Any]:
    """Poll a job until `done` (a job has no event to wait on from outside), bounded."""
    with anyio.fail_after(within):
        while True:
            response = await hub.client.get(location, headers=headers)
            assert response.status_code == 200, response.text
            if done(response.json()):
                return dict(response.json())
            await anyio.sleep(0.02)


def ended(job: dict[str, Any]) -> bool:
    return job["status"] != "running"


async def until(condition: Callable[[], bool], within: float = 5) -> None:
    with anyio.fail_after(within):
        while not condition():
            await anyio.sleep(0.01)


def events_of(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = next(line[6:] for line in lines if line.startswith("data: "))
        found.append((name, json.loads(data)))
    return found


# --------------------------------------------------------------------------- server-everything (a real process)


async def test_a_long_call_times_out_synchronously_but_succeeds_as_a_job_with_its_progress() -> None:
    async with running_hub(config({"every": everything_server(timeout=1)})) as hub:
        sync = await hub.client.post(f"/every/{LONG}", json=LONG_ARGS, headers=ALICE)
        error = assert_error(sync, 504, "timeout")
        assert "within 1s" in error["message"], error

        started = await hub.client.post(f"/every/{LONG}", json=LONG_ARGS, headers=ASYNC)
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/jobs/{job['id']}"
        assert started.headers["preference-applied"] == "respond-async"
        assert job["status"] == "running" and job["server"] == "every" and job["tool"] == LONG, job

        done = await wait_for(hub, started.headers["location"], ended)
        assert done["status"] == "succeeded", done
        assert done["status_code"] == 200
        assert done["result"] == LONG_TEXT, done
        assert done["progress"] == {"progress": 3, "total": 3, "message": None}, done
        listed = (await hub.client.get("/jobs", headers=ALICE)).json()["jobs"]
        assert [each["id"] for each in listed] == [job["id"]]


async def test_a_long_call_as_an_event_stream_sends_its_progress_then_its_result() -> None:
    async with running_hub(config({"every": everything_server(timeout=1)}), listen=True) as hub:
        arrived: list[float] = []
        text = ""
        async with hub.client.stream("POST", f"/every/{LONG}", json=LONG_ARGS, headers=STREAM) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_text():
                arrived.append(time.monotonic())
                text += chunk
        events = events_of(text)
        assert [name for name, _ in events] == ["progress", "progress", "progress", "result"], text
        assert [data["progress"] for _, data in events[:3]] == [1, 2, 3]
        assert all(data["total"] == 3 for _, data in events[:3])
        assert events[-1][1] == LONG_TEXT
        assert arrived[-1] - arrived[0] > 1.0, "the events came as they happened, not all at the end"


async def test_a_long_job_deleted_at_one_and_a_half_seconds_is_cancelled_within_a_second() -> None:
    async with running_hub(config({"every": everything_server(timeout=1)})) as hub:
        started = await hub.client.post(f"/every/{LONG}", json=LONG_ARGS, headers=ASYNC)
        location = started.headers["location"]
        await anyio.sleep(1.5)  # the point itself: past the server's 1 s timeout, mid-operation
        asked = time.monotonic()
        deleted = await hub.client.delete(location, headers=ALICE)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "cancelled" and time.monotonic() - asked < 1.0, deleted.json()
        assert deleted.json()["progress"]["progress"] == 1, deleted.json()  # one step of three was reported
        assert (await hub.client.get(location, headers=ALICE)).json()["status"] == "cancelled"


# -------------------------------------------------------------------------------- the sample server (in-process)


def sample(markers: Path | None = None, **overrides: Any) -> dict[str, Any]:
    env = {"SAMPLE_MARKERS": str(markers)} if markers else {}
    return sample_server(env=env, **overrides)


async def test_a_deleted_job_is_cancelled_at_once_and_the_server_sees_the_cancellation(tmp_path: Path) -> None:
    async with running_hub(config({"sample": sample(tmp_path, timeout=1)})) as hub:
        started = await hub.client.post("/sample/sleep", json={"seconds": 30, "tag": "del"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        await until(lambda: (tmp_path / "started-del").exists())
        await anyio.sleep(1.5)  # the point itself: past the server's 1 s timeout (the job has job_timeout)
        assert (await hub.client.get(location, headers=ALICE)).json()["status"] == "running"
        asked = time.monotonic()
        deleted = await hub.client.delete(location, headers=ALICE)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "cancelled"
        assert time.monotonic() - asked < 1.0
        assert (await hub.client.get(location, headers=ALICE)).json()["status"] == "cancelled"
        await until(lambda: (tmp_path / "cancelled-del").exists())

        again = await hub.client.delete(location, headers=ALICE)
        error = assert_error(again, 409, "conflict")
        assert "already ended (cancelled)" in error["message"], error


async def test_a_job_is_seen_only_by_the_credential_that_started_it() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)
        location = started.headers["location"]
        for method in ("GET", "DELETE"):
            error = assert_error(await hub.client.request(method, location, headers=BOB), 404, "not_found")
            assert started.json()["id"] in error["message"]
        assert (await hub.client.get("/jobs", headers=BOB)).json() == {"jobs": []}
        assert_error(await hub.client.get(location), 401, "unauthorized")
        assert (await hub.client.delete(location, headers=ALICE)).json()["status"] == "cancelled"


async def test_a_finished_job_is_gone_after_the_ttl() -> None:
    async with running_hub(config({"sample": sample()}, ttl=0.5)) as hub:
        started = await hub.client.post("/sample/echo", json={"text": "hi"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        done = await wait_for(hub, location, ended)
        assert done["result"] == {"result": "hi"}
        with anyio.fail_after(5):
            while (response := await hub.client.get(location, headers=ALICE)).status_code == 200:
                await anyio.sleep(0.05)
        error = assert_error(response, 404, "not_found")
        assert "jobs.ttl" in error["message"], error
        assert (await hub.client.get("/jobs", headers=ALICE)).json() == {"jobs": []}


async def test_a_server_that_dies_under_a_job_fails_it_promptly_with_a_503() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/sleep", json={"seconds": 60}, headers=ASYNC)
        location = started.headers["location"]
        began = time.monotonic()
        await hub.client.post("/sample/crash", json={}, headers=ALICE)  # the server ends mid-call
        done = await wait_for(hub, location, ended, within=10)
        assert time.monotonic() - began < 10
        assert done["status"] == "failed" and done["status_code"] == 503, done
        assert done["error"]["type"] == "server_unavailable" and done["error"]["server"] == "sample", done


async def test_a_server_process_killed_under_a_job_fails_it_promptly_with_a_503() -> None:
    async with running_hub(config({"sample": sample_server(timeout=1)}), in_process=False) as hub:
        pid = (await hub.client.post("/sample/pid", json={}, headers=ALICE)).json()["result"]
        started = await hub.client.post("/sample/sleep", json={"seconds": 60}, headers=ASYNC)
        location = started.headers["location"]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        done = await wait_for(hub, location, ended, within=10)
        assert time.monotonic() - killed_at < 5
        assert done["status"] == "failed" and done["status_code"] == 503, done
        assert done["error"]["type"] == "server_unavailable", done


async def test_hundreds_of_concurrent_jobs_each_end_with_their_own_result() -> None:
    count = 300
    raw = config({"sample": sample()}, max_running_per_key=count)
    raw["hub"] = {"limits": {"max_concurrent_calls": count}}
    async with running_hub(raw) as hub:
        locations: dict[int, str] = {}

        async def start(i: int) -> None:
            response = await hub.client.post("/sample/add", json={"a": i, "b": 1_000_000}, headers=ASYNC)
            assert response.status_code == 202, response.text
            locations[i] = response.headers["location"]

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(start, i)
        assert len(set(locations.values())) == count
        for i, location in locations.items():
            done = await wait_for(hub, location, ended)
            assert done["status"] == "succeeded", done
            assert done["result"] == {"total": i + 1_000_000, "operands": [i, 1_000_000]}, done
        assert len((await hub.client.get("/jobs", headers=ALICE)).json()["jobs"]) == count


async def test_a_job_keeps_the_progress_its_server_reported() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/count", json={"steps": 4}, headers=ASYNC)
        done = await wait_for(hub, started.headers["location"], ended)
        assert done["status"] == "succeeded" and done["result"] == {"result": "counted 4"}, done
        assert done["progress"] == {"progress": 4, "total": 4, "message": "step 4"}, done


async def test_a_job_fails_with_the_error_the_synchronous_call_would_have_answered() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/fail", json={"message": "no luck"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        done = await wait_for(hub, started.headers["location"], ended)
        assert done["status"] == "failed" and done["status_code"] == 400, done
        assert done["error"]["type"] == "tool_error" and "no luck" in done["error"]["message"], done


async def test_a_finished_job_keeps_its_answer_once() -> None:
    """A job started over HTTP keeps its body, not the server's MCP answer besides (content and
    structuredContent: the answer three times over, for jobs.ttl); read as a task it is mapped from the body."""
    async with running_hub(config({"sample": sample()})) as hub:
        text = "x" * 100_000
        started = await hub.client.post("/sample/echo", json={"text": text}, headers=ASYNC)
        done = await wait_for(hub, started.headers["location"], ended)
        assert done["status"] == "succeeded" and done["result"] == {"result": text}, str(done)[:200]
        stored = await hub.app.state.jobs.store.get(done["id"])
        assert stored is not None and stored.mcp is None, str(stored)[:200]
        assert len(json.dumps(stored.to_json())) < 1.1 * len(text)


async def test_running_jobs_per_key_are_limited() -> None:
    async with running_hub(config({"sample": sample()}, max_running_per_key=2)) as hub:
        for _ in range(2):
            assert (await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)).status_code == 202
        over = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)
        error = assert_error(over, 429, "rate_limited")
        assert "jobs.max_running_per_key" in error["message"] and "'alice'" in error["message"], error
        assert int(over.headers["retry-after"]) >= 1
        assert (await hub.client.post("/sample/sleep", json={"seconds": 30},
                                      headers={**BOB, "Prefer": "respond-async"})).status_code == 202


async def test_shutdown_fails_the_jobs_still_running() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)
        job_id = started.json()["id"]
        runner = hub.app.state.jobs
    job = await runner.store.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.status_code == 503, job
    assert "shutting down" in job.error["message"], job


async def test_a_hub_told_to_stop_fails_its_running_jobs_at_once() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        started = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)
        core(hub).shut_down()  # what serve does on SIGTERM, before uvicorn's grace period
        done = await wait_for(hub, started.headers["location"], ended, within=5)
        assert done["status"] == "failed" and done["status_code"] == 503, done
        assert "shutting down" in done["error"]["message"], done
        refused = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=ASYNC)
        assert_error(refused, 503, "server_unavailable")
        assert (await hub.client.get("/jobs", headers=ALICE)).json()["jobs"] == [done]


# --------------------------------------------------------------------------------------------- bad input


async def test_a_call_refused_before_the_server_is_answered_at_once_and_leaves_no_job() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        assert_error(await hub.client.post("/sample/nope", json={}, headers=ASYNC), 404, "not_found")
        assert_error(await hub.client.post("/sample/add", json={"a": "x"}, headers=ASYNC), 422, "invalid_arguments")
        assert_error(await hub.client.post("/sample/add", json={"a": "x"}, headers=STREAM), 422, "invalid_arguments")
        assert_error(await hub.client.post("/sample/add", json={}, headers={"Prefer": "respond-async"}), 401,
                     "unauthorized")
        assert (await hub.client.get("/jobs", headers=ALICE)).json() == {"jobs": []}


async def test_bad_job_requests_get_clear_statuses() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        unknown = assert_error(await hub.client.get("/jobs/" + "0" * 32, headers=ALICE), 404, "not_found")
        assert "no job '" + "0" * 32 + "'" in unknown["message"]
        malformed = assert_error(await hub.client.get("/jobs/not-a-job", headers=ALICE), 400, "bad_request")
        assert "'not-a-job' is not a job id" in malformed["message"], malformed
        assert_error(await hub.client.delete("/jobs/not-a-job", headers=ALICE), 400, "bad_request")
        both = await hub.client.post("/sample/echo", json={"text": "x"}, headers={**ASYNC, **STREAM})
        assert "Prefer: respond-async" in assert_error(both, 400, "bad_request")["message"]

        finished = await hub.client.post("/sample/echo", json={"text": "x"}, headers=ASYNC)
        location = finished.headers["location"]
        await wait_for(hub, location, ended)
        conflict = assert_error(await hub.client.delete(location, headers=ALICE), 409, "conflict")
        assert "already ended (succeeded)" in conflict["message"], conflict


async def test_an_unknown_preference_is_ignored_as_rfc_7240_says() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        response = await hub.client.post("/sample/echo", json={"text": "x"},
                                         headers={**ALICE, "Prefer": "return=minimal, frobnicate"})
        assert response.status_code == 200, response.text
        assert response.json() == {"result": "x"}
        assert "preference-applied" not in response.headers
        mixed = await hub.client.post("/sample/echo", json={"text": "x"},
                                      headers={**ALICE, "Prefer": "handling=lenient, RESPOND-ASYNC; x=1"})
        assert mixed.status_code == 202, mixed.text
        assert mixed.headers["preference-applied"] == "respond-async"


# ------------------------------------------------------------------------------------------- the store


async def test_the_memory_store_keeps_jobs_as_plain_data_and_forgets_them_after_they_expire() -> None:
    now = [1000.0]
    store = MemoryJobStore(clock=lambda: now[0])
    job = Job("a" * 32, "key:alice", "s", "t", JobStatus.RUNNING, 1000.0, 1000.0, Progress(1, 3, "one"))
    assert Job.from_json(json.loads(json.dumps(job.to_json()))) == job
    assert await store.create(job, max_running=1)
    assert not await store.create(Job("b" * 32, "key:alice", "s", "t", JobStatus.RUNNING, 1000.0, 1000.0), 1)
    await store.update(Job(job.id, job.owner, "s", "t", JobStatus.SUCCEEDED, 1000.0, 1001.0, expires=1010.0))
    now[0] = 1009.0
    assert (await store.get(job.id)) is not None
    now[0] = 1010.0
    assert await store.get(job.id) is None
    assert await store.owned_by("key:alice") == []


def test_a_stored_job_with_fields_this_version_does_not_know_is_read_without_them() -> None:
    """Replicas of two versions share Redis during a rolling update: a job a newer one wrote, with a field
    this one lacks, is still read here (it was a TypeError: 500 on GET /jobs)."""
    job = Job("a" * 32, "key:alice", "s", "t", JobStatus.SUCCEEDED, 1000.0, 1001.0, Progress(1, 3, "one"),
              status_code=200, result="done", expires=2000.0)
    written = {**json.loads(json.dumps(job.to_json())), "shard": 7, "trace": {"id": "x"}}
    assert Job.from_json(written) == job


async def test_an_event_stream_keeps_an_idle_connection_alive_and_ends_with_the_error_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_http, "KEEPALIVE", 0.1)
    async with running_hub(config({"sample": sample(job_timeout=1)}), listen=True) as hub:
        response = await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=STREAM)
        assert response.status_code == 200
        assert ": still running" in response.text
        events = events_of(response.text)
        assert [name for name, _ in events] == ["error"], response.text
        assert events[0][1]["status_code"] == 504 and events[0][1]["error"]["type"] == "timeout", events
        assert "within 1s" in events[0][1]["error"]["message"]


async def test_the_memory_store_keeps_at_most_its_limit_of_finished_jobs() -> None:
    store = MemoryJobStore(clock=lambda: 0.0, max_finished=2)
    for n, expires in enumerate((30.0, 10.0, 20.0)):
        job = Job(f"{n:032x}", "key:alice", "s", "t", JobStatus.RUNNING, 0.0, 0.0)
        assert await store.create(job, max_running=5)
        await store.update(Job(job.id, job.owner, "s", "t", JobStatus.SUCCEEDED, 0.0, 1.0, expires=expires))
    assert [job.expires for job in await store.owned_by("key:alice")] == [30.0, 20.0]


async def test_an_event_stream_client_that_hangs_up_cancels_the_call(tmp_path: Path) -> None:
    async with running_hub(config({"sample": sample(tmp_path)}), listen=True) as hub:
        async with httpx2.AsyncClient(base_url=hub.url, timeout=10) as client:
            async with client.stream("POST", "/sample/sleep", json={"seconds": 30, "tag": "gone"},
                                     headers=STREAM) as response:
                assert response.status_code == 200
                await until(lambda: (tmp_path / "started-gone").exists())
        await until(lambda: (tmp_path / "cancelled-gone").exists())


# ------------------------------------------------------------------------------------------- the specs


async def test_the_specs_document_jobs_and_event_streams_without_adding_tools() -> None:
    async with running_hub(config({"sample": sample()})) as hub:
        for path, tool_path in (("/openapi.json", "/sample/count"), ("/sample/openapi.json", "/count")):
            spec = (await hub.client.get(path)).json()
            validate(spec)
            operation = spec["paths"][tool_path]["post"]
            assert "parameters" not in operation  # a converter would hand a Prefer parameter to the model
            assert operation["responses"]["202"] == {"$ref": "#/components/responses/JobAccepted"}  # one for all
            accepted = spec["components"]["responses"]["JobAccepted"]
            assert "Prefer: respond-async" in accepted["description"]
            assert set(accepted["headers"]) == {"Location", "Preference-Applied"}
            assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
            assert "text/event-stream" in operation["responses"]["200"]["content"]
            assert all(p.startswith(tool_path.rsplit("/", 1)[0]) for p in spec["paths"])  # no /jobs tools

        jobs = (await hub.client.get("/jobs/openapi.json")).json()
        validate(jobs)
        assert set(jobs["paths"]) == {"/jobs", "/jobs/{job}"}
        assert set(jobs["paths"]["/jobs/{job}"]) == {"parameters", "get", "delete"}
        assert "409" in jobs["paths"]["/jobs/{job}"]["delete"]["responses"]
        started = await hub.client.post("/sample/count", json={"steps": 2}, headers=ASYNC)
        done = await wait_for(hub, started.headers["location"], ended)
        assert in_document(jobs, {"$ref": "#/components/schemas/Job"}).is_valid(done), done
        assert in_document(jobs, {"$ref": "#/components/schemas/Job"}).is_valid(started.json())
        page = await hub.client.get("/jobs/docs")
        assert page.status_code == 200 and "/jobs/openapi.json" in page.text


# ------------------------------------------------------------------------------------- `mcphub call`


def test_mcphub_call_shows_the_progress_a_tool_reports_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"servers": {"sample": sample_server()}}), encoding="utf-8")
    result = mcphub("call", "-c", str(path), "sample", "count", "--args", '{"steps": 3}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"result": "counted 3"}
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    assert lines == ["progress: 1/3 step 1", "progress: 2/3 step 2", "progress: 3/3 step 3"], result.stderr


async def test_the_progress_bar_on_a_terminal_shows_the_step_and_its_message() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with progress_shown("sample/count", console) as progress:
        await progress(1, 4, "fetching")
        await progress(0.5, 4, "late and lower: dropped")
        await progress.settled()
        assert progress.latest == Progress(1, 4, "fetching")
    assert "sample/count fetching" in screen.getvalue() and "1/4" in screen.getvalue()
    assert "dropped" not in screen.getvalue()
