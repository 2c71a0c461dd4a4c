"""Resources, resource templates and prompts of every upstream through the hub (the MCP face in both
protocol generations, and the HTTP face's GET routes), and a server's own requests to its client
(elicitation, sampling) during a call: relayed to the MCP session client that made the call when it
declared them, declined otherwise, the tool's answer reaching the caller either way.

The hub listens on 127.0.0.1 (uvicorn); the sample servers run in-process, `sample` over a 2025 session
(`mode: legacy`, the only kind of connection on which a server can ask its client anything) and
`second` over 2026-07-28. server-everything (npm, TypeScript SDK) runs as a real stdio child."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext
from mcp.server import Server
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ListPromptsResult,
    ListResourcesResult,
    ListToolsResult,
    PaginatedRequestParams,
    Prompt,
    Resource,
    TextContent,
    TextResourceContents,
)
from openapi_spec_validator import validate

from mcphub import resources
from mcphub.backchannel import ServerRequests
from mcphub.resources import RESOURCE_NOT_FOUND
from tests.hub import RunningHub, assert_error, module_server, running_hub, running_instances, sample_server
from tests.hub import mcp_client as hub_mcp_client
from tests.test_transports import Upstream, remote

pytestmark = pytest.mark.anyio

FULL_KEY = "mcp-res-full-key-0123456789"
NARROW_KEY = "mcp-res-narrow-key-0123456789"  # sample's echo and add only: no resources, no prompts
SECOND_KEY = "mcp-res-second-key-0123456789"  # every tool of `second`, nothing of `sample`
MODES = ["auto", "legacy"]
WAIT = 10.0  # seconds for a condition to come true
EVERYTHING = Path(__file__).resolve().parent.parent / ".tp/npm/node_modules/.bin/mcp-server-everything"
TS_SDK = Path(__file__).resolve().parent.parent / ".tp/npm/node_modules/@modelcontextprotocol/sdk"
TS_CLIENT = Path(__file__).resolve().parent / "ts/resources_client.mjs"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def config() -> dict[str, Any]:
    return {
        "auth": {"api_keys": [
            {"name": "full", "key": FULL_KEY},
            {"name": "narrow", "key": NARROW_KEY, "servers": ["sample"], "tools": ["echo", "add"]},
            {"name": "second-only", "key": SECOND_KEY, "servers": ["second"]},
        ]},
        "servers": {"sample": sample_server(mode="legacy"), "second": sample_server()},
    }


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[RunningHub]:
    async with running_hub(config(), listen=True) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def mcp_client(url: str, key: str | None = FULL_KEY, mode: str = "auto",
               **options: Any) -> AbstractAsyncContextManager[Client]:
    return hub_mcp_client(url, key, mode, **options)  # (with this module's full key by default)


def dumped(items: Any) -> list[dict[str, Any]]:
    return [i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in items]


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


def only_text(contents: Any) -> str:
    (content,) = contents
    assert isinstance(content, TextResourceContents)
    return content.text


async def answer_name(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    assert params.message == "What is your name?"
    return ElicitResult(action="accept", content={"name": "Ann"})


async def answer_model(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
    (message,) = params.messages
    assert isinstance(message.content, TextContent)
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"re: {message.content.text}"),
                               model="fake")


ANSWERING = {"elicitation_callback": answer_name, "sampling_callback": answer_model}


# ------------------------------------------------------------------------------ one server's own


@pytest.mark.parametrize("mode", MODES)
async def test_one_server_lists_reads_and_gets_as_the_server_gives_them(hub: RunningHub, mode: str):
    handle = hub.supervisor.servers["sample"]
    async with mcp_client(f"{hub.url}/sample/mcp", mode=mode) as client:
        assert dumped((await client.list_resources()).resources) == dumped(await handle.list_resources())
        assert [r.uri for r in (await client.list_resources()).resources] == ["memo://one"]
        templates = (await client.list_resource_templates()).resource_templates
        assert dumped(templates) == dumped(await handle.list_resource_templates())
        assert [t.uri_template for t in templates] == ["memo://notes/{name}"]
        assert only_text((await client.read_resource("memo://one")).contents) == "memo one"
        read = await client.read_resource("memo://notes/abc")
        assert read.contents[0].uri == "memo://notes/abc" and only_text(read.contents) == "note abc"
        prompts = (await client.list_prompts()).prompts
        assert dumped(prompts) == dumped(await handle.list_prompts())
        assert [(a.name, a.required) for a in prompts[0].arguments or []] == [("who", True), ("style", False)]
        got = await client.get_prompt("greet", {"who": "Bo", "style": "formal"})
        assert got.description == "Greet someone."
        greeting = TextContent(type="text", text="Dear Bo, greetings.")
        assert [(m.role, m.content) for m in got.messages] == [("user", greeting)]


# ---------------------------------------------------------------------------- all servers at once


@pytest.mark.parametrize("mode", MODES)
async def test_all_servers_at_once_name_prompts_and_uris_per_server(hub: RunningHub, mode: str):
    async with mcp_client(f"{hub.url}/mcp", mode=mode) as client:
        listed = (await client.list_resources()).resources
        assert [r.uri for r in listed] == ["mcphub://sample/memo://one", "mcphub://second/memo://one"]
        assert {r.name for r in listed} == {"one"} and {r.description for r in listed} == {"The first memo."}
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["mcphub://sample/memo://notes/{name}",
                                                       "mcphub://second/memo://notes/{name}"]
        read = await client.read_resource("mcphub://second/memo://notes/x y")  # what the template expands to
        assert read.contents[0].uri == "mcphub://second/memo://notes/x y" and only_text(read.contents) == "note x y"
        assert only_text((await client.read_resource(listed[0].uri)).contents) == "memo one"
        assert [p.name for p in (await client.list_prompts()).prompts] == ["sample_greet", "second_greet"]
        got = await client.get_prompt("second_greet", {"who": "Cy"})
        assert got.messages[0].content == TextContent(type="text", text="Hello, Cy!")


def test_prompt_names_resolve_to_the_longest_server_name_that_prefixes_them():
    assert resources.split_prompt("a_b_greet", ["a", "a_b"]) == ("a_b", "greet")
    assert resources.split_prompt("a_x_greet", ["a", "a_b"]) == ("a", "x_greet")
    with pytest.raises(MCPError) as caught:
        resources.split_prompt("zz_greet", ["a"])
    assert caught.value.code == INVALID_PARAMS and "zz_greet" in caught.value.message
    assert resources.split_uri(resources.combined_uri("s", "file:///a%2Fb")) == ("s", "file:///a%2Fb")
    for bad in ("memo://one", "mcphub://sample", "mcphub:///memo://one", "mcphub://sample/"):
        with pytest.raises(MCPError) as caught:
            resources.split_uri(bad)
        assert caught.value.code == RESOURCE_NOT_FOUND, bad


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path,uri,prompt", [
    ("/sample/mcp", "memo://nope", "nope"),
    ("/mcp", "mcphub://sample/memo://nope", "sample_nope"),
])
async def test_an_unknown_resource_or_prompt_is_the_json_rpc_error_a_client_expects(
        hub: RunningHub, mode: str, path: str, uri: str, prompt: str):
    async with mcp_client(f"{hub.url}{path}", mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
        # the server's own answer, verbatim (the Python SDK answers -32602; the spec's code is -32002)
        assert caught.value.code == INVALID_PARAMS and caught.value.message == "Unknown resource: memo://nope"
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(prompt, {})
        assert caught.value.code == INVALID_PARAMS
        assert caught.value.message == "server 'sample' has no prompt 'nope' (prompts: greet)"
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(prompt.replace("nope", "greet"), {})
        assert caught.value.code == INVALID_PARAMS
        assert caught.value.message == "prompt 'greet' of server 'sample' needs the argument 'who'"


@pytest.mark.parametrize("mode", MODES)
async def test_on_the_combined_endpoint_a_uri_of_no_server_is_resource_not_found(hub: RunningHub, mode: str):
    async with mcp_client(f"{hub.url}/mcp", mode=mode) as client:
        for uri, says in (("memo://one", "are named mcphub://{server}/{uri}"),
                          ("mcphub://nosuch/memo://one", "no server 'nosuch'")):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            assert caught.value.code == RESOURCE_NOT_FOUND and says in caught.value.message, caught.value.message
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("nosuch_greet", {"who": "x"})
        assert caught.value.code == INVALID_PARAMS and "Unknown prompt: nosuch_greet" in caught.value.message


# ------------------------------------------------------------------------------- access control


@pytest.mark.parametrize("mode", MODES)
async def test_a_key_sees_resources_and_prompts_only_of_servers_it_may_use(hub: RunningHub, mode: str):
    async with mcp_client(f"{hub.url}/mcp", key=SECOND_KEY, mode=mode) as client:
        assert [r.uri for r in (await client.list_resources()).resources] == ["mcphub://second/memo://one"]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["second_greet"]
        with pytest.raises(MCPError) as caught:
            await client.read_resource("mcphub://sample/memo://one")
        assert caught.value.code == RESOURCE_NOT_FOUND
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("sample_greet", {"who": "x"})
        assert caught.value.code == INVALID_PARAMS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/mcp", "/sample/mcp"])
async def test_a_key_limited_to_some_tools_sees_no_resources_or_prompts(hub: RunningHub, mode: str, path: str):
    prefix = "mcphub://sample/" if path == "/mcp" else ""
    async with mcp_client(f"{hub.url}{path}", key=NARROW_KEY, mode=mode) as client:
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        if path == "/sample/mcp":
            with pytest.raises(MCPError) as caught:
                await client.read_resource(f"{prefix}memo://one")
            assert caught.value.code == RESOURCE_NOT_FOUND
            assert caught.value.message == ("credential 'narrow' is limited to some tools: it may not use resources "
                                            "or prompts of server 'sample'")
            with pytest.raises(MCPError) as caught:
                await client.get_prompt("greet", {"who": "x"})
            assert caught.value.code == INVALID_PARAMS and "limited to some tools" in caught.value.message


async def test_reads_are_audited_and_counted_with_the_method_as_the_tool(hub: RunningHub,
                                                                         caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="mcphub.access")
    async with mcp_client(f"{hub.url}/sample/mcp") as client:
        await client.read_resource("memo://one")
        await client.get_prompt("greet", {"who": "x"})
    lines = [r.getMessage() for r in caplog.records if r.name == "mcphub.access"]
    assert any(line.startswith("key:full sample/resources/read 200") for line in lines), lines
    assert any(line.startswith("key:full sample/prompts/get 200") for line in lines), lines
    assert not any("memo://one" in line for line in lines)  # the URI only with hub.log_arguments
    metrics = (await hub.client.get("/metrics")).text
    assert 'mcphub_tool_calls_total{face="mcp",server="sample",status="200",tool="resources/read"}' in metrics
    assert 'mcphub_tool_calls_total{face="mcp",server="sample",status="200",tool="prompts/get"}' in metrics


# ------------------------------------------------------------------------------------ HTTP face


async def test_http_routes_list_read_and_get_in_mcp_wire_form(hub: RunningHub):
    listed = await hub.client.get("/sample/resources", headers=bearer(FULL_KEY))
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "resources": [{"name": "one", "uri": "memo://one", "description": "The first memo.", "mimeType": "text/plain"}],
        "resourceTemplates": [{"name": "note", "uriTemplate": "memo://notes/{name}", "description": "A note by name.",
                               "mimeType": "text/plain"}],
    }
    read = await hub.client.get("/sample/resources/read", params={"uri": "memo://notes/a b"}, headers=bearer(FULL_KEY))
    assert read.status_code == 200, read.text
    assert read.json() == {"contents": [{"uri": "memo://notes/a b", "mimeType": "text/plain", "text": "note a b"}]}
    prompts = await hub.client.get("/second/prompts", headers=bearer(SECOND_KEY))
    assert prompts.status_code == 200, prompts.text
    assert prompts.json() == {"prompts": [{"name": "greet", "description": "Greet someone.", "arguments": [
        {"name": "who", "required": True}, {"name": "style", "required": False}]}]}
    got = await hub.client.get("/second/prompts/greet", params={"who": "Di", "style": "formal"},
                               headers=bearer(SECOND_KEY))
    assert got.status_code == 200, got.text
    assert got.json() == {"description": "Greet someone.",
                          "messages": [{"role": "user", "content": {"type": "text", "text": "Dear Di, greetings."}}]}


async def test_http_routes_answer_failures_in_the_one_error_shape(hub: RunningHub):
    auth = bearer(FULL_KEY)
    error = assert_error(await hub.client.get("/sample/resources/read", params={"uri": "memo://nope"}, headers=auth),
                         404, "not_found")
    assert error["message"] == "server 'sample' has no resource 'memo://nope' (Unknown resource: memo://nope)"
    error = assert_error(await hub.client.get("/sample/prompts/nope", headers=auth), 404, "not_found")
    assert error["message"] == "server 'sample' has no prompt 'nope' (prompts: greet)"
    error = assert_error(await hub.client.get("/sample/prompts/greet", headers=auth), 422, "invalid_arguments")
    assert error["message"] == "prompt 'greet' of server 'sample' needs the argument 'who'"
    assert error["errors"] == [{"loc": ["query", "who"], "msg": "required argument missing"}]
    error = assert_error(await hub.client.get("/sample/resources/read", headers=auth), 422, "invalid_arguments")
    assert "query parameter 'uri' is required" in error["message"]
    error = assert_error(await hub.client.get("/nosuch/prompts", headers=auth), 404, "not_found")
    assert "no server named 'nosuch'" in error["message"]
    error = assert_error(await hub.client.get("/sample/prompts", headers=bearer(SECOND_KEY)), 403, "forbidden")
    assert error["message"] == "credential 'second-only' may not use server 'sample'"
    error = assert_error(await hub.client.get("/sample/resources", headers=bearer(NARROW_KEY)), 403, "forbidden")
    assert "limited to some tools" in error["message"]
    assert_error(await hub.client.get("/sample/resources"), 401, "unauthorized")
    assert_error(await hub.client.get("/sample/prompts/greet", params={"who": "x"}), 401, "unauthorized")


async def test_the_server_spec_documents_the_routes_for_what_the_server_declares(hub: RunningHub):
    spec = (await hub.client.get("/sample/openapi.json", headers=bearer(FULL_KEY))).json()
    validate(spec)
    added = {path: {m: op["operationId"] for m, op in item.items()} for path, item in spec["paths"].items()
             if path.startswith(("/resources", "/prompts"))}
    assert added == {"/resources": {"get": "list_resources"}, "/resources/read": {"get": "read_resource"},
                     "/prompts": {"get": "list_prompts"}, "/prompts/{name}": {"get": "get_prompt"}}
    read = spec["paths"]["/resources/read"]["get"]
    assert read["parameters"][0]["name"] == "uri" and read["parameters"][0]["required"] is True
    assert "404" in read["responses"] and "403" in read["responses"]
    narrow = (await hub.client.get("/sample/openapi.json", headers=bearer(NARROW_KEY))).json()
    assert list(narrow["paths"]) == ["/echo", "/add"]  # a key limited to tools: tools only
    combined = (await hub.client.get("/openapi.json", headers=bearer(FULL_KEY))).json()
    assert not any("/resources" in path or "/prompts" in path for path in combined["paths"])


async def test_a_server_with_no_resources_or_prompts_lists_none_and_its_spec_shows_no_routes_for_them():
    """The Python SDK's servers declare both capabilities whether or not they have any; a client that
    makes a tool of every operation (Open WebUI) must not get four empty ones per server."""
    async with running_hub({"servers": {"procinfo": module_server("procinfo")}}) as hub:
        spec = (await hub.client.get("/procinfo/openapi.json")).json()
        assert not any(path.startswith(("/resources", "/prompts")) for path in spec["paths"]), list(spec["paths"])
        listed = await hub.client.get("/procinfo/resources")
        assert listed.status_code == 200 and listed.json() == {"resources": [], "resourceTemplates": []}
        prompts = await hub.client.get("/procinfo/prompts")
        assert prompts.status_code == 200 and prompts.json() == {"prompts": []}


async def test_a_get_on_a_tool_path_still_says_tools_are_called_with_post(hub: RunningHub):
    response = await hub.client.get("/sample/echo", headers=bearer(FULL_KEY))
    assert_error(response, 405, "method_not_allowed")
    answer = await hub.client.post("/sample/echo", json={"text": "still a tool"}, headers=bearer(FULL_KEY))
    assert answer.status_code == 200 and answer.json() == {"result": "still a tool"}


# ------------------------------------------------------------------ a server's requests to its client


async def test_elicitation_and_sampling_are_relayed_to_a_session_client_that_declared_them(hub: RunningHub):
    async with mcp_client(f"{hub.url}/sample/mcp", mode="legacy", **ANSWERING) as client:
        assert text_of(await client.call_tool("ask_name", {})) == "hello Ann"
        assert text_of(await client.call_tool("ask_model", {"prompt": "why?"})) == "model says: re: why?"
    async with mcp_client(f"{hub.url}/mcp", mode="legacy", **ANSWERING) as client:  # the combined endpoint too
        assert text_of(await client.call_tool("sample_ask_name", {})) == "hello Ann"


@pytest.mark.parametrize("mode,answering", [("legacy", False), ("auto", True), ("auto", False)])
async def test_elicitation_and_sampling_are_declined_for_a_client_that_cannot_answer(
        hub: RunningHub, mode: str, answering: bool):
    """A session client that declared neither, or a 2026-07-28 client (it has no back-channel)."""
    async with mcp_client(f"{hub.url}/sample/mcp", mode=mode, **(ANSWERING if answering else {})) as client:
        assert text_of(await client.call_tool("ask_name", {})) == "elicitation decline"
        answer = text_of(await client.call_tool("ask_model", {"prompt": "why?"}))
        assert answer.startswith("sampling refused: Sampling declined: the hub's caller cannot answer it"), answer


async def test_elicitation_is_declined_for_an_http_caller(hub: RunningHub):
    response = await hub.client.post("/sample/ask_name", json={}, headers=bearer(FULL_KEY))
    assert response.status_code == 200 and response.json() == {"result": "elicitation decline"}


async def test_elicitation_is_declined_when_another_call_shares_the_connection(hub: RunningHub):
    """Nothing in a server's request names the call it belongs to: with two calls in flight on one
    connection the hub cannot tell whose it is, and declines rather than ask the wrong client."""
    replica = hub.supervisor.servers["sample"].replicas[0]

    async def sleep() -> None:
        await hub.client.post("/sample/sleep", json={"seconds": 30}, headers=bearer(FULL_KEY))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleep)
        with anyio.fail_after(WAIT):
            while replica.in_flight == 0:
                await anyio.sleep(0.01)
        async with mcp_client(f"{hub.url}/sample/mcp", mode="legacy", **ANSWERING) as client:
            assert text_of(await client.call_tool("ask_name", {})) == "elicitation decline"
        tg.cancel_scope.cancel()
    with anyio.fail_after(WAIT):  # the hub notices the hang-up and cancels the sleep upstream
        while replica.in_flight:
            await anyio.sleep(0.01)
    async with mcp_client(f"{hub.url}/sample/mcp", mode="legacy", **ANSWERING) as client:  # alone again: relayed
        assert text_of(await client.call_tool("ask_name", {})) == "hello Ann"


async def test_a_2026_server_asks_in_its_answer_and_the_hub_relays_it_to_that_call_s_client(hub: RunningHub):
    """`second` speaks 2026-07-28 to the hub: a resolver's elicitation comes back as the call's own
    answer (InputRequiredResult), tied to its call, so it is relayed even with other calls in flight."""
    replica = hub.supervisor.servers["second"].replicas[0]

    async def sleep() -> None:
        await hub.client.post("/second/sleep", json={"seconds": 30}, headers=bearer(FULL_KEY))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleep)
        with anyio.fail_after(WAIT):
            while replica.in_flight == 0:
                await anyio.sleep(0.01)
        async with mcp_client(f"{hub.url}/second/mcp", mode="legacy", **ANSWERING) as client:
            assert text_of(await client.call_tool("ask_name_resolved", {})) == "hello Ann"
        tg.cancel_scope.cancel()
    async with mcp_client(f"{hub.url}/mcp", mode="auto", **ANSWERING) as client:  # no back-channel: declined
        assert text_of(await client.call_tool("second_ask_name_resolved", {})) == "elicitation decline"
    response = await hub.client.post("/second/ask_name_resolved", json={}, headers=bearer(FULL_KEY))
    assert response.status_code == 200 and response.json() == {"result": "elicitation decline"}


async def test_a_server_asking_outside_any_call_is_declined():
    params = ElicitRequestFormParams(message="?", requested_schema={"type": "object", "properties": {}})
    answer = await ServerRequests("lonely").elicitation(None, params)  # type: ignore[arg-type]
    assert answer == ElicitResult(action="decline")


# ---------------------------------------------------------------------- down, and rate limited


async def test_a_server_that_is_down_is_503_on_http_an_mcp_error_on_its_endpoint_and_left_out_of_mcp():
    raw = {"servers": {"ok": sample_server(),
                       "down": sample_server(env={"SAMPLE_START": "fail"}, restart={"initial_delay": 30})}}
    async with running_hub(raw, listen=True) as hub:
        response = await hub.client.get("/down/resources")
        error = assert_error(response, 503, "server_unavailable")
        assert error["message"].startswith("MCP server 'down' is not available") and response.headers["Retry-After"]
        async with mcp_client(f"{hub.url}/down/mcp", key=None) as client:
            with pytest.raises(MCPError) as caught:
                await client.list_prompts()
            assert caught.value.code == INTERNAL_ERROR and "MCP server 'down' is not available" in caught.value.message
        async with mcp_client(f"{hub.url}/mcp", key=None) as client:
            assert [p.name for p in (await client.list_prompts()).prompts] == ["ok_greet"]


async def test_reads_and_gets_count_against_the_key_s_rate_limit_and_lists_do_not():
    raw = {"auth": {"api_keys": [{"name": "slow", "key": FULL_KEY, "rate_limit": {"requests": 2, "per": 3600}}]},
           "servers": {"sample": sample_server()}}
    async with running_hub(raw) as hub:
        for _ in range(3):
            assert (await hub.client.get("/sample/prompts", headers=bearer(FULL_KEY))).status_code == 200
        for path in ("/sample/resources/read?uri=memo://one", "/sample/prompts/greet?who=x"):
            assert (await hub.client.get(path, headers=bearer(FULL_KEY))).status_code == 200
        response = await hub.client.get("/sample/resources/read?uri=memo://one", headers=bearer(FULL_KEY))
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1


async def test_a_session_the_restarted_server_no_longer_knows_is_503_then_replaced(tmp_path: Path):
    """Real processes on purpose: an HTTP upstream (2025 sessions) killed and started again on its port
    answers the hub's next request "Session not found"; for a list that is a 503 (not the server's
    own error), and the hub reconnects."""
    upstream = Upstream("streamable-http", tmp_path / "upstream.log")
    try:
        await upstream.start()
        async with running_hub({"servers": {"up": remote(upstream, mode="legacy")}}) as hub:
            assert (await hub.client.get("/up/prompts")).json() == {"prompts": []}
            upstream.kill()
            await upstream.start()  # back on the same port before the hub has noticed anything
            response = await hub.client.get("/up/prompts")
            if response.status_code != 200:  # unless the SDK's GET stream noticed the new process first
                assert_error(response, 503, "server_unavailable")
            with anyio.fail_after(WAIT * 2):
                while (await hub.client.get("/up/prompts")).status_code != 200:
                    await anyio.sleep(0.1)
    finally:
        upstream.kill()


# ------------------------------------------------------------------------------ mounted servers


async def test_a_mounted_server_s_resources_and_prompts_are_relayed_from_its_hub_errors_unchanged():
    async with running_hub({"servers": {"beta": sample_server()}}, listen=True) as other:
        raw = {"hub": {"mount": ["b"]}, "servers": {"alpha": sample_server()}, "remotes": {"b": {"url": other.url}}}
        async with running_instances(raw) as hubs:
            hub = hubs["hub"]
            with anyio.fail_after(WAIT):
                while "beta" not in (await hub.client.get("/readyz")).json()["servers"]:
                    await anyio.sleep(0.05)
            for path in ("/beta/resources", "/beta/prompts", "/beta/resources/read?uri=memo://notes/q",
                         "/beta/prompts/greet?who=Ed"):
                relayed, direct = await hub.client.get(path), await other.client.get(path)
                assert relayed.status_code == 200 and relayed.json() == direct.json(), (path, relayed.text)
            missing = await hub.client.get("/beta/resources/read", params={"uri": "memo://nope"})
            assert missing.status_code == 404
            assert missing.json() == (await other.client.get("/beta/resources/read?uri=memo://nope")).json()
            error = assert_error(await hub.client.get("/beta/prompts/greet"), 422, "invalid_arguments")
            assert error["message"] == "prompt 'greet' of server 'beta' needs the argument 'who'"
            spec = (await hub.client.get("/beta/openapi.json")).json()
            assert {"/resources", "/resources/read", "/prompts", "/prompts/{name}"} <= set(spec["paths"])
            async with mcp_client(f"{hub.url}/mcp", key=None) as client:
                uris = [r.uri for r in (await client.list_resources()).resources]
                assert uris == ["mcphub://alpha/memo://one", "mcphub://beta/memo://one"]
                read = await client.read_resource("mcphub://beta/memo://notes/q")
                assert read.contents[0].uri == "mcphub://beta/memo://notes/q" and only_text(read.contents) == "note q"
                got = await client.get_prompt("beta_greet", {"who": "Ed"})
                assert got.messages[0].content == TextContent(type="text", text="Hello, Ed!")
                with pytest.raises(MCPError) as caught:
                    await client.read_resource("mcphub://beta/memo://nope")
                assert caught.value.code == RESOURCE_NOT_FOUND and "memo://nope" in caught.value.message


# ------------------------------------------------------------------------- a server without them


async def test_a_server_that_declares_neither_has_empty_lists():
    async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=[])

    async with Client(Server("bare", on_list_tools=list_tools)) as client:
        assert resources.declared(client) == frozenset()
        assert await resources.list_resources(client) == []
        assert await resources.list_resource_templates(client) == []
        assert await resources.list_prompts(client) == []


async def test_every_page_of_a_list_is_collected_and_a_looping_cursor_is_bounded():
    async def list_resources(ctx: Any, params: PaginatedRequestParams | None) -> ListResourcesResult:
        page = int(params.cursor) if params and params.cursor else 0
        following = str(page + 1) if page < 2 else None
        return ListResourcesResult(resources=[Resource(name=f"r{page}", uri=f"memo://{page}")], next_cursor=following)

    async def list_prompts(ctx: Any, params: PaginatedRequestParams | None) -> ListPromptsResult:
        return ListPromptsResult(prompts=[Prompt(name="again")], next_cursor="again")  # never ends

    async with Client(Server("paged", on_list_resources=list_resources, on_list_prompts=list_prompts)) as client:
        assert [r.uri for r in await resources.list_resources(client)] == ["memo://0", "memo://1", "memo://2"]
        assert len(await resources.list_prompts(client)) == resources.MAX_LIST_PAGES


# ------------------------------------------------------------------------ the TypeScript client


@pytest.mark.parametrize("path,tool", [("/sample/mcp", "ask_name"), ("/mcp", "sample_ask_name")])
async def test_the_typescript_sdk_client_lists_reads_gets_and_answers_an_elicitation(
        hub: RunningHub, path: str, tool: str):
    if not TS_SDK.exists() or shutil.which("node") is None:
        pytest.skip("node or @modelcontextprotocol/sdk is not installed; run .ci/install-thirdparty")
    with anyio.fail_after(60):
        done = await anyio.run_process(["node", str(TS_CLIENT), f"{hub.url}{path}", FULL_KEY, tool], check=False,
                                       env={**os.environ, "MCP_SDK": str(TS_SDK)})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen = json.loads(done.stdout)
    prefix, name = ("", "greet") if path != "/mcp" else ("mcphub://sample/", "sample_greet")
    assert seen["resources"][0] == f"{prefix}memo://one" and seen["read"] == ["memo one"]
    assert f"{prefix}memo://notes/{{name}}" in seen["templates"]
    assert seen["prompts"][0] == name and seen["got"] == ["Hello, Tess!"]
    assert seen["unknown"] == INVALID_PARAMS  # the sample server's own answer for an unknown resource
    assert seen["elicited"] == ["hello Tess"]


# --------------------------------------------------------------------------------- server-everything


@pytest.fixture(scope="module")
async def everything() -> AsyncIterator[RunningHub]:
    if not EVERYTHING.exists():
        pytest.skip(f"server-everything is not installed ({EVERYTHING}); run .ci/install-thirdparty")
    raw = {"servers": {"everything": {"transport": "stdio", "command": str(EVERYTHING), "args": ["stdio"]}}}
    async with running_hub(raw, listen=True) as running:
        yield running


@pytest.mark.parametrize("mode", MODES)
async def test_server_everything_resources_and_prompts_through_both_endpoints(everything: RunningHub, mode: str):
    async with mcp_client(f"{everything.url}/everything/mcp", key=None, mode=mode) as client:
        listed = (await client.list_resources()).resources
        assert "demo://resource/static/document/architecture.md" in [r.uri for r in listed]
        read = await client.read_resource("demo://resource/static/document/architecture.md")
        assert only_text(read.contents)
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert "demo://resource/dynamic/text/{resourceId}" in templates
        dynamic = await client.read_resource("demo://resource/dynamic/text/3")
        assert dynamic.contents[0].uri == "demo://resource/dynamic/text/3"
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"simple-prompt", "args-prompt"} <= prompts
        got = await client.get_prompt("args-prompt", {"city": "Oslo"})
        assert "Oslo" in json.dumps(got.model_dump(mode="json"))
        with pytest.raises(MCPError):
            await client.get_prompt("args-prompt", {})
    async with mcp_client(f"{everything.url}/mcp", key=None, mode=mode) as client:
        uris = [r.uri for r in (await client.list_resources()).resources]
        assert "mcphub://everything/demo://resource/static/document/architecture.md" in uris
        read = await client.read_resource("mcphub://everything/demo://resource/dynamic/text/3")
        assert read.contents[0].uri == "mcphub://everything/demo://resource/dynamic/text/3"
        got = await client.get_prompt("everything_simple-prompt", {})
        assert got.messages


async def test_server_everything_over_http_routes(everything: RunningHub):
    listed = await everything.client.get("/everything/resources")
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["resources"]) >= 1 and len(listed.json()["resourceTemplates"]) >= 1
    read = await everything.client.get("/everything/resources/read",
                                       params={"uri": "demo://resource/dynamic/text/3"})
    assert read.status_code == 200 and read.json()["contents"][0]["uri"] == "demo://resource/dynamic/text/3"
    got = await everything.client.get("/everything/prompts/args-prompt", params={"city": "Oslo"})
    assert got.status_code == 200 and "Oslo" in got.text
    error = assert_error(await everything.client.get("/everything/prompts/args-prompt"), 422, "invalid_arguments")
    assert "'city'" in error["message"]
    assert_error(await everything.client.get("/everything/prompts/no-such-prompt"), 404, "not_found")
    assert_error(await everything.client.get("/everything/resources/read", params={"uri": "demo://nope"}),
                 404, "not_found")


async def test_server_everything_elicitation_is_relayed_or_declined(everything: RunningHub):
    asked: list[ElicitRequestParams] = []

    async def accept(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params)
        return ElicitResult(action="accept", content={"color": "blue"})

    async with mcp_client(f"{everything.url}/everything/mcp", key=None, mode="legacy",
                          elicitation_callback=accept, sampling_callback=answer_model) as client:
        relayed = await client.call_tool("trigger-elicitation-request", {})
        assert len(asked) == 1 and not relayed.is_error, relayed
        sampled = await client.call_tool("trigger-sampling-request", {"prompt": "hi"})
        assert '"model": "fake"' in text_of(sampled) and "re: " in text_of(sampled), sampled
    async with mcp_client(f"{everything.url}/everything/mcp", key=None, mode="auto") as client:
        declined = await client.call_tool("trigger-elicitation-request", {})
        assert "decline" in text_of(declined).lower(), text_of(declined)
    response = await everything.client.post("/everything/trigger-elicitation-request", json={})
    assert response.status_code == 200 and "decline" in response.text.lower(), response.text
