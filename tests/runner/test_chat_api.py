"""`/v1/chat/completions` and `/v1/models` on a hub (the sample server behind it), driven with the
`openai` client, against fake OpenAI-compatible and Ollama backends playing scripted models.

In-process (tests/hub.py): the app through ASGI, the sample server in-process; the `openai` client rides
the same ASGI transport, and so does the runner to its model backend (`running_hub(backend=...)`, the
hub's transport seam for the backend). Only the backend trouble tests reach a backend over a socket: one
that is down (nothing listens), and one that hangs (the runner's read timeout is the network's). ASGI
buffers a streamed answer whole, which these tests read whole anyway."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

import anyio
import httpx2
import openai
import pytest

from tests.fakes.llm import (
    REASONING,
    FakeLLM,
    Script,
    Turn,
    calls_then_reports,
    chained_adds,
    counts_forever,
    offered,
    parallel_adds,
    tool_results,
)
from tests.helpers import Front, free_port, serve_in_thread
from tests.hub import RunningHub, assert_error, config_of, sample_server
from tests.hub import running_hub as hub_running

pytestmark = pytest.mark.anyio

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT_TIMEOUT = 30  # seconds for one whole chat, tool steps included
HANG_UP_TIMEOUT = 10  # seconds for a hang-up to reach the backend (a few ms when it works)


BACKEND = Front()  # the module's one fake model server; each test puts its own fake behind it
BACKEND_URL = "http://llm"  # where the runner thinks its backend is: the ASGI transport takes it there
LLM = httpx2.ASGITransport(app=BACKEND)


def running_hub(raw: dict[str, Any], **options: Any) -> AbstractAsyncContextManager[RunningHub]:
    """tests.hub.running_hub, with the runner's backend requests going to BACKEND in-process."""
    return hub_running(raw, backend=LLM, **options)


@contextmanager
def fake_backend(kind: str, script: Script, **options: Any) -> Iterator[tuple[FakeLLM, str]]:
    """A fake model playing `script`; yields it and the runner's base_url for it."""
    fake = FakeLLM(script, **options)
    with BACKEND.behind(fake.openai_app() if kind == "openai" else fake.ollama_app()):
        yield fake, (BACKEND_URL + "/v1" if kind == "openai" else BACKEND_URL)


def hub_config(kind: str, base_url: str, **runner: Any) -> dict[str, Any]:
    return {
        "servers": {"sample": sample_server()},
        "runner": {"backend": kind, "base_url": base_url, "model": "fake-model", "servers": ["sample"], **runner},
    }


def client_for(hub: RunningHub, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=hub.url + "/v1", api_key=key, max_retries=0, timeout=CHAT_TIMEOUT,
                              http_client=hub.new_client(timeout=CHAT_TIMEOUT))


async def ask(hub: RunningHub, question: str, *, stream: bool, key: str = KEY) -> str:
    """The answer to one question, read as a client would (stream or not)."""
    async with client_for(hub, key) as client:
        with anyio.fail_after(CHAT_TIMEOUT):
            if not stream:
                completion = await client.chat.completions.create(
                    model="fake-model", messages=[{"role": "user", "content": question}])
                assert completion.choices[0].finish_reason == "stop"
                return completion.choices[0].message.content or ""
            pieces = []
            finish = None
            chunks = await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": question}], stream=True)
            async for chunk in chunks:
                assert chunk.object == "chat.completion.chunk"
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    finish = choice.finish_reason or finish
            assert finish == "stop"
            return "".join(pieces)


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m.get("role") == "tool"]


# ------------------------------------------------------------------------------ the loop end to end


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_each_tool_result_feeds_the_next_call_and_the_answer(kind: str, stream: bool) -> None:
    with fake_backend(kind, chained_adds) as (fake, base_url):
        async with running_hub(hub_config(kind, base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "What is 2+3, plus 10?", stream=stream)
    assert answer.endswith("The total is 15."), answer
    assert len(fake.requests) == 3
    assert tool_results(fake.requests[2]["messages"]) == [{"total": 5, "operands": [2, 3]},
                                                          {"total": 15, "operands": [5, 10]}]
    assert all(r["model"] == "fake-model" and r.get("stream", True) is stream for r in fake.requests)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_parallel_calls_in_one_turn_both_reach_the_model(kind: str, stream: bool) -> None:
    with fake_backend(kind, parallel_adds) as (fake, base_url):
        async with running_hub(hub_config(kind, base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "1+2 and 10+20, then add them", stream=stream)
    assert answer == "The sum is 33."
    second = fake.requests[1]["messages"]
    assert [r["total"] for r in tool_results(second)] == [3, 30]


async def test_the_model_is_offered_the_runner_servers_tools_as_server_underscore_tool() -> None:
    with fake_backend("openai", chained_adds) as (fake, base_url):
        config = hub_config("openai", base_url)
        config["servers"]["other"] = sample_server()
        async with running_hub(config, api_keys=(KEY,)) as hub:
            await ask(hub, "sum", stream=False)
    tools = {t["function"]["name"]: t for t in fake.requests[0]["tools"]}
    assert "sample_add" in tools and "sample_echo" in tools
    assert not any(name.startswith("other_") for name in tools)
    add = tools["sample_add"]
    assert add["type"] == "function" and add["function"]["description"] == "Add two integers."
    assert add["function"]["parameters"]["required"] == ["a", "b"]
    assert add["function"]["parameters"]["properties"]["a"]["type"] == "integer"


async def test_ollama_gets_num_ctx_and_tool_arguments_as_objects() -> None:
    with fake_backend("ollama", chained_adds) as (fake, base_url):
        async with running_hub(hub_config("ollama", base_url, num_ctx=8192), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "sum", stream=False)
    assert answer.endswith("The total is 15.")
    assert all(r["options"]["num_ctx"] == 8192 for r in fake.requests)
    assistant = [m for m in fake.requests[2]["messages"] if m.get("tool_calls")]
    assert [m["tool_calls"][0]["function"]["arguments"] for m in assistant] == [{"a": 2, "b": 3}, {"a": 5, "b": 10}]
    assert {m.get("tool_name") for m in fake.requests[2]["messages"] if m["role"] == "tool"} == {"sample_add"}


async def test_a_streamed_answer_arrives_in_several_openai_chunks_ending_with_done() -> None:
    with fake_backend("openai", lambda m, t: Turn("A fairly long answer, written in many small pieces."),
                      chunk_size=4) as (_, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            async with hub.client.stream("POST", "/v1/chat/completions", headers=AUTH, json={
                "model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            }) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = [line async for line in response.aiter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert len([c for c in contents if c]) > 5
    assert "".join(c or "" for c in contents) == "A fairly long answer, written in many small pieces."
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1


# ------------------------------------------------------------------------------------ model quirks


@pytest.mark.parametrize(("quirks", "stream"), [
    pytest.param({"stop_with_tools"}, False, id="finish_reason stop with tool calls"),
    pytest.param({"stop_with_tools"}, True, id="finish_reason stop with tool calls, streamed"),
    pytest.param({"no_ids"}, False, id="calls without ids"),
    pytest.param({"same_ids"}, False, id="every call id is call_0"),
    pytest.param({"same_ids"}, True, id="every call id is call_0, streamed"),
    pytest.param({"tagged"}, False, id="calls in tool_call tags"),
    pytest.param({"tagged"}, True, id="calls in tool_call tags, streamed"),
    pytest.param({"fenced"}, False, id="calls in a fenced json block"),
    pytest.param({"fenced"}, True, id="calls in a fenced json block, streamed"),
    pytest.param({"think", "tagged"}, True, id="reasoning and tagged calls, streamed"),
])
async def test_backend_quirks_still_give_the_chained_answer(quirks: set[str], stream: bool) -> None:
    with fake_backend("openai", chained_adds, quirks=quirks) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "sum", stream=stream)
    assert answer == "Let me add.\n\nThe total is 15.", answer
    assert len(fake.requests) == 3


@pytest.mark.parametrize("quirks", [{"index0"}, {"index0", "no_ids"}, {"index0", "same_ids"}],
                         ids=["index 0", "index 0 without ids", "index 0 and call_0"])
async def test_parallel_calls_streamed_with_one_index_are_told_apart(quirks: set[str]) -> None:
    with fake_backend("openai", parallel_adds, quirks=quirks) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "1+2 and 10+20, then add them", stream=True)
    assert answer == "The sum is 33."
    assistant = next(m for m in fake.requests[1]["messages"] if m.get("tool_calls"))
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"a": 1, "b": 2}, {"a": 10, "b": 20}]
    assert len({c["id"] for c in assistant["tool_calls"]}) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_reasoning_in_think_tags_never_reaches_the_answer(kind: str, stream: bool) -> None:
    with fake_backend(kind, lambda m, t: Turn("It is 42."), quirks={"think"}) as (fake, base_url):
        async with running_hub(hub_config(kind, base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "answer?", stream=stream)
    assert answer == "It is 42."
    assert "<tool_call>" in REASONING and len(fake.requests) == 1  # a tag inside reasoning is no call


async def test_a_json_code_block_that_is_no_tool_call_stays_in_the_answer() -> None:
    text = 'Here:\n```json\n{"name": "Berlin", "population": 3}\n```\nDone.'
    with fake_backend("openai", lambda m, t: Turn(text)) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            assert await ask(hub, "json please", stream=True) == text
            assert await ask(hub, "json please", stream=False) == text
    assert len(fake.requests) == 2


# ----------------------------------------------------------------------------------- tool outcomes


async def test_a_failing_tool_gives_the_model_its_error_and_the_chat_goes_on() -> None:
    script = calls_then_reports(("sample_fail", {"message": "disk full on /var"}))
    with fake_backend("openai", script) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "try it", stream=False)
    assert answer.startswith("Results: Error: tool_error:") and "disk full on /var" in answer, answer
    assert len(fake.requests) == 2


async def test_an_unknown_tool_name_is_an_error_result_not_a_crash() -> None:
    script = calls_then_reports(("sample_teleport", {}), ("sample_add", {"a": 1, "b": 1}))
    with fake_backend("openai", script) as (_, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "go", stream=True)
    unknown, known = answer.removeprefix("Results: ").split(" | ")
    assert unknown.startswith("Error: there is no tool named 'sample_teleport'") and "sample_add" in unknown
    assert json.loads(known)["total"] == 2


async def test_arguments_that_break_the_schema_come_back_as_a_validation_error() -> None:
    script = calls_then_reports(("sample_add", {"a": "two", "b": 1}), ("sample_add", {"a": "two", "b": "one"}))
    with fake_backend("openai", script) as (_, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "go", stream=False)
    one, two = answer.removeprefix("Results: ").split(" | ")
    assert one == ("Error: invalid_arguments: arguments do not match the input schema of tool 'add': "
                   "a: 'two' is not of type 'integer'")
    assert two.startswith("Error: invalid_arguments:") and two.endswith(
        "\n- a: 'two' is not of type 'integer'\n- b: 'one' is not of type 'integer'")


async def test_a_large_result_is_cut_to_max_result_chars_with_a_note() -> None:
    script = calls_then_reports(("sample_echo", {"text": "x" * 5000}))
    with fake_backend("openai", script) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url, max_result_chars=1000), api_keys=(KEY,)) as hub:
            await ask(hub, "echo", stream=False)
    (shown,) = tool_messages(fake.requests[1])
    full = json.dumps({"result": "x" * 5000})  # the echo tool's structured result, as the hub returns it
    assert shown == full[:1000] + f"\n[mcphub: result cut to 1000 of {len(full)} characters]"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_at_max_steps_the_model_is_asked_once_more_without_tools(stream: bool) -> None:
    with fake_backend("openai", counts_forever) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url, max_steps=3), api_keys=(KEY,)) as hub:
            answer = await ask(hub, "count", stream=stream)
            response = await hub.client.post("/v1/chat/completions", headers=AUTH, json={
                "model": "fake-model", "messages": [{"role": "user", "content": "count"}]})
    assert answer == "Stopped at 3."
    assert [bool(r.get("tools")) for r in fake.requests[:4]] == [True, True, True, False]
    assert "limit" in fake.requests[3]["messages"][-1]["content"]
    trace = response.json()["mcphub"]
    assert trace["stop_reason"] == "max_steps" and trace["model_requests"] == 4
    assert [c["arguments"] for c in trace["tool_calls"]] == [{"a": 0, "b": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1}]


# ------------------------------------------------------------------------------------ auth, scopes


async def test_a_scoped_key_cannot_make_the_model_call_tools_outside_its_scope() -> None:
    config = {
        "servers": {"sample": sample_server()},
        "auth": {"api_keys": [{"name": "echo-only", "key": "echo-key", "servers": ["sample"], "tools": ["echo"]}]},
        "runner": {"backend": "openai", "base_url": "", "model": "fake-model"},
    }
    script = calls_then_reports(("sample_add", {"a": 1, "b": 2}), ("sample_echo", {"text": "hi"}))
    with fake_backend("openai", script) as (fake, base_url):
        config["runner"]["base_url"] = base_url
        async with running_hub(config) as hub:
            answer = await ask(hub, "go", stream=False, key="echo-key")
            metrics = (await hub.client.get("/metrics")).text
    assert offered(fake.requests[0]["tools"]) == ["sample_echo"]
    denied, allowed = answer.removeprefix("Results: ").split(" | ")
    assert denied.startswith("Error: there is no tool named 'sample_add'")
    assert json.loads(allowed) == {"result": "hi"}
    assert 'tool="echo"' in metrics and 'tool="add"' not in metrics  # add was never invoked


async def test_v1_routes_need_a_credential_when_one_is_configured() -> None:
    with fake_backend("openai", chained_adds) as (fake, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
            assert_error(await hub.client.post("/v1/chat/completions", json=chat), 401, "unauthorized")
            assert_error(await hub.client.post("/v1/chat/completions", json={**chat, "stream": True},
                                               headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
            assert_error(await hub.client.get("/v1/models"), 401, "unauthorized")
            async with client_for(hub) as client:
                models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert fake.requests == []


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions"), ("GET", "/v1/models")])
async def test_without_a_runner_section_v1_is_a_404_naming_runner(method: str, path: str) -> None:
    async with running_hub({"servers": {"sample": sample_server()}}) as hub:
        response = await hub.client.request(method, path, json={"model": "m", "messages": []})
    assert_error(response, 404, "not_found")
    assert response.json()["error"]["message"] == (
        f"no model runner here: {path} needs a runner: section in the hub's config (`runner: {{}}` alone uses "
        'Ollama at 127.0.0.1:11434; see README, section "runner")')


async def test_a_reload_that_adds_a_runner_serves_v1_without_a_restart() -> None:
    async with running_hub({"servers": {"sample": sample_server()}}, api_keys=(KEY,)) as hub:
        assert_error(await hub.client.get("/v1/models", headers=AUTH), 404, "not_found")
        hub.app.state.invoker.reconfigure(config_of(hub_config("openai", "http://127.0.0.1:9/v1")))
        response = await hub.client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()["data"]] == ["fake-model"]


async def test_without_a_runner_a_server_named_v1_keeps_its_tools() -> None:
    async with running_hub({"servers": {"v1": sample_server()}}) as hub:
        response = await hub.client.post("/v1/add", json={"a": 1, "b": 2})
    assert response.status_code == 200, response.text


async def test_a_request_without_messages_is_a_422() -> None:
    async with running_hub(hub_config("openai", "http://127.0.0.1:9/v1"), api_keys=(KEY,)) as hub:
        response = await hub.client.post("/v1/chat/completions", headers=AUTH, json={"model": "m"})
        error = assert_error(response, 422, "invalid_arguments")
    assert error["errors"][0]["loc"] == ["body", "messages"]


# ---------------------------------------------------------------------------------- backend trouble


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_a_backend_that_is_down_is_a_502(kind: str, stream: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}" + ("/v1" if kind == "openai" else "")
    async with hub_running(hub_config(kind, url), api_keys=(KEY,)) as hub:  # the network: nothing listens there
        with anyio.fail_after(CHAT_TIMEOUT):
            response = await hub.client.post("/v1/chat/completions", headers=AUTH, json={
                "model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    error = assert_error(response, 502, "bad_gateway")
    assert "unreachable" in error["message"] and url in error["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_a_backend_that_does_not_answer_in_time_is_a_504(kind: str, stream: bool) -> None:
    with fake_backend(kind, chained_adds, quirks={"hang"}) as (fake, _), serve_in_thread(BACKEND) as url:
        base_url = url + "/v1" if kind == "openai" else url  # over a socket: the read timeout is the network's
        async with hub_running(hub_config(kind, base_url, timeout=0.5), api_keys=(KEY,)) as hub:
            with anyio.fail_after(CHAT_TIMEOUT):
                response = await hub.client.post("/v1/chat/completions", headers=AUTH, json={
                    "model": "fake-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 504, "timeout")
    assert len(fake.requests) == 1


class _SeesHangUps:
    """ASGI wrapper noting (across threads) that a client of the wrapped app hung up mid-request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hung_up = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watched() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.hung_up.set()
            return message

        await self.app(scope, watched, send)


async def _until(condition: Any, what: str) -> None:
    with anyio.move_on_after(HANG_UP_TIMEOUT):
        while not condition():
            await anyio.sleep(0.01)
        return
    pytest.fail(f"waited {HANG_UP_TIMEOUT} s for: {what}")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_client_hanging_up_cancels_the_chat_and_its_backend_request(stream: bool) -> None:
    backend = _SeesHangUps(BACKEND)
    with fake_backend("openai", chained_adds, quirks={"hang"}) as (fake, _), serve_in_thread(backend) as url:
        async with hub_running(hub_config("openai", url + "/v1", timeout=60), api_keys=(KEY,), listen=True) as hub:
            body = json.dumps({"model": "fake-model", "stream": stream,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            host, port = hub.url.removeprefix("http://").split(":")
            async with await anyio.connect_tcp(host, int(port)) as client:
                await client.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\n"
                                  b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await _until(lambda: fake.requests, "the backend has the request")
            # the client hung up: the hub must drop the backend request (it would wait 60 s otherwise)
            await _until(backend.hung_up.is_set, "the backend sees the hub hang up")


async def test_a_backend_error_answer_is_a_502_quoting_it() -> None:
    with fake_backend("openai", chained_adds) as (_, base_url):
        async with running_hub(hub_config("openai", base_url), api_keys=(KEY,)) as hub:
            bad_history = [{"role": "tool", "tool_call_id": "nope", "content": "x"},
                           {"role": "user", "content": "hi"}]
            response = await hub.client.post("/v1/chat/completions", headers=AUTH,
                                             json={"model": "fake-model", "messages": bad_history})
    error = assert_error(response, 502, "bad_gateway")
    assert "answered 400" in error["message"] and "must be a response to a preceding tool call" in error["message"]
